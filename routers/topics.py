"""Topic administration."""

from __future__ import annotations

from fastapi import APIRouter, Response

from eddy.models.topics import TopicCreate, TopicDetail, TopicList, TopicPatch, TopicSummary
from eddy.routers.deps import BrokerDep, PrincipalDep, TopicPath
from eddy.routers.responses import (
    AUTH,
    INVALID,
    TOPIC_EXISTS,
    TOPIC_LIMIT,
    TOPIC_NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    UNSUPPORTED_ENCODING,
    errors,
)

router = APIRouter(prefix="/v1/topics", tags=["topics"])


@router.post(
    "",
    status_code=201,
    response_model=TopicSummary,
    responses=errors(*AUTH, TOPIC_EXISTS, TOPIC_LIMIT, UNSUPPORTED_ENCODING, INVALID, UNAVAILABLE),
)
async def create_topic(
    body: TopicCreate, broker: BrokerDep, principal: PrincipalDep
) -> TopicSummary:
    """Create a topic (409 topic_exists if it is there already)."""
    return await broker.create_topic(principal, body.name, body.partitions, body.config)


@router.get("", response_model=TopicList, responses=errors(UNAUTHORIZED))
async def list_topics(broker: BrokerDep, principal: PrincipalDep) -> TopicList:
    """List the topics the caller may read."""
    return TopicList(topics=broker.list_topics(principal))


@router.get(
    "/{topic}", response_model=TopicDetail, responses=errors(*AUTH, TOPIC_NOT_FOUND, INVALID)
)
async def describe_topic(
    topic: TopicPath, broker: BrokerDep, principal: PrincipalDep
) -> TopicDetail:
    """A topic's config and, per partition, its offsets and size."""
    return broker.describe_topic(principal, topic)


@router.patch(
    "/{topic}",
    response_model=TopicDetail,
    responses=errors(*AUTH, TOPIC_NOT_FOUND, UNSUPPORTED_ENCODING, INVALID, UNAVAILABLE),
)
async def update_topic(
    topic: TopicPath, body: TopicPatch, broker: BrokerDep, principal: PrincipalDep
) -> TopicDetail:
    """Increase the partition count and/or change config keys (partial update)."""
    return await broker.update_topic(principal, topic, body.partitions, body.config)


@router.delete(
    "/{topic}",
    status_code=204,
    responses=errors(*AUTH, TOPIC_NOT_FOUND, INVALID, UNAVAILABLE),
)
async def delete_topic(topic: TopicPath, broker: BrokerDep, principal: PrincipalDep) -> Response:
    """Delete a topic and its data; its open WebSockets are closed with 4404."""
    await broker.delete_topic(principal, topic)
    return Response(status_code=204)

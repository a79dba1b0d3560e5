"""Consumer groups over REST: list, describe, commit, reset, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response

from eddy.models.groups import CommittedOffsets, GroupDetail, GroupList, OffsetCommit, OffsetReset
from eddy.routers.deps import BrokerDep, GroupPath, PrincipalDep
from eddy.routers.responses import (
    AUTH,
    GROUP_ACTIVE,
    GROUP_NOT_FOUND,
    INVALID,
    OFFSET_OUT_OF_RANGE,
    PARTITION_NOT_FOUND,
    TOPIC_NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    UNSUPPORTED_ENCODING,
    errors,
)

router = APIRouter(prefix="/v1/groups", tags=["consumer groups"])


@router.get("", response_model=GroupList, responses=errors(UNAUTHORIZED))
async def list_groups(broker: BrokerDep, principal: PrincipalDep) -> GroupList:
    """Groups with members or committed offsets (those the caller may use)."""
    return GroupList(groups=broker.list_groups(principal))


@router.get(
    "/{group}", response_model=GroupDetail, responses=errors(*AUTH, GROUP_NOT_FOUND, INVALID)
)
async def describe_group(
    group: GroupPath, broker: BrokerDep, principal: PrincipalDep
) -> GroupDetail:
    """Members and their partitions; per partition the committed offset, high watermark, lag."""
    return broker.describe_group(principal, group)


@router.post(
    "/{group}/offsets",
    response_model=CommittedOffsets,
    responses=errors(
        *AUTH,
        TOPIC_NOT_FOUND,
        PARTITION_NOT_FOUND,
        GROUP_ACTIVE,
        OFFSET_OUT_OF_RANGE,
        UNSUPPORTED_ENCODING,
        INVALID,
        UNAVAILABLE,
    ),
)
async def commit_group_offsets(
    group: GroupPath, body: OffsetCommit, broker: BrokerDep, principal: PrincipalDep
) -> CommittedOffsets:
    """Commit "next offset to read" per partition (for workers that consume over REST).
    409 group_active while WebSocket members of the group consume that topic."""
    await broker.commit_group_offsets(principal, group, body.topic, body.offsets, body.metadata)
    return CommittedOffsets(
        group=group, topic=body.topic, offsets=body.offsets, metadata=body.metadata
    )


@router.post(
    "/{group}/reset",
    response_model=CommittedOffsets,
    responses=errors(
        *AUTH, TOPIC_NOT_FOUND, GROUP_ACTIVE, UNSUPPORTED_ENCODING, INVALID, UNAVAILABLE
    ),
)
async def reset_group(
    group: GroupPath, body: OffsetReset, broker: BrokerDep, principal: PrincipalDep
) -> CommittedOffsets:
    """Move the group's offsets on a topic to earliest, latest or a timestamp (409 while the
    group has members)."""
    to = body.to if isinstance(body.to, str) else body.to.timestamp
    offsets = await broker.reset_group(principal, group, body.topic, to)
    return CommittedOffsets(
        group=group, topic=body.topic, offsets={str(p): o for p, o in offsets.items()}
    )


@router.delete(
    "/{group}",
    status_code=204,
    responses=errors(*AUTH, GROUP_NOT_FOUND, GROUP_ACTIVE, INVALID, UNAVAILABLE),
)
async def delete_group(group: GroupPath, broker: BrokerDep, principal: PrincipalDep) -> Response:
    """Forget the group's committed offsets (409 while it has members)."""
    await broker.delete_group(principal, group)
    return Response(status_code=204)

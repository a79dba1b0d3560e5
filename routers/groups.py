"""Consumer groups over REST: list, describe, commit, reset, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from models.errors import ErrorResponse
from models.groups import CommittedOffsets, GroupDetail, GroupList, OffsetCommit, OffsetReset
from routers.deps import BrokerDep, GroupPath, PrincipalDep

router = APIRouter(prefix="/v1/groups", tags=["consumer groups"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorResponse}}
INVALID: dict[int | str, dict[str, Any]] = {422: {"model": ErrorResponse}}


@router.get("", response_model=GroupList)
async def list_groups(broker: BrokerDep, principal: PrincipalDep) -> GroupList:
    """Groups with members or committed offsets (those the caller may use)."""
    return GroupList(groups=broker.list_groups(principal))


@router.get("/{group}", response_model=GroupDetail, responses=NOT_FOUND)
async def describe_group(
    group: GroupPath, broker: BrokerDep, principal: PrincipalDep
) -> GroupDetail:
    """Members and their partitions; per partition the committed offset, high watermark, lag."""
    return broker.describe_group(principal, group)


@router.post(
    "/{group}/offsets",
    response_model=CommittedOffsets,
    responses={**NOT_FOUND, **CONFLICT, **INVALID, 416: {"model": ErrorResponse}},
)
async def commit_group_offsets(
    group: GroupPath, body: OffsetCommit, broker: BrokerDep, principal: PrincipalDep
) -> CommittedOffsets:
    """Commit "next offset to read" per partition (for workers that consume over REST).
    409 group_active while WebSocket members of the group consume that topic."""
    await broker.commit_group_offsets(principal, group, body.topic, body.offsets)
    return CommittedOffsets(group=group, topic=body.topic, offsets=body.offsets)


@router.post(
    "/{group}/reset",
    response_model=CommittedOffsets,
    responses={**NOT_FOUND, **CONFLICT, **INVALID},
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


@router.delete("/{group}", status_code=204, responses={**NOT_FOUND, **CONFLICT})
async def delete_group(group: GroupPath, broker: BrokerDep, principal: PrincipalDep) -> Response:
    """Forget the group's committed offsets (409 while it has members)."""
    await broker.delete_group(principal, group)
    return Response(status_code=204)

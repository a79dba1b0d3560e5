"""Schemas of the consumer-group endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eddy.models.records import MAX_INT64

# Kafka's offset.metadata.max.bytes default (4096), which Kafka compares with the string's
# length in characters; the Kafka listener's limit is the same.
METADATA_MAX_CHARS = 4096


class GroupSummary(BaseModel):
    group: str
    topics: list[str]
    members: int = Field(description="Connected WebSocket members")


class GroupList(BaseModel):
    groups: list[GroupSummary]


class GroupMemberInfo(BaseModel):
    member_id: str
    topic: str
    client: str = Field(description="Client address")
    joined_at: int = Field(description="ms since epoch")
    auto_commit: bool
    partitions: list[int]


class GroupOffsetInfo(BaseModel):
    topic: str
    partition: int
    committed_offset: int | None = Field(description="Next offset the group will read")
    metadata: str | None = Field(
        default=None,
        description="The committer's metadata string (Kafka's commit metadata; \"\" when it "
        "gave none); null when nothing is committed",
    )
    high_watermark: int
    lag: int | None = Field(description="high_watermark - committed_offset")
    member_id: str | None = Field(description="Member that owns the partition now")


class GroupDetail(BaseModel):
    group: str
    members: list[GroupMemberInfo]
    offsets: list[GroupOffsetInfo]


class OffsetCommit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(examples=["orders"])
    offsets: dict[str, int] = Field(
        description="Partition -> next offset to read", examples=[{"0": 42, "2": 17}]
    )
    metadata: str = Field(
        default="",
        max_length=METADATA_MAX_CHARS,
        description="Stored with each partition's offset and shown by the group's describe "
        "(Kafka's commit metadata, which Kafka clients read back with OffsetFetch)",
        examples=["worker-3"],
    )


class TimestampTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timestamp: int = Field(ge=-MAX_INT64, le=MAX_INT64, description="ms since epoch")


class OffsetReset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(examples=["orders"])
    to: Literal["earliest", "latest"] | TimestampTarget = Field(
        description='"earliest", "latest" or {"timestamp": MS}', examples=["earliest"]
    )


class CommittedOffsets(BaseModel):
    group: str
    topic: str
    offsets: dict[str, int]
    metadata: str = Field(default="", description="The metadata stored with the offsets")

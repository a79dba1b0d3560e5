"""Schemas of the topic endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TOPIC_NAME_FIELD = Field(
    min_length=1,
    max_length=249,
    pattern=r"^[a-zA-Z0-9._-]+$",
    description="1-249 characters of [a-zA-Z0-9._-], not '.' or '..' (Kafka's rule)",
    examples=["prices"],
)

CONFIG_EXAMPLE = {
    "retention.ms": 604800000,
    "retention.bytes": -1,
    "cleanup.policy": "delete",
    "max.message.bytes": 1048576,
}


class TopicCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = TOPIC_NAME_FIELD
    partitions: int | None = Field(
        default=None, ge=1, description="Partition count (default: the broker's default)"
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Kafka topic config overrides; -1 means unlimited",
        examples=[CONFIG_EXAMPLE],
    )


class TopicPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partitions: int | None = Field(default=None, ge=1, description="New count (increase only)")
    config: dict[str, Any] | None = Field(
        default=None,
        description="Config keys to change (partial update)",
        examples=[{"retention.ms": 3600000}],
    )


class PartitionInfo(BaseModel):
    partition: int
    log_start_offset: int = Field(description="First offset still stored")
    high_watermark: int = Field(description="Offset the next record will get")
    size_bytes: int = Field(description="Bytes of record data the partition holds")


SOURCES_FIELD = Field(
    description="Where each config value comes from: 'topic' (set on it) or 'default' (broker)",
    examples=[{"retention.ms": "topic", "max.message.bytes": "default"}],
)


class TopicSummary(BaseModel):
    name: str
    partitions: int
    config: dict[str, Any] = Field(examples=[CONFIG_EXAMPLE])
    config_sources: dict[str, str] = SOURCES_FIELD
    created_at: int = Field(description="ms since epoch")


class TopicList(BaseModel):
    topics: list[TopicSummary]


class TopicDetail(BaseModel):
    name: str
    config: dict[str, Any] = Field(examples=[CONFIG_EXAMPLE])
    config_sources: dict[str, str] = SOURCES_FIELD
    created_at: int = Field(description="ms since epoch")
    partitions: list[PartitionInfo]

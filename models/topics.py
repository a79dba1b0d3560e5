"""Schemas of the topic endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from eddy.models.records import MAX_INT32, MAX_INT64

TOPIC_NAME_FIELD = Field(
    min_length=1,
    max_length=249,
    pattern=r"^[a-zA-Z0-9._-]+$",
    description="1-249 characters of [a-zA-Z0-9._-], not '.' or '..' (Kafka's rule)",
    examples=["prices"],
)

MAX_PARTITIONS = 1024  # each partition is a table; keep a topic's schema a sane size

CONFIG_EXAMPLE = {
    "retention.ms": 604800000,
    "retention.bytes": -1,
    "cleanup.policy": "delete",
    "max.message.bytes": 1048576,
}

# The config keys the broker accepts and their bounds (broker/topic_rules.py checks them; a test
# holds the two together). Kafka's types: times and sizes are longs, max.message.bytes an int.
_LONG_OR_UNLIMITED = {"type": "integer", "minimum": -1, "maximum": MAX_INT64}
TOPIC_CONFIG_SCHEMA: dict[str, Any] = {
    "additionalProperties": False,
    "properties": {
        "retention.ms": {
            **_LONG_OR_UNLIMITED,
            "description": "Delete records older than this (ms; -1: keep forever)",
        },
        "retention.bytes": {
            **_LONG_OR_UNLIMITED,
            "description": "Per partition, delete the oldest records past this size (-1: none)",
        },
        "cleanup.policy": {
            "type": "string",
            "enum": ["delete", "compact", "compact,delete"],
            "description": "delete (retention), compact (newest record per key) or both",
        },
        "max.message.bytes": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_INT32,
            "description": "Largest record (key, value and headers) in bytes",
        },
        "delete.retention.ms": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_INT64,
            "description": "How long compaction keeps tombstones (null values), ms",
        },
    },
}
ConfigOverrides = Annotated[dict[str, Any], Field(json_schema_extra=TOPIC_CONFIG_SCHEMA)]


class TopicCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = TOPIC_NAME_FIELD
    partitions: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PARTITIONS,
        description="Partition count (default: the broker's default)",
    )
    config: ConfigOverrides = Field(
        default_factory=dict,
        description="Kafka topic config overrides; -1 means unlimited",
        examples=[CONFIG_EXAMPLE],
    )


class TopicPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partitions: int | None = Field(
        default=None, ge=1, le=MAX_PARTITIONS, description="New count (increase only)"
    )
    config: ConfigOverrides | None = Field(
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

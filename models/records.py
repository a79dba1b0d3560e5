"""Schemas of produce and fetch."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_INT32 = 2**31 - 1  # Kafka's partition numbers are int32
MAX_INT64 = 2**63 - 1  # offsets and timestamps are SQLite (and Kafka) int64


# Headers as a list keeps what an object cannot: order with repeated names, and null values.
HeaderList = list[tuple[str, str | None]]
HEADER_LIST_EXAMPLE = [["trace", "a1"], ["trace", "b2"], ["retry", None]]


class RecordIn(BaseModel):
    """A record to produce. Give `value` (any JSON) or `value_base64` (bytes), not both."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(default=None, description="Partitioning key", examples=["AAPL"])
    value: Any = Field(default=None, description="Any JSON value", examples=[{"price": 187.3}])
    value_base64: str | None = Field(
        default=None, description="Binary value, base64-encoded (instead of `value`)"
    )
    headers: dict[str, str] | HeaderList = Field(
        default_factory=dict,
        description="Name -> text value; or a list of `[name, value or null]` pairs, in order "
        "(a name may repeat), kept exactly as Kafka keeps headers",
        examples=[{"source": "feed-1"}, HEADER_LIST_EXAMPLE],
    )
    partition: int | None = Field(
        default=None, ge=0, le=MAX_INT32, description="Explicit partition (default: hash of key)"
    )
    timestamp: int | None = Field(
        default=None, ge=0, le=MAX_INT64, description="ms since epoch (default: broker time)"
    )


PRODUCER_ID_FIELD = Field(
    min_length=1,
    max_length=249,
    pattern=r"^[a-zA-Z0-9._:-]+$",
    description="Stable id of the producing client (e.g. a device or service instance)",
    examples=["phone-42"],
)


class ProducerRef(BaseModel):
    """Idempotent producer: a retried request with the same sequence is not appended twice."""

    model_config = ConfigDict(extra="forbid")

    id: str = PRODUCER_ID_FIELD
    sequence: int = Field(ge=0, le=MAX_INT64, description="last + 1 for each new request")


class ProduceBatch(BaseModel):
    """Several records, appended atomically (all or none)."""

    model_config = ConfigDict(extra="forbid")

    records: list[RecordIn] = Field(min_length=1)
    producer: ProducerRef | None = None


class RecordMetadata(BaseModel):
    partition: int
    offset: int
    timestamp: int


class ProduceResponse(BaseModel):
    offsets: list[RecordMetadata] = Field(description="One entry per record, in request order")


class RecordOut(BaseModel):
    """A stored record. It carries `value`, or `value_base64` if it was produced as bytes."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    value: Any = Field(default=None, description="The JSON value, exactly as produced")
    value_base64: str | None = Field(default=None, description="Present for binary values only")
    headers: dict[str, str] = Field(
        description="The last value of each header name (a name whose last value is null is "
        "left out)",
        examples=[{"source": "feed-1"}],
    )
    header_list: HeaderList | None = Field(
        default=None,
        description="Every header in order, `[name, value or null]`: present only when the "
        "object cannot show them exactly (a repeated name, a null value, or a value that is not "
        "UTF-8, shown with U+FFFD for each bad byte sequence)",
        examples=[HEADER_LIST_EXAMPLE],
    )


class FetchResponse(BaseModel):
    records: list[RecordOut]
    next_offset: int = Field(description="Offset to fetch next")
    log_start_offset: int
    high_watermark: int


class OffsetLookup(BaseModel):
    offset: int | None = Field(description="First offset with timestamp >= the one asked, or null")

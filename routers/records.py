"""Produce, fetch and offset lookup over REST."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response

from broker import drafts_from_body
from models.errors import ErrorResponse, PayloadTooLarge
from models.records import (
    MAX_INT32,
    MAX_INT64,
    FetchResponse,
    OffsetLookup,
    ProduceResponse,
    RecordMetadata,
)
from routers.deps import BrokerDep, PrincipalDep, TopicPath

router = APIRouter(prefix="/v1/topics/{topic}", tags=["records"])

PartitionPath = Annotated[int, Path(ge=0, le=MAX_INT32, description="Partition number")]

_RECORD_EXAMPLE = {"key": "AAPL", "value": {"price": 187.3}, "headers": {"source": "feed-1"}}
_BATCH_EXAMPLE = {
    "records": [
        {"key": "AAPL", "value": {"price": 187.3}},
        {"key": None, "value": "1/Electronics", "partition": 0, "timestamp": 1764000000000},
    ]
}
# The body is read by hand (three media types, size-limited before parsing), so its schema is
# declared here; app/openapi.py adds RecordIn and ProduceBatch to the components.
PRODUCE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/RecordIn"},
                        {"$ref": "#/components/schemas/ProduceBatch"},
                    ]
                },
                "examples": {
                    "record": {"summary": "One record", "value": _RECORD_EXAMPLE},
                    "batch": {"summary": "An atomic batch", "value": _BATCH_EXAMPLE},
                },
            },
            "text/plain": {"schema": {"type": "string"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (before parsing)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body is {declared} bytes; the limit is {limit}", {"limit": limit}
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes", {"limit": limit})
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/records",
    response_model=ProduceResponse,
    openapi_extra=PRODUCE_BODY,
    responses={
        404: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
async def produce(
    topic: TopicPath,
    request: Request,
    broker: BrokerDep,
    principal: PrincipalDep,
    content_type: Annotated[str, Header()] = "application/json",
    key: Annotated[str | None, Query(description="Key of a raw (text/octet-stream) body")] = None,
    partition: Annotated[
        int | None,
        Query(ge=0, le=MAX_INT32, description="Partition of a raw (text/octet-stream) body"),
    ] = None,
) -> ProduceResponse:
    """Append one record or an atomic batch; answers after the records are committed to disk."""
    body = await read_body(request, broker.config.max_request_bytes)
    drafts, producer = drafts_from_body(body, content_type, key, partition)
    appended = await broker.produce(principal, topic, drafts, producer)
    return ProduceResponse(
        offsets=[
            RecordMetadata(partition=a.partition, offset=a.offset, timestamp=a.timestamp)
            for a in appended
        ]
    )


@router.get(
    "/partitions/{partition}/records",
    response_model=FetchResponse,
    responses={404: {"model": ErrorResponse}, 416: {"model": ErrorResponse}},
)
async def fetch(
    topic: TopicPath,
    partition: PartitionPath,
    broker: BrokerDep,
    principal: PrincipalDep,
    offset: Annotated[
        str,
        Query(
            pattern=r"^(earliest|latest|-?\d{1,19})$",
            description="earliest, latest or an offset",
            examples=["earliest"],
        ),
    ] = "earliest",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    max_bytes: Annotated[int, Query(ge=1, le=64 * 1_048_576)] = 1_048_576,
    timeout_ms: Annotated[
        int, Query(ge=0, le=60_000, description="Long-poll: wait up to this long for a record")
    ] = 0,
) -> Response:
    """Records from `offset` on, in offset order (at least one if any exists, then up to
    `limit` records / `max_bytes`)."""
    body = await broker.fetch(principal, topic, partition, offset, limit, max_bytes, timeout_ms)
    return Response(body, media_type="application/json")


@router.get(
    "/partitions/{partition}/offsets",
    response_model=OffsetLookup,
    responses={404: {"model": ErrorResponse}},
)
async def offset_for_timestamp(
    topic: TopicPath,
    partition: PartitionPath,
    broker: BrokerDep,
    principal: PrincipalDep,
    timestamp: Annotated[int, Query(ge=-MAX_INT64, le=MAX_INT64, description="ms since epoch")],
) -> OffsetLookup:
    """The first offset whose timestamp is >= `timestamp` (null if there is none)."""
    found = await broker.offset_for_timestamp(principal, topic, partition, timestamp)
    return OffsetLookup(offset=found)

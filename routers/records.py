"""Produce, fetch and offset lookup over REST."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from eddy.broker import Broker, Principal, drafts_from_body
from eddy.models.errors import PayloadTooLarge
from eddy.models.log import AppendedRecord
from eddy.models.records import (
    MAX_INT32,
    MAX_INT64,
    FetchResponse,
    OffsetLookup,
    ProduceResponse,
)
from eddy.routers.deps import BrokerDep, PrincipalDep, TopicPath, bearer_token_of
from eddy.routers.responses import (
    AUTH,
    BUSY,
    INVALID,
    OFFSET_OUT_OF_RANGE,
    OUT_OF_ORDER,
    OUTCOME_UNKNOWN,
    PARTITION_NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    RATE_LIMITED,
    RECORD_TOO_LARGE,
    TOPIC_LIMIT,
    TOPIC_NOT_FOUND,
    UNAVAILABLE,
    UNSUPPORTED_ENCODING,
    UNSUPPORTED_MEDIA_TYPE,
    errors,
)

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
    "parameters": [
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "description": "A compressed body (app/http_encoding.py decodes it); its decoded "
            "size has the same limit as a plain body",
            "schema": {"type": "string", "enum": ["gzip", "deflate", "identity"]},
        }
    ],
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
    },
}


async def read_body(receive: Receive, limit: int, declared: bytes | None) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (before parsing)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body is {declared.decode()} bytes; the limit is {limit}", {"limit": limit}
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes", {"limit": limit})
        if not message.get("more_body", False):
            if not chunks:
                return chunk  # the usual case: the whole body in one message
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


class RawBodyQuery(BaseModel):
    """?key= and ?partition= of a raw body, validated as the documented Query parameters."""

    key: str | None = None
    partition: int | None = Field(default=None, ge=0, le=MAX_INT32)


def raw_body_query(query_string: bytes) -> RawBodyQuery:
    params = QueryParams(query_string)
    try:
        return RawBodyQuery.model_validate(
            {name: params[name] for name in ("key", "partition") if name in params}
        )
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {**err, "loc": ("query", *err["loc"])}
                for err in exc.errors(include_url=False, include_context=False)
            ]
        ) from None


async def produce_records(
    broker: Broker,
    principal: Principal,
    topic: str,
    body: bytes,
    content_type: str,
    query: RawBodyQuery,
) -> bytes:
    """Append what the body holds; the produce response's JSON, once committed."""
    drafts, producer = drafts_from_body(body, content_type, query.key, query.partition)
    appended = await broker.produce(principal, topic, drafts, producer)
    return offsets_json(appended)


def offsets_json(appended: Sequence[AppendedRecord]) -> bytes:
    """The produce response: `{"offsets": [{"partition", "offset", "timestamp"}, ...]}`."""
    # A batch in one partition with one timestamp (the usual batch: no explicit partitions or
    # timestamps) has dense offsets first..last, so the objects differ only in their offset:
    # join the offsets with the constant text between two of them (a tenth of the cost of
    # building and encoding a dict per record). Offsets in one partition of one batch are
    # consecutive, so a span of len - 1 means every record is in that partition.
    if len(appended) > 1:
        first, last = appended[0], appended[-1]
        if (
            first.partition == last.partition
            and last.offset - first.offset == len(appended) - 1
            and all(a.timestamp == first.timestamp for a in appended)
        ):
            between = b',"timestamp":%d},{"partition":%d,"offset":' % (
                first.timestamp,
                first.partition,
            )
            return b"".join(
                (
                    b'{"offsets":[{"partition":%d,"offset":' % first.partition,
                    between.join([b"%d" % o for o in range(first.offset, last.offset + 1)]),
                    b',"timestamp":%d}]}' % first.timestamp,
                )
            )
    return orjson.dumps(
        {
            "offsets": [
                {"partition": a.partition, "offset": a.offset, "timestamp": a.timestamp}
                for a in appended
            ]
        }
    )


_NO_QUERY = RawBodyQuery()


async def produce_answer(scope: Scope, receive: Receive) -> bytes:
    """POST /v1/topics/{topic}/records without FastAPI: reads the request, appends, and
    returns the response's JSON once committed; raises the documented route's errors (the
    caller turns them into responses with the app's handlers)."""
    broker: Broker = scope["state"]["broker"]
    content_type = authorization = declared = None
    for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
        if name == b"content-type" and content_type is None:
            content_type = value
        elif name == b"authorization" and authorization is None:
            authorization = value
        elif name == b"content-length" and declared is None:
            declared = value
    principal = await broker.authenticate(
        None if authorization is None else bearer_token_of(authorization.decode("latin-1"))
    )
    query = raw_body_query(scope["query_string"]) if scope["query_string"] else _NO_QUERY
    body = await read_body(receive, broker.config.max_request_bytes, declared)
    return await produce_records(
        broker,
        principal,
        scope["path_params"]["topic"],
        body,
        "application/json" if content_type is None else content_type.decode("latin-1"),
        query,
    )


def answer_start(answer: bytes, *extra: tuple[bytes, bytes]) -> Message:
    """The `http.response.start` message of a produce answer."""
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-length", b"%d" % len(answer)),
            (b"content-type", b"application/json"),
            *extra,
        ],
    }


class ProduceEndpoint:
    """POST /v1/topics/{topic}/records as a bare ASGI app: the hottest endpoint, so none of
    FastAPI's per-request work (dependency resolution, parameter models, response-model
    validation and re-encoding). It sits first in the app's routes, inside all middleware, and
    raises the same errors as the documented route below, which the app's handlers answer.
    Most requests do not even get here: app/lean.py answers them before the middleware stack,
    which this route serves when a request needs it (a compressed body, a CORS origin)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await produce_answer(scope, receive)
        await send(answer_start(answer))
        await send({"type": "http.response.body", "body": answer})


class LeanRoute(Route):
    """A Starlette route that names itself in the scope, as FastAPI's routes do (the request
    metrics label requests by `scope["route"].path`)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


# Matched before every other route (see app/factory.py); not an APIRoute, so the OpenAPI
# document describes the endpoint from the declaration below.
produce_route = LeanRoute(
    f"{router.prefix}/records", ProduceEndpoint(), methods=["POST"], name="produce"
)


@router.post(
    "/records",
    response_model=ProduceResponse,
    openapi_extra=PRODUCE_BODY,
    responses=errors(
        *AUTH,
        TOPIC_NOT_FOUND,
        PARTITION_NOT_FOUND,
        OUT_OF_ORDER,
        TOPIC_LIMIT,
        RECORD_TOO_LARGE,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        UNSUPPORTED_ENCODING,
        INVALID,
        RATE_LIMITED,
        UNAVAILABLE,
        BUSY,
        OUTCOME_UNKNOWN,
    ),
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
) -> Response:
    """Append one record or an atomic batch; answers after the records are committed to disk."""
    # Requests reach `produce_route` first; this route gives the OpenAPI document its
    # operation, and answers the same way where the lean route is not installed.
    body = await read_body(
        request.receive,
        broker.config.max_request_bytes,
        request.headers.get("content-length", "").encode("latin-1") or None,
    )
    answer = await produce_records(
        broker, principal, topic, body, content_type, RawBodyQuery(key=key, partition=partition)
    )
    return Response(answer, media_type="application/json")


@router.get(
    "/partitions/{partition}/records",
    response_model=FetchResponse,
    responses=errors(
        *AUTH, TOPIC_NOT_FOUND, PARTITION_NOT_FOUND, OFFSET_OUT_OF_RANGE, INVALID, UNAVAILABLE
    ),
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
    responses=errors(*AUTH, TOPIC_NOT_FOUND, PARTITION_NOT_FOUND, INVALID, UNAVAILABLE),
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

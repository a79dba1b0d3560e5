"""The Server-Sent Events transport: `GET /v1/topics/{topic}/events` streams a subscription as
`text/event-stream`, for clients that cannot open a WebSocket (proxies that drop them, `curl -N`,
a browser's `EventSource`).

It drives the same subscription as the WebSocket (`Broker.open_subscription`, the hub's fan-out,
the tails' encode-once bytes) over `SSEStream`, a `subscriber.Connection` whose buffer the
response (sse-starlette's `EventSourceResponse`, which also sends the keep-alive comments and
watches for the client leaving) takes from.

Events: `subscribed` (its `id:` is the start position), then one `record` per record whose `id:`
is the resume position after it: the next offset of every partition of the subscription
(`0:42,1:17`), which a reconnecting client sends back as `Last-Event-ID` (browsers do by
themselves). A record's event is built once per record and cached in the tail (`SSE_EVENTS`),
with the id of its own partition only; `SSEStream.write` puts the full position in when the
subscription has more than one partition (one id line per record and subscriber: the position
differs per subscriber), and writes the cached bytes unchanged when it has one.

Refusals known before the stream starts (bad parameters, credentials, permissions, unknown topic,
an offset out of range) are ordinary JSON 4xx answers, so an `EventSource` stops instead of
reconnecting forever (it reconnects only after a 200 stream ends). Once streaming, an error is an
`event: error` and the end of the stream; the slow-consumer end is one too, and the browser then
resumes by itself from the last id it got.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from eddy.broker import (
    Broker,
    End,
    Event,
    Principal,
    SessionEnd,
    Subscribed,
    SubscribeParams,
    Subscriber,
    Transport,
    record_frame_bytes,
    safe_json,
)
from eddy.models.errors import EddyError, InvalidRequest, Unauthorized, Unavailable
from eddy.models.log import StoredRecord
from eddy.routers.deps import BrokerDep, TopicPath, bearer_token
from eddy.routers.responses import (
    AUTH,
    INVALID,
    OFFSET_OUT_OF_RANGE,
    PARTITION_NOT_FOUND,
    TOPIC_NOT_FOUND,
    UNAVAILABLE,
    errors,
)
from eddy.routers.ws.frames import event_message, slow_consumer_message
from eddy.routers.ws.params import parse_subscription
from eddy.routers.ws.session import watch_credentials

log = logging.getLogger("eddy.sse")

router = APIRouter(tags=["subscribe"])

SEP = "\n"  # line ends of every event (and of the keep-alive comments)
_END = b"\n\n"
_ID = b"id: "
# WebSocket-only parameters (a group member commits over its socket).
WEBSOCKET_ONLY = ("group", "auto_commit")


def _event(kind: str, data: bytes, id: str | None = None) -> bytes:
    return ServerSentEvent(data.decode(), event=kind, id=id, sep=SEP).encode()


class SSEEvents:
    """The tail's encoder for SSE subscribers: a record as a complete `record` event whose id
    names its own partition's next offset (`SSEStream.write` completes it)."""

    def record(self, topic: str, record: StoredRecord) -> bytes:
        return _event(
            "record", record_frame_bytes(topic, record), f"{record.partition}:{record.offset + 1}"
        )

    def __repr__(self) -> str:
        return "SSEEvents()"


SSE_EVENTS = SSEEvents()


def resume_id(positions: Mapping[int, int]) -> str:
    """The `id:` of an event: next offset per partition (`0:42,1:17`), what `Last-Event-ID`
    (and `offsets=`) take."""
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def with_resume_ids(data: bytes, positions: dict[int, int]) -> bytes:
    """`SSE_EVENTS` record events, each one's id replaced by the full position after it;
    `positions` (partition -> next offset) moves along. The data lines hold JSON, which has no
    raw line breaks: a blank line only ever ends an event."""
    if len(positions) == 1:
        (only,) = positions
        prefix = b"%b%d:" % (_ID, only)
        if data.startswith(prefix) and data.count(_END + _ID) == data.count(_END + prefix):
            # One partition: the cached ids are complete already; only the last one is read.
            start = data.rfind(_END + _ID, 0, len(data) - len(_END))
            start = 0 if start < 0 else start + len(_END)
            line_end = data.index(b"\n", start)
            positions[only] = int(data[start + len(prefix) : line_end])
            return data
    # Each partition's part of the id (`P:O`, as the cached event has it for its own partition),
    # kept in partition order: an event replaces its partition's part and joins them.
    parts = {p: b"%d:%d" % (p, o) for p, o in positions.items()}
    order = sorted(parts)
    out: list[bytes] = []
    events = data.split(_END)
    events.pop()  # what follows the last event's blank line: nothing
    for event in events:
        line_end = event.index(b"\n")
        own = event[len(_ID) : line_end]
        partition = int(own[: own.index(b":")])
        if partition not in parts:  # a partition added to the topic meanwhile
            order = sorted([*order, partition])
        parts[partition] = own
        out.append(
            b"%b%b%b%b" % (_ID, b",".join([parts[p] for p in order]), event[line_end:], _END)
        )
    for partition, part in parts.items():
        positions[partition] = int(part[part.index(b":") + 1 :])
    return b"".join(out)


class SSEStream:
    """One SSE subscriber's connection: the broker writes events into it (never blocking), the
    response's body iterator (`events`) takes them out and sends them at the client's pace.
    `buffered` counts what the client has not taken yet, including the chunk being sent."""

    via = Transport.SSE  # the delivery metrics' label

    def __init__(self, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._positions: dict[int, int] = {}
        self._ready = asyncio.Event()  # chunks to send, or the end
        self._empty = asyncio.Event()  # everything written has been sent
        self._empty.set()
        self.ended = False

    @property
    def encoder(self) -> SSEEvents:
        return SSE_EVENTS

    def _queue(self, data: bytes) -> None:
        if self.ended or not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._empty.clear()
        self._ready.set()

    def write(self, data: bytes) -> None:
        self._queue(with_resume_ids(data, self._positions))

    def conflated_record(self, topic: str, record: StoredRecord, conflated: int) -> bytes:
        """A record event that stands for `conflated` dropped ones of its key (the slow path of
        `on_slow=conflate` and `max_rate=`; `write` completes its id like a cached event's)."""
        return _event(
            "record",
            record_frame_bytes(topic, record, conflated),
            f"{record.partition}:{record.offset + 1}",
        )

    def send_event(self, event: Event) -> None:
        message = event_message(event)
        if isinstance(event, Subscribed):
            self._positions = {p: pos.offset for p, pos in event.positions.items()}
            self._queue(_event("subscribed", safe_json(message), resume_id(self._positions)))
        else:  # a refused client message: SSE clients send none, so this is not reached
            self._queue(_event(str(message.get("type", "error")), safe_json(message)))

    def buffered(self) -> int:
        return self._size

    async def drained(self) -> None:
        await self._empty.wait()

    def finish(self, end: End) -> None:
        """The subscription ended: an error event if an error ended it, then the stream ends
        (after what is queued: the client gets every record it was sent first)."""
        if isinstance(end, EddyError):
            self._queue(_event("error", safe_json(end.to_frame())))
        elif end is SessionEnd.TOO_SLOW:
            self._queue(_event("error", safe_json(slow_consumer_message(self._limit))))
        self.ended = True
        self._ready.set()

    async def events(self) -> AsyncIterator[bytes]:
        """The response body: queued events as they come, until the subscription ends."""
        while True:
            if not self._chunks:
                if self.ended:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
            self._chunks = []
            yield data  # resumes once the server has handed it to the socket
            self._size -= len(data)
            if self._size == 0:
                self._empty.set()


def sse_params(query: Mapping[str, str], last_event_id: str | None) -> SubscribeParams:
    """The WebSocket subscription's query parameters (without group mode), with `Last-Event-ID`
    taking the place of `offsets=`: the client resumes exactly where its last event left it.
    Partitions the id does not name were added to the topic after it was sent (an id names every
    partition of its subscription), so they start at their beginning, as a subscriber that was
    connected all along would have read them."""
    for name in WEBSOCKET_ONLY:
        if name in query:
            raise InvalidRequest(
                f"{name}= is not available on Server-Sent Events (consumer groups commit over "
                "the WebSocket: /v1/topics/{topic}/ws)"
            )
    if last_event_id is None or not last_event_id.strip():
        return parse_subscription(query)
    try:
        parse_subscription({"offsets": last_event_id})
    except InvalidRequest:
        raise InvalidRequest(
            "Last-Event-ID must be a resume position like 0:42,1:17 (the id of an event)"
        ) from None
    return parse_subscription({**query, "offsets": last_event_id, "from": "earliest"})


class _Session:
    """What one stream holds until it ends (once): the subscriber, its credential watch, the
    connection slot."""

    def __init__(self, broker: Broker, stream: SSEStream) -> None:
        self.broker = broker
        self.stream = stream
        self.subscriber: Subscriber | None = None
        self.watch: Any = None
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.watch is not None:
            self.watch.cancel()
        if self.subscriber is not None:
            self.subscriber.finish(None)  # the client is gone (no-op if it ended already)
        self.broker.websocket_closed()

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for data in self.stream.events():
                yield data
        finally:
            self.close()


class EventStream(EventSourceResponse):
    """sse-starlette's response; a client that took nothing for the send timeout has its stream
    dropped (uvicorn closes the connection) instead of failing the request with a traceback."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("SSE client took nothing for %.0f s: stream dropped", self.send_timeout)


_ID_DESCRIPTION = "The `id:` of the last event received: resume right after it (wins over offsets=)"
_EVENT_STREAM_EXAMPLE = (
    'id: 0:41\nevent: subscribed\ndata: {"type":"subscribed","partitions":{"0":{"offset":41}}}\n\n'
    "id: 0:42\nevent: record\n"
    'data: {"type":"record","topic":"prices","partition":0,"offset":41,"timestamp":1764000000123,'
    '"key":"AAPL","value":{"price":187.3},"headers":{}}\n\n'
    ": keep-alive\n\n"
)


@router.get(
    "/v1/topics/{topic}/events",
    summary="Subscribe with Server-Sent Events",
    response_class=EventStream,
    responses={
        200: {
            "description": "An endless `text/event-stream`: `subscribed`, then `record` events "
            "(`data:` the record JSON of the WebSocket subscription, `id:` the resume position); "
            "`error` then the end of the stream; a comment line at least every 15 s.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": _EVENT_STREAM_EXAMPLE,
                }
            },
        },
        **errors(
            *AUTH, TOPIC_NOT_FOUND, PARTITION_NOT_FOUND, OFFSET_OUT_OF_RANGE, INVALID, UNAVAILABLE
        ),
    },
    # Marked optional by app/openapi.py (anonymous access may be allowed).
    openapi_extra={"security": [{"bearer": []}]},
)
async def subscribe_events(
    request: Request,
    topic: TopicPath,
    broker: BrokerDep,
    start_from: Annotated[
        str | None,
        Query(
            alias="from",
            description="earliest|latest (default latest): partitions with no "
            "other position start there",
        ),
    ] = None,
    offsets: Annotated[
        str | None, Query(description="Start positions, next offset per partition: 0:15,1:20")
    ] = None,
    partitions: Annotated[str | None, Query(description="Only these partitions: 0,2")] = None,
    keys: Annotated[str | None, Query(description="Only records with these keys: A,B")] = None,
    token: Annotated[
        str | None,
        Query(
            description="API key or JWT, for clients that cannot set Authorization (EventSource)"
        ),
    ] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description=_ID_DESCRIPTION)
    ] = None,
) -> EventStream:
    """Stream a topic's records as Server-Sent Events: the WebSocket subscription's parameters
    (not `group`), resumable with `Last-Event-ID`. The declared query parameters document the
    route; all of them are read by the WebSocket's parser, as on `/ws`."""
    principal: Principal = await broker.authenticate(bearer_token(request, allow_query=True))
    params = sse_params(request.query_params, last_event_id)
    if not broker.open_websocket():  # SSE streams share the streaming connection slots
        raise Unavailable("too many streaming connections; retry later")
    stream = SSEStream(broker.config.ws_buffer_bytes)
    session = _Session(broker, stream)
    try:
        session.subscriber = await broker.open_subscription(
            topic, params, stream, principal, stream.finish
        )
    except BaseException:
        session.close()
        raise
    subscriber = session.subscriber
    session.watch = watch_credentials(
        broker,
        principal,
        lambda: subscriber.finish(Unauthorized("credentials expired or revoked")),
    )

    async def closed() -> None:
        # After the response, however it ended: a client that left at once may have had the
        # stream cancelled before its body iterator started (whose `finally` would close).
        session.close()

    return EventStream(
        session.body(),
        background=BackgroundTask(closed),
        ping=broker.config.sse_keepalive_interval,
        sep=SEP,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep=SEP),
        # A client that takes nothing for this long is gone (or hopeless): end its stream
        # rather than hold its unsent data (bounded by the buffer limit) forever.
        send_timeout=broker.config.sse_send_timeout,
        headers={"Cache-Control": "no-store"},
    )

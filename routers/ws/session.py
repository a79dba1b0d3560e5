"""Driving one WebSocket session: accept, take a connection slot, check the origin and the
credentials, run the broker's session over the connection, and close with the code the table in
`close_codes.py` gives for how it ended (`frames.closing`: an error frame first for every 44xx).

The session runs in the ASGI task uvicorn gives the connection; nothing else runs per idle
connection: credential expiry is a timer, and the subscriber's frames are written by the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from fastapi import WebSocket

from eddy.broker import (
    Broker,
    Encoder,
    End,
    Event,
    Principal,
    Subscriber,
    Transport,
    record_frame_bytes,
)
from eddy.models.errors import EddyError, Forbidden, Unauthorized
from eddy.models.log import StoredRecord
from eddy.routers.deps import bearer_token
from eddy.routers.ws.close_codes import CLOSE_INTERNAL_ERROR, CLOSE_TRY_AGAIN_LATER
from eddy.routers.ws.frames import answer_frame, closing, event_frame, text_frame
from eddy.routers.ws.protocol import FAST_SEND, FastSend

log = logging.getLogger("eddy.ws")


class WebSocketConnection:
    """The broker's view of one WebSocket (`subscriber.Connection`, `publisher.AnswerSink`):
    pre-built frames written straight to the socket's transport."""

    __slots__ = ("_fast",)

    via = Transport.WEBSOCKET  # the delivery metrics' label

    def __init__(self, fast: FastSend) -> None:
        self._fast = fast

    @property
    def encoder(self) -> Encoder:
        return self._fast.encoder  # plain frames, or compressed ones if negotiated

    def write(self, data: bytes) -> None:
        self._fast.write(data)

    def conflated_record(self, topic: str, record: StoredRecord, conflated: int) -> bytes:
        return text_frame(record_frame_bytes(topic, record, conflated))

    def send_event(self, event: Event) -> None:
        self._fast.write(event_frame(event))

    def buffered(self) -> int:
        return self._fast.buffered()

    async def drained(self) -> None:
        await self._fast.drained()

    async def answer(self, events: Sequence[Event]) -> None:
        await self._fast.drained()  # a publisher that does not read its acks is not read either
        self._fast.write(b"".join(map(answer_frame, events)))  # one write for all of them


Start = Callable[[Callable[[End], None]], Awaitable[Subscriber]]


async def incoming_frames(websocket: WebSocket) -> AsyncIterator[str | bytes]:
    """The client's frames (text or binary) until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        yield text if text is not None else message.get("bytes") or b""


def check_origin(broker: Broker, origin: str | None, host: str | None) -> None:
    """Upgrades from browsers: only the server's own page or the allowed origins ("*": any,
    as for REST's CORS)."""
    if origin is None:  # not a browser: nothing to protect against
        return
    own = {f"http://{host}", f"https://{host}"} if host else set()
    allowed = broker.config.origins
    if origin in own or origin in allowed or "*" in allowed:
        return
    raise Forbidden(f"origin '{origin[:100]}' is not allowed", {"origin": origin[:100]})


def client_address(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "unknown"


class WebSocketSession:
    """One accepted WebSocket: its slot, its metrics gauge and how it ends (once)."""

    def __init__(self, websocket: WebSocket, broker: Broker, endpoint: str, fast: FastSend) -> None:
        self.websocket: WebSocket | None = websocket  # until the session runs detached
        self.broker = broker
        self.fast = fast
        self.connection = WebSocketConnection(fast)
        self._endpoint = endpoint
        broker.count_open_websocket(endpoint, 1)
        self._watch: CredentialWatch | None = None
        self.ended = False

    @classmethod
    async def accept(
        cls, websocket: WebSocket, broker: Broker, endpoint: str
    ) -> WebSocketSession | None:
        """Accept the upgrade and take a connection slot; None if the session cannot start
        (it has been closed already)."""
        fast: FastSend | None = websocket.scope.get("extensions", {}).get(FAST_SEND)
        await websocket.accept()
        if fast is None:  # served by a server without Eddy's protocol class (see app/server.py)
            log.error("WebSocket refused: run Eddy with app.server.uvicorn_config (eddy serve)")
            with contextlib.suppress(Exception):
                await websocket.close(CLOSE_INTERNAL_ERROR)
            return None
        if not broker.open_websocket():
            fast.close(CLOSE_TRY_AGAIN_LATER, "too many connections; retry later")
            return None
        return cls(websocket, broker, endpoint, fast)

    async def authenticate(self) -> Principal:
        """Check the origin and the credentials (raises `EddyError`)."""
        websocket = self.websocket
        assert websocket is not None
        headers = websocket.headers
        check_origin(self.broker, headers.get("origin"), headers.get("host"))
        return await self.broker.authenticate(bearer_token(websocket, allow_query=True))

    def end(self, end: End) -> None:
        """Close as the session ended (an error frame first for an error) and free the slot."""
        if self.ended:
            return
        self.ended = True
        if self._watch is not None:
            self._watch.cancel()
        if isinstance(end, EddyError):
            self.broker.count_rejection(end.code, Transport.WEBSOCKET)
        close = closing(end, self.broker.config.ws_buffer_bytes)
        if close is not None:
            if close.error is not None:
                # Written even when the buffer is full (a slow consumer ends for that): a few
                # dozen bytes more, so the client learns why.
                self.fast.write(text_frame(close.error))
            self.fast.close(close.code, close.reason)
        self.broker.count_open_websocket(self._endpoint, -1)
        self.broker.websocket_closed()

    async def run(self, principal: Principal, running: Awaitable[End]) -> None:
        """Run a session in this task until it ends (publishers, group members)."""
        try:
            end = await _run_while_authorized(self.broker, principal, running)
        except EddyError as exc:
            end = exc
        except asyncio.CancelledError:  # the server stops this task
            self.end(None)
            raise
        except Exception:
            log.exception("WebSocket session failed")
            end = EddyError("internal error")
        self.end(end)

    async def run_detached(self, principal: Principal, start: Start) -> None:
        """Start a subscription that runs without this task: the connection's callbacks take
        the client's frames and its end, a timer watches the credentials, and this returns."""
        try:
            subscriber = await start(self.end)
        except EddyError as exc:
            self.end(exc)
            return
        if subscriber.done:  # ended while starting (its end is handled)
            return
        self.websocket = None  # its scope is not needed any more
        self.fast.detach(subscriber.receive_frame, lambda: subscriber.finish(None))
        self._watch = watch_credentials(
            self.broker,
            principal,
            lambda: subscriber.finish(Unauthorized("credentials expired or revoked")),
        )


class CredentialWatch:
    """Calls `expired` once the principal's credentials expire or are revoked: a timer that
    re-arms itself every recheck interval (no task per connection)."""

    def __init__(self, broker: Broker, principal: Principal, expired: Callable[[], None]) -> None:
        self._broker = broker
        self._principal = principal
        self._expired = expired
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(self._delay(), self._check)

    def _delay(self) -> float:
        wait = self._broker.config.auth_recheck_interval
        expires_at = self._principal.expires_at
        if expires_at is not None:
            wait = min(wait, max(expires_at - time.time(), 0.0) + 0.01)
        return wait

    def _check(self) -> None:
        if self._broker.still_valid(self._principal):
            self._timer = self._loop.call_later(self._delay(), self._check)
        else:
            self._expired()

    def cancel(self) -> None:
        self._timer.cancel()


def watch_credentials(
    broker: Broker, principal: Principal, expired: Callable[[], None]
) -> CredentialWatch | None:
    if not broker.access_enabled or not principal.authenticated:
        return None  # nothing can expire
    return CredentialWatch(broker, principal, expired)


async def _run_while_authorized(
    broker: Broker, principal: Principal, running: Awaitable[End]
) -> End:
    """Run the session; end it with 4401 if the credentials expire or are revoked meanwhile
    (the timer cancels this task's await)."""
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def on_expired() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    watch = watch_credentials(broker, principal, on_expired)
    try:
        return await running
    except asyncio.CancelledError:
        if not expired:
            raise
        task.uncancel()
        raise Unauthorized("credentials expired or revoked") from None
    finally:
        if watch is not None:
            watch.cancel()

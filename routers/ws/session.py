"""Driving one WebSocket session: accept, take a connection slot, check the origin and the
credentials, run the broker's session over the connection, and close with the code the table in
`close_codes.py` gives for how it ended (an error frame first when an error ended it).

The session runs in the ASGI task uvicorn gives the connection; nothing else runs per idle
connection: credential expiry is a timer, and the subscriber's frames are written by the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import WebSocket

from broker import Broker
from broker.access import Principal
from broker.events import End, Event, Refused
from broker.tail import Encoder
from models.errors import EddyError, Forbidden, Unauthorized
from routers.deps import bearer_token
from routers.ws.close_codes import CLOSE_INTERNAL_ERROR, CLOSE_TRY_AGAIN_LATER, close_code
from routers.ws.frames import FRAMES, event_frame
from routers.ws.protocol import FAST_SEND, FastSend

log = logging.getLogger("eddy.ws")


class WebSocketConnection:
    """The broker's view of one WebSocket (`subscriber.Connection`, `publisher.AnswerSink`):
    pre-built frames written straight to the socket's transport."""

    __slots__ = ("_fast",)

    def __init__(self, fast: FastSend) -> None:
        self._fast = fast

    @property
    def encoder(self) -> Encoder:
        return FRAMES

    def write(self, data: bytes) -> None:
        self._fast.write(data)

    def send_event(self, event: Event) -> None:
        self._fast.write(event_frame(event))

    def buffered(self) -> int:
        return self._fast.buffered()

    async def drained(self) -> None:
        await self._fast.drained()

    async def answer(self, event: Event) -> None:
        await self._fast.drained()  # a publisher that does not read its acks is not read either
        self._fast.write(event_frame(event))


Session = Callable[[Principal, WebSocketConnection], Awaitable[End]]


async def incoming_frames(websocket: WebSocket) -> AsyncIterator[str | bytes]:
    """The client's frames (text or binary) until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        yield text if text is not None else message.get("bytes") or b""


def check_origin(broker: Broker, origin: str | None, host: str | None) -> None:
    """Upgrades from browsers: only the server's own page or the allowed origins."""
    if origin is None:  # not a browser: nothing to protect against
        return
    own = {f"http://{host}", f"https://{host}"} if host else set()
    if origin in own or origin in broker.config.allowed_origins:
        return
    raise Forbidden(f"origin '{origin[:100]}' is not allowed", {"origin": origin[:100]})


def client_address(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "unknown"


async def run_session(
    websocket: WebSocket, broker: Broker, endpoint: str, session: Session
) -> None:
    """Accept, check who is calling, run the session, and close as it ended. Errors are sent as
    a frame before the close because browsers cannot see the HTTP status of a refused upgrade."""
    fast: FastSend | None = websocket.scope.get("extensions", {}).get(FAST_SEND)
    await websocket.accept()
    if fast is None:  # served by a server without Eddy's protocol class (see app/server.py)
        log.error("WebSocket refused: run Eddy with app.server.uvicorn_config (eddy serve)")
        with contextlib.suppress(Exception):
            await websocket.close(CLOSE_INTERNAL_ERROR)
        return
    if not broker.open_websocket():
        fast.close(CLOSE_TRY_AGAIN_LATER, "too many connections; retry later")
        return
    gauge = broker.metrics.websockets_open.labels(endpoint)
    gauge.inc()
    connection = WebSocketConnection(fast)
    try:
        try:
            check_origin(broker, websocket.headers.get("origin"), websocket.headers.get("host"))
            principal = broker.access.authenticate(bearer_token(websocket, allow_query=True))
            end = await _run_while_authorized(broker, principal, session(principal, connection))
        except EddyError as exc:  # refused (bad parameters, no such topic, credentials)
            end = exc
        if isinstance(end, EddyError):
            connection.send_event(Refused(end))
        code = close_code(end)
        if code is not None:
            fast.close(code)
    finally:
        gauge.dec()
        broker.websocket_closed()


async def _run_while_authorized(
    broker: Broker, principal: Principal, running: Awaitable[End]
) -> End:
    """Run the session; end it with 4401 if the credentials expire or are revoked meanwhile.
    A timer checks them (no task per connection); expiry cancels the session's await."""
    if not broker.access.enabled or not principal.authenticated:
        return await running  # nothing can expire
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    expired = False
    timer: asyncio.TimerHandle | None = None

    def schedule() -> None:
        nonlocal timer
        wait = broker.config.auth_recheck_interval
        if principal.expires_at is not None:
            wait = min(wait, max(principal.expires_at - time.time(), 0.0) + 0.01)
        timer = loop.call_later(wait, check)

    def check() -> None:
        nonlocal expired
        if broker.access.still_valid(principal):
            schedule()
        else:
            expired = True
            task.cancel()

    schedule()
    try:
        return await running
    except asyncio.CancelledError:
        if not expired:
            raise
        task.uncancel()
        raise Unauthorized("credentials expired or revoked") from None
    finally:
        if timer is not None:
            timer.cancel()

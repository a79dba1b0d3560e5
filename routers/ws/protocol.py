"""Eddy's WebSocket protocol class for uvicorn (`uvicorn_config` selects it with `ws=`).

It is uvicorn's sans-I/O implementation (timers for pings, no task of its own per connection)
with these additions:

- the `eddy.fast_send` ASGI extension: the app writes pre-built frame bytes straight to the
  connection's transport and reads its outgoing buffer size, with no await, task wake-up or
  framing per message. FastAPI still does the handshake, routing, dependencies and docs; only the
  hot path bypasses ASGI `send`. A close goes out at once, even while the peer is not reading
  (ASGI `send` would wait for the buffer to drain first, and a slow reader may never read).
- detaching: the app may hand the accepted connection to callbacks (`FastSend.detach`) and
  return; the connection stays open, client frames and the disconnect go to the callbacks, and
  an idle subscriber costs no task and no coroutine stack at all.
- a handshake deadline: a connection whose upgrade the app has neither accepted nor refused
  within HANDSHAKE_TIMEOUT seconds is closed, so half-open upgrades cannot pile up.
- the handshake's answer (101) waits for the app's first frame (the `subscribed` frame) until
  the end of the loop step, so both go out in one write (one send syscall less per handshake);
  anything else that writes sends it first.
- one keepalive sweep for all connections (`keepalive.py`) instead of uvicorn's two timers and a
  freshly framed ping per connection; peers that send anything are not pinged.
- permessage-deflate without context takeover (`deflate.py`): when a client offers compression,
  its record frames are compressed once per record for every such subscriber (`FastSend.encoder`
  names the shared encoder its connection negotiated).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from asyncio import TimerHandle
from collections.abc import Callable
from typing import Any

import orjson
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from eddy.broker import Encoder
from eddy.models.context import sane_request_id
from eddy.models.errors import MalformedRequest
from eddy.routers.ws.deflate import negotiated_encoder, server_deflate_factory
from eddy.routers.ws.keepalive import PING_FRAME, KeepaliveSweep, sweep_for

FrameCallback = Callable[[str | bytes], None]
# What uvicorn still reads of a detached connection's scope (its log lines).
_SCOPE_KEPT = {"type", "scheme", "server", "client", "root_path", "path", "query_string"}


class _NoQueue:
    """A detached connection's ASGI receive queue: nobody reads it any more."""

    def put_nowait(self, message: object) -> None:
        pass

    def empty(self) -> bool:
        return True


_NO_QUEUE = _NoQueue()

FAST_SEND = "eddy.fast_send"
HANDSHAKE_TIMEOUT = 5.0  # seconds from the upgrade to the app's accept or refusal


class FastSend:
    """Direct access to one WebSocket connection (scope["extensions"]["eddy.fast_send"])."""

    __slots__ = ("_encoder", "_gone", "_protocol")

    def __init__(self, protocol: EddyWebSocketProtocol) -> None:
        self._protocol = protocol
        self._gone = False  # `receive` has seen the disconnect
        self._encoder: Encoder | None = None

    @property
    def encoder(self) -> Encoder:
        """How records are framed for this connection (after the accept): compressed frames
        shared with every subscriber of the same permessage-deflate parameters, or plain ones."""
        if self._encoder is None:
            self._encoder = negotiated_encoder(self._protocol.conn.extensions)
        return self._encoder

    async def receive(self, limit: int) -> list[str | bytes]:
        """1 to `limit` client messages: every one already received, up to `limit` (waits for
        the first); [] once the client is gone. Instead of ASGI `receive` one message at a time
        (a task wake-up each). As in uvicorn's `receive`, reading the socket resumes only when
        every received message is taken, so a caller that takes fewer keeps the socket unread."""
        if self._gone:
            return []
        protocol = self._protocol
        queue = protocol.queue
        frames: list[str | bytes] = []
        message: Any = await queue.get()  # one of the ASGI receive events (TypedDicts)
        while True:
            if message["type"] == "websocket.disconnect":
                self._gone = True
                break
            text = message.get("text")
            frames.append(text if text is not None else message.get("bytes") or b"")
            if len(frames) >= limit or queue.empty():
                break
            message = queue.get_nowait()
        if protocol.read_paused and queue.empty():
            protocol.read_paused = False
            protocol.transport.resume_reading()
        return frames

    @property
    def open(self) -> bool:
        protocol = self._protocol
        return not (protocol.close_sent or protocol.disconnected)

    def write(self, frames: bytes) -> None:
        """Queue complete, unmasked server frames (after the app accepted the connection)."""
        protocol = self._protocol
        if protocol.pending is not None:  # the handshake's answer, held back to go with them
            frames, protocol.pending = protocol.pending + frames, None
        transport = protocol.transport
        if not (protocol.close_sent or protocol.disconnected or transport.is_closing()):
            transport.write(frames)

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel (the peer is not reading them)."""
        return self._protocol.transport.get_write_buffer_size()

    async def drained(self) -> None:
        """Return once the transport is below its high-water mark (at once if it is)."""
        await self._protocol.writable.wait()

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame now (behind what is queued) and start the closing handshake."""
        self._protocol.close_now(code, reason)

    def limit_send_buffer(self, size: int) -> None:
        """Cap the kernel's send buffer of this connection (SO_SNDBUF; it turns off the kernel's
        autotuning, which on loopback and fast links grows it to 4 MiB): what the peer has not
        taken then waits in `buffered()`, where the app can still conflate it."""
        sock = self._protocol.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def detach(self, on_frame: FrameCallback, on_gone: Callable[[], None]) -> None:
        """From now on the client's frames go to `on_frame` and the end of the connection (client
        close, lost connection, failed ping) to `on_gone`, called once; the app may return and
        the connection stays open. What arrived before is handed over first."""
        self._protocol.detach(on_frame, on_gone)


class _Writable:
    """`asyncio.Event` for the protocol's "transport is writable" flag, without the Event's
    preallocated waiter deque (about 0.8 KB per idle connection)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


class _Recorder:
    """Stands in for the transport while uvicorn writes the handshake's answer."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def json_refusal(response: Response, request_id: str) -> Response:
    """The `websockets` library's refusal of a handshake as a JSON error (400
    `malformed_request`, its text the message) carrying the request id."""
    message = bytes(response.body).decode("utf-8", "replace").strip()
    body = orjson.dumps(MalformedRequest(message).to_body())
    headers = Headers()
    for name, value in response.headers.raw_items():
        if name.lower() not in ("content-type", "content-length"):
            headers[name] = value
    headers["Content-Type"] = "application/json"
    headers["Content-Length"] = str(len(body))
    headers["X-Request-ID"] = request_id
    return Response(400, "Bad Request", headers, body)


class EddyWebSocketProtocol(WebSocketsSansIOProtocol):
    handshake_timeout = HANDSHAKE_TIMEOUT
    _handshake_timer: TimerHandle | None = None
    keepalive: KeepaliveSweep | None = None
    heard_at = 0.0
    ping_at: float | None = None
    pending: bytes | None = None  # the handshake's answer, not written yet
    _on_frame: FrameCallback | None = None
    _on_gone: Callable[[], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writable = _Writable()  # type: ignore[assignment]
        if self.conn.available_extensions:  # uvicorn's ws_per_message_deflate (on by default)
            # No context takeover, so compressed record frames can be shared (deflate.py).
            self.conn.available_extensions = [server_deflate_factory()]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._handshake_timer = self.loop.call_later(
            self.handshake_timeout, self._handshake_expired
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_handshake_timer()
        super().connection_lost(exc)
        self._gone()

    def flush(self) -> None:
        """Write the handshake's answer if it is still held back."""
        pending = self.pending
        if pending is not None:
            self.pending = None
            if not self.transport.is_closing():
                self.transport.write(pending)

    def handle_connect(self, event: Request) -> None:
        """uvicorn's, with an upgrade the `websockets` handshake refuses (no key, a wrong
        version...) answered in the contract's JSON shape with a request id, not plain text."""
        accept = self.conn.accept

        def accept_or_refuse(request: Request) -> Response:
            response = accept(request)
            if response.status_code == 101:
                return response
            headers = [
                (name.lower().encode("ascii"), value.encode("latin-1"))
                for name, value in request.headers.raw_items()
            ]
            return json_refusal(response, sane_request_id(headers))

        self.conn.accept = accept_or_refuse  # type: ignore[method-assign]
        try:
            super().handle_connect(event)
        finally:
            del self.conn.accept
        scope: Any = getattr(self, "scope", None)
        if scope is not None:  # a valid upgrade: the app runs (from the next loop step)
            scope["extensions"][FAST_SEND] = FastSend(self)

    def data_received(self, data: bytes) -> None:
        if self.pending is not None:  # whatever uvicorn answers goes after the 101
            self.flush()
        if self.keepalive is not None:
            self.heard_at = self.loop.time()  # the peer is alive: no ping needed for a while
        super().data_received(data)

    # --- keepalive (one sweep per server, see keepalive.py) ------------------------------------
    def start_keepalive(self) -> None:
        interval = self.ping_interval
        if interval is not None and interval > 0:
            sweep_for(self.loop, interval, self.ping_timeout or interval).add(self)

    def stop_keepalive(self) -> None:
        if self.keepalive is not None:
            self.keepalive.remove(self)

    def send_ping_frame(self) -> bool:
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return False
        self.flush()
        self.transport.write(PING_FRAME)
        return True

    # --- detached connections ------------------------------------------------------------------
    def detach(self, on_frame: FrameCallback, on_gone: Callable[[], None]) -> None:
        self._on_frame, self._on_gone = on_frame, on_gone
        queue = self.queue
        self.queue = _NO_QUEUE  # type: ignore[assignment]
        while not queue.empty():  # frames (or the disconnect) the app has not read
            message = queue.get_nowait()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                on_frame(text if text is not None else message.get("bytes") or b"")
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.disconnected:
            self.loop.call_soon(self._gone)
        # An idle connection should cost little: drop what only the handshake and the app's
        # call needed (the request and response, the app's additions to the scope).
        if getattr(self, "request", None) is not None:
            self.request.headers.clear()  # websockets' parser keeps the request alive
        self.request = self.response = None  # type: ignore[assignment]
        self.scope = {k: v for k, v in self.scope.items() if k in _SCOPE_KEPT}  # type: ignore[assignment]

    def _gone(self) -> None:
        on_gone, self._on_gone, self._on_frame = self._on_gone, None, None
        if on_gone is not None:
            on_gone()

    def send_receive_event_to_app(self) -> None:
        on_frame = self._on_frame
        if on_frame is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                on_frame(data.decode())
            except UnicodeDecodeError:  # RFC 6455: invalid UTF-8 in a text frame closes 1007
                self.conn.send_close(1007)
                self.handle_parser_exception()
        else:
            on_frame(data)

    async def run_asgi(self) -> None:
        """uvicorn's, except that a detached connection stays open when the app returns."""
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None and self._on_gone is None:
            self.flush()
            self.transport.close()

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self.handshake_complete and not self.transport.is_closing():
            self.logger.info("WebSocket handshake not completed in %.1f s", self.handshake_timeout)
            self.transport.close()

    def close_now(self, code: int, reason: str = "") -> None:
        """The close branch of uvicorn's `send`, without waiting for the buffer to drain."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.flush()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    def shutdown(self) -> None:
        self.flush()
        super().shutdown()

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "websocket.accept":
            self._cancel_handshake_timer()
            await self._accept(message)
            return
        self.flush()
        if (
            message["type"] == "websocket.close"
            and self.handshake_complete
            and self.initial_response is None
        ):
            # A close needs no room in the buffer; a second one (the fast path closed already)
            # is not an error.
            self.close_now(message.get("code", 1000), message.get("reason") or "")
            return
        await super().send(message)

    async def _accept(self, message: ASGISendEvent) -> None:
        """uvicorn's accept, with the answer held back until the app's first write or the end of
        this loop step, whichever comes first."""
        transport = self.transport
        recorder = _Recorder(transport)
        self.transport = recorder  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = transport
        if recorder.data:
            self.pending = b"".join(recorder.data)
            self.loop.call_soon(self.flush)

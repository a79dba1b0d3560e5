"""Eddy's WebSocket protocol class for uvicorn (`uvicorn_config` selects it with `ws=`).

It is uvicorn's sans-I/O implementation (timers for pings, no task of its own per connection)
with two additions:

- the `eddy.fast_send` ASGI extension: the app writes pre-built frame bytes straight to the
  connection's transport and reads its outgoing buffer size, with no await, task wake-up or
  framing per message. FastAPI still does the handshake, routing, dependencies and docs; only the
  hot path bypasses ASGI `send`. A close goes out at once, even while the peer is not reading
  (ASGI `send` would wait for the buffer to drain first, and a slow reader may never read).
- a handshake deadline: a connection whose upgrade the app has neither accepted nor refused
  within HANDSHAKE_TIMEOUT seconds is closed, so half-open upgrades cannot pile up.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

FAST_SEND = "eddy.fast_send"
HANDSHAKE_TIMEOUT = 5.0  # seconds from the upgrade to the app's accept or refusal


class FastSend:
    """Direct access to one WebSocket connection (scope["extensions"]["eddy.fast_send"])."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: EddyWebSocketProtocol) -> None:
        self._protocol = protocol

    @property
    def open(self) -> bool:
        protocol = self._protocol
        return not (protocol.close_sent or protocol.disconnected)

    def write(self, frames: bytes) -> None:
        """Queue complete, unmasked server frames (after the app accepted the connection)."""
        protocol = self._protocol
        if not (protocol.close_sent or protocol.disconnected):
            protocol.transport.write(frames)

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel (the peer is not reading them)."""
        return self._protocol.transport.get_write_buffer_size()

    async def drained(self) -> None:
        """Return once the transport is below its high-water mark (at once if it is)."""
        await self._protocol.writable.wait()

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame now (behind what is queued) and start the closing handshake."""
        self._protocol.close_now(code, reason)


class EddyWebSocketProtocol(WebSocketsSansIOProtocol):
    handshake_timeout = HANDSHAKE_TIMEOUT
    _handshake_timer: TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._handshake_timer = self.loop.call_later(
            self.handshake_timeout, self._handshake_expired
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_handshake_timer()
        super().connection_lost(exc)

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self.handshake_complete and not self.transport.is_closing():
            self.logger.info("WebSocket handshake not completed in %.1f s", self.handshake_timeout)
            self.transport.close()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None:  # a valid upgrade: the app runs (from the next loop step)
            scope["extensions"][FAST_SEND] = FastSend(self)

    def close_now(self, code: int, reason: str = "") -> None:
        """The close branch of uvicorn's `send`, without waiting for the buffer to drain."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "websocket.accept":
            self._cancel_handshake_timer()
        elif (
            message["type"] == "websocket.close"
            and self.handshake_complete
            and self.initial_response is None
        ):
            # A close needs no room in the buffer; a second one (the fast path closed already)
            # is not an error.
            self.close_now(message.get("code", 1000), message.get("reason") or "")
            return
        await super().send(message)

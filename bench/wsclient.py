"""A lean WebSocket subscriber client: an asyncio protocol that only reads.

Receiving tens of thousands of frames per second through a general client library costs about as
much CPU as the server spends sending them; on a small machine the load generator then takes CPU
the server needs (this client needs about a third less). It does the opening handshake, reads
unmasked server frames (fragmented or not), answers pings and closes, and hands each text message
to a callback straight from `data_received`. The `websockets` library client stays available
(`--ws-client websockets`)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, unfragmented client frame (control payloads are < 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class LeanSubscriber(asyncio.Protocol):
    def __init__(self, url: str, on_message: Callable[[bytes], None]) -> None:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._on_message = on_message
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()  # the close code
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._handshake_done = False
        self._fragments: list[bytes] = []
        self._close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self._close_code)

    def close(self, code: int = 1000) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_client_frame(OP_CLOSE, code.to_bytes(2, "big")))
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        if not self._handshake_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status_line + b" ":
                self.opened.set_exception(ConnectionError(status_line.decode(errors="replace")))
                self._abort()
                return
            del buf[: end + 4]
            self._handshake_done = True
            self.opened.set_result(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:  # servers must not mask; treat it as a protocol error
                self._abort()
                return
            end = pos + header + length
            if end > size:
                break
            payload = bytes(buf[pos + header : end])
            pos = end
            self._frame(b0 & 0x80 != 0, b0 & 0x0F, payload)
        if pos:
            del buf[:pos]

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if fin and not self._fragments:
                self._on_message(payload)
            else:
                self._fragments.append(payload)
                if fin:
                    message = b"".join(self._fragments)
                    self._fragments = []
                    self._on_message(message)
        elif opcode == OP_PING and transport is not None:
            transport.write(_client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if transport is not None and not transport.is_closing():
                transport.write(_client_frame(OP_CLOSE, payload[:2]))
                transport.close()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


async def open_lean(
    host: str, port: int, url: str, on_message: Callable[[bytes], None]
) -> LeanSubscriber:
    """Connect and complete the opening handshake (bound it with `asyncio.timeout`)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: LeanSubscriber(url, on_message), host, port)
    await protocol.opened
    return protocol

"""uvicorn's httptools protocol with a bounded request head.

Stock uvicorn buffers a request head without limit (httptools concatenates an unterminated header
line for as long as bytes arrive) and waits for it forever (its keep-alive timeout only covers a
connection that sends nothing after a response). So one client could fill the memory with one
endless header line, or the descriptor table with connections that send a byte a second. This
class adds, per connection:

- a size bound: bytes received while a head is incomplete, and the finished head's size and
  header count, are checked against `HeadLimits`; beyond them the answer is 431;
- a deadline: from connecting (or from the first byte of a later request's head) the whole head
  must arrive within `HeadLimits.timeout` seconds, else 408 (a connection that has sent nothing
  is closed silently, as nginx does, so browsers' idle pre-connections are not shown an error);
- WebSocket upgrades are refused with 431 when a line or the header count exceeds what the
  `websockets` handshake parser accepts (it would otherwise stall on them);
- HTTP/1.0 with Transfer-Encoding is refused with 400 (RFC 9112 6.1: the framing is unreliable).

Refusals use the contract's JSON error shape, half-close the connection and read (and drop)
whatever the client still sends for a moment before closing, so the client reads the answer
instead of a reset. The checks on the common path are a few attribute reads per request: the
exact head size is only computed when the bytes received could exceed the limit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from websockets.http11 import MAX_LINE_LENGTH as WS_MAX_LINE
from websockets.http11 import MAX_NUM_HEADERS as WS_MAX_HEADERS

from eddy.models.context import REQUEST_ID_HEADER, sane_request_id
from eddy.models.errors import EddyError, HeadersTooLarge, MalformedRequest, RequestTimeout

LINGER_SECONDS = 2.0  # how long a refused connection is drained before it is closed


@dataclass(frozen=True)
class HeadLimits:
    max_bytes: int = 65_536  # request line and headers together
    max_headers: int = 100
    timeout: float = 10.0  # seconds to receive a whole request head


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; `data_received` answers `error`."""

    def __init__(self, error: EddyError) -> None:
        super().__init__(error.message)
        self.error = error


def head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """Bytes of a request head as sent: request line and `name: value` CRLF lines."""
    return len(url) + 16 + sum(len(name) + len(value) + 4 for name, value in headers)


def websocket_head_problem(
    method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
) -> str | None:
    """Why the `websockets` handshake parser would not accept this upgrade request, if it
    would not: it limits each line (with its CRLF) and the number of headers."""
    if len(method) + len(url) + len(b"  HTTP/1.1\r\n") > WS_MAX_LINE:
        return f"the request line of a WebSocket upgrade is limited to {WS_MAX_LINE} bytes"
    if len(headers) > WS_MAX_HEADERS:
        return f"a WebSocket upgrade may have at most {WS_MAX_HEADERS} headers"
    for name, value in headers:
        if len(name) + len(value) + 4 > WS_MAX_LINE:
            return f"each header line of a WebSocket upgrade is limited to {WS_MAX_LINE} bytes"
    return None


def error_bytes(
    error: EddyError, default_headers: list[tuple[bytes, bytes]], request_id: str
) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = orjson.dumps(error.to_body())
    lines = [STATUS_LINE[error.http_status]]
    for name, value in default_headers:
        lines += [name, b": ", value, b"\r\n"]
    lines += [REQUEST_ID_HEADER, b": ", request_id.encode("ascii"), b"\r\n"]
    lines += [
        b"content-type: application/json\r\ncontent-length: ",
        str(len(body)).encode(),
        b"\r\nconnection: close\r\n\r\n",
        body,
    ]
    return b"".join(lines)


class EddyHttpProtocol(HttpToolsProtocol):
    """Select with `uvicorn.Config(http=http_protocol(limits))` (see app/server.py)."""

    limits: ClassVar[HeadLimits] = HeadLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # a request head has begun and is not complete yet
        self._head_bytes = 0  # bytes of it received in earlier reads
        self._chunk_bytes = 0  # size of the read being parsed
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    # --- connection -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()  # the client read our answer and hung up: done lingering

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # draining before the close: dropped unread
        self._unset_keepalive_if_required()
        was_in_head = self._in_head
        self._chunk_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.error)
            else:
                self._refuse(MalformedRequest("invalid HTTP request"))
            return
        if self._in_head:
            # Count the read if it was all head: it continued one, or it began the first
            # request of the connection. (A head that began after another request in the same
            # read is counted from the next read on: the bound is then one read larger.)
            if was_in_head or self.cycle is None:
                self._head_bytes += len(data)
                if self._head_bytes > self.limits.max_bytes:
                    self._refuse(self._too_large())
                    return
        elif self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered: no head is awaited from the client
        if self._head_timer is None:
            # A head has begun, or the client sent bytes between requests (which cancelled
            # the keep-alive timeout): the next head is due within the deadline.
            self._arm_head_timer()

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The connection belongs to the WebSocket protocol now. The parser holds this object's
        # bound methods as its callbacks, a reference cycle that only the cyclic collector would
        # free, about 25 objects per handshake: dropped here, the object goes at once. With
        # the collector off, 10,000 connects held 6 KB more per connection; with it on, the
        # time to connect them moved within the noise (4.6-5.5 s against 4.8-6.3 s).
        self._cancel_head_timer()
        del self.parser

    # --- parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        limits = self.limits
        parser = self.parser
        if (
            len(self.headers) > limits.max_headers
            or self._head_bytes + self._chunk_bytes > limits.max_bytes
            or parser.should_upgrade()
            or parser.get_http_version() == "1.0"
        ):
            self._check_head()  # the rare cases: may refuse
        super().on_headers_complete()

    def _check_head(self) -> None:
        """Raise `_Refused` if the complete head breaks a limit (the slow path, for heads that
        might: many headers, many bytes read, an upgrade, HTTP/1.0)."""
        headers = self.headers
        limits = self.limits
        parser = self.parser
        if len(headers) > limits.max_headers:
            raise _Refused(
                HeadersTooLarge(
                    f"a request may have at most {limits.max_headers} headers",
                    {"max_headers": limits.max_headers},
                )
            )
        if head_size(self.url, headers) > limits.max_bytes:
            raise _Refused(self._too_large())
        if parser.get_http_version() == "1.0" and any(
            name == b"transfer-encoding" for name, _ in headers
        ):
            raise _Refused(
                MalformedRequest("Transfer-Encoding is not allowed in an HTTP/1.0 request")
            )
        if parser.should_upgrade():
            problem = websocket_head_problem(parser.get_method(), self.url, headers)
            if problem is not None:
                raise _Refused(HeadersTooLarge(problem, {"max_line_bytes": WS_MAX_LINE}))

    # --- refusals ---------------------------------------------------------------------------
    def _too_large(self) -> HeadersTooLarge:
        limit = self.limits.max_bytes
        return HeadersTooLarge(
            f"the request head is limited to {limit} bytes", {"max_head_bytes": limit}
        )

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._in_head:  # nothing of a request was sent: no one to tell
            self.transport.close()
            return
        self._refuse(
            RequestTimeout(
                f"the request head was not received within {self.limits.timeout:g} s",
                {"head_timeout_seconds": self.limits.timeout},
            )
        )

    def _refuse(self, error: EddyError) -> None:
        """Answer `error` and close; parsing stops for good on this connection."""
        self._refused = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        transport = self.transport
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is under way (a pipelined request's head failed): an error cannot be
            # interleaved with it, so the connection just ends.
            self.cycle.keep_alive = False
            transport.close()
            return
        # The request id as the app would give it: the client's (if its header was parsed before
        # the refusal and is sane), else a new one, so that this answer too can be traced.
        request_id = sane_request_id(self.headers or ())
        transport.write(error_bytes(error, self.server_state.default_headers, request_id))
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's own 400 (e.g. an invalid upgrade), in the contract's JSON shape."""
        self._refuse(MalformedRequest(msg))


def http_protocol(limits: HeadLimits) -> type[EddyHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to these limits."""
    return type("EddyHttpProtocol", (EddyHttpProtocol,), {"limits": limits})

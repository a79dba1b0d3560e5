"""Per call (HTTP request or WebSocket upgrade): a request id, the request metrics and the
access log, in the app's outermost middleware, so the lean produce route and the WebSocket
fast path (which skip the other middleware) are covered too.

The request id is the client's `X-Request-ID` if it is sane (1-128 characters of letters,
digits and `._:/+=@-`), else a new one (32 hex digits: a random prefix per process and a
counter); it is sent back in the response's `X-Request-ID` header (also on a WebSocket's 101),
and every log line written while serving the call carries it (`models.context.current_call`,
read by the log filter).

The access log (`--access-log`, logger `eddy.access`, INFO) has one line per call when it
ends: method (`WS` for an upgrade), path without query string, status (101: upgraded), duration,
request id and principal (if authenticated). Never the query string or a header: the query
string is where browsers put a WebSocket's `?token=`. A WebSocket's line is written when the
ASGI call returns: once a subscription is set up (it then runs detached) or when a publishing
session ends; its duration is that of the call, and a session refused after the upgrade (an
error frame and a 44xx close) shows as 101, its reason in the audit log or the client's frame.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eddy.broker import Broker
from eddy.models.context import REQUEST_ID_HEADER, Call, current_call, sane_request_id

access = logging.getLogger("eddy.access")


def request_id_of(scope: Scope) -> str:
    """The client's sane X-Request-ID, else a new one."""
    return sane_request_id(scope["headers"])


def loggable_path(scope: Scope) -> str:
    """The request's path as sent, without its query string, printable."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        return str(scope["path"]).encode("unicode_escape").decode("ascii")
    path: str = raw.partition(b"?")[0].decode("ascii", "backslashreplace")
    return path


class RequestTelemetry:
    """The outermost middleware (see the module's docstring)."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":  # lifespan
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        call = Call(request_id_of(scope))
        echoed = (REQUEST_ID_HEADER, call.request_id.encode("ascii"))
        status = 500 if kind == "http" else 0  # 0: a WebSocket that ended before its handshake

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.accept":
                status = message.get("status", 101)
                message["headers"] = [*message.get("headers", ()), echoed]
            elif kind == "websocket.close" and status == 0:
                status = 403  # refused during the handshake
            elif kind == "websocket.http.response.start":  # an upgrade refused over HTTP
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        reset = current_call.set(call)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_call.reset(reset)
            self.finished(scope, call, status, started)

    def finished(self, scope: Scope, call: Call, status: int, started: float) -> None:
        """A call ended: its request metrics and access log line (`started`: perf_counter)."""
        seconds = time.perf_counter() - started
        if scope["type"] == "http":
            broker: Broker | None = scope.get("state", {}).get("broker")
            if broker is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                broker.metrics.observe_request(scope["method"], route, status, seconds)
        if self.access_log and access.isEnabledFor(logging.INFO):
            self._log(scope, call, status, seconds)

    @staticmethod
    def _log(scope: Scope, call: Call, status: int, seconds: float) -> None:
        method = scope["method"] if scope["type"] == "http" else "WS"
        path = loggable_path(scope)
        millis = round(seconds * 1000, 3)
        access.info(
            "%s %s %d %.1fms principal=%s",
            method,
            path,
            status,
            millis,
            call.principal or "-",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": millis,
                "principal": call.principal,
                "request_id": call.request_id,
            },
        )

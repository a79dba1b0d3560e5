"""Single-record and batch produce answered before the middleware stack.

`POST /v1/topics/{topic}/records` is the hottest request. Under `wrk -c32`, py-spy put about a
quarter of the event loop's time for one produce in the Starlette/FastAPI middleware stack and
its send wrappers (ServerErrorMiddleware, FastAPI's exception telemetry and body limit, Eddy's
telemetry, WebSocket fast path, gzip and request decoding, ExceptionMiddleware, the exit-stack
middleware and the router), none of which does anything for a plain produce. `LeanProduce`
sits outermost (the app's built middleware stack is wrapped in it) and answers such a request
itself: the same request id, request metrics and access log as `RequestTelemetry`, the same
errors through the app's own exception handlers, and the same response as the lean route.

Anything that needs a middleware goes the usual way: a `Content-Encoding` (RequestDecoding
decodes it) or an `Origin` when CORS is on. Tests that take `records.produce_route` out of the
routes (to compare with the documented route) take this path out too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from eddy.app.request_log import RequestTelemetry, request_id_of
from eddy.models.context import REQUEST_ID_HEADER, Call, current_call
from eddy.routers import records

Handler = Callable[[Request, Exception], Any]

_BODY = "http.response.body"


class LeanProduce:
    """The outermost ASGI app: plain produce requests here, everything else to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        handlers: Mapping[Any, Handler],
        telemetry: RequestTelemetry,
        cors: bool,
    ) -> None:
        self.app = app
        self.handlers = handlers
        self.telemetry = telemetry
        self.cors = cors
        self.route = records.produce_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self._plain(scope):
            await self.app(scope, receive, send)
            return
        match, child = self.route.matches(scope)
        if match is not Match.FULL:
            await self.app(scope, receive, send)
            return
        scope.update(child)
        await self._produce(scope, receive, send)

    def _plain(self, scope: Scope) -> bool:
        """No header asks for a middleware's work."""
        for name, _ in scope["headers"]:
            if name == b"content-encoding" or (self.cors and name == b"origin"):
                return False
        return True

    async def _produce(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        call = Call(request_id_of(scope))
        echoed = (REQUEST_ID_HEADER, call.request_id.encode("ascii"))
        status = 500
        reset = current_call.set(call)
        try:
            try:
                answer = await records.produce_answer(scope, receive)
            except Exception as exc:
                response = await self._error_response(scope, receive, exc)
                status = response.status_code
                response.raw_headers.append(echoed)
                await response(scope, receive, send)
                return
            status = 200
            await send(records.answer_start(answer, echoed))
            await send({"type": _BODY, "body": answer})
        finally:
            current_call.reset(reset)
            self.telemetry.finished(scope, call, status, started)

    async def _error_response(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """The app's handler's answer, found as Starlette's exception middleware would."""
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                response: Response = await handler(Request(scope, receive), exc)
                return response
        raise exc  # not reached: install_error_handlers has a handler for Exception


def install(app: Any, access_log: bool, cors: bool) -> None:
    """Wrap the app's middleware stack, when Starlette builds it (at the first request), in
    `LeanProduce`, unless the lean produce route has been taken out of the routes by then."""
    build = app.build_middleware_stack

    def build_with_lean_produce() -> ASGIApp:
        stack: ASGIApp = build()
        if records.produce_route not in app.router.routes or app.max_body_size is not None:
            return stack
        telemetry = RequestTelemetry(stack, access_log=access_log)
        return LeanProduce(stack, dict(app.exception_handlers), telemetry, cors)

    app.build_middleware_stack = build_with_lean_produce

"""The one place where exceptions become the contract's JSON error responses."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from eddy.broker.codec import safe_json
from eddy.broker.metrics import Transport
from eddy.models.errors import (
    EddyError,
    InvalidRequest,
    MethodNotAllowed,
    RouteNotFound,
)
from eddy.routers.ws.frames import closing

log = logging.getLogger("eddy.errors")

# nginx's "client closed request": what the request metrics count when the client left before
# its request was read. Never sent (no one is listening); not a server error.
CLIENT_CLOSED_REQUEST = 499


def _json(body: object, status: int) -> Response:
    return Response(safe_json(body), status_code=status, media_type="application/json")


def error_response(error: EddyError) -> Response:
    """The error's response: its status, body and headers, all from the error class."""
    response = _json(error.to_body(), error.http_status)
    response.headers.update(error.http_headers)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response


def _count_rejection(request: Request, code: str) -> None:
    broker = request.scope.get("state", {}).get("broker")
    if broker is not None:
        broker.count_rejection(code, Transport.REST)


def _rejected(request: Request, error: EddyError) -> Response:
    """The error's response, counted in the rejections metric."""
    _count_rejection(request, error.code)
    return error_response(error)


async def _eddy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EddyError)
    return _rejected(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", ""))} for err in exc.errors()
    ]
    where = ".".join(str(p) for p in problems[0]["loc"]) if problems else "request"
    message = f"{where}: {problems[0]['msg']}" if problems else "invalid request"
    return _rejected(request, InvalidRequest(message, {"errors": problems}))


async def _client_disconnected(request: Request, _: Exception) -> Response:
    log.debug("client left during %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI wraps body-reading errors in 400s
        return await _client_disconnected(request, exc.__cause__)
    if isinstance(exc.__cause__, EddyError):  # e.g. a compressed body that does not decode
        return error_response(exc.__cause__)
    if exc.status_code == 404:
        error: EddyError = RouteNotFound(f"no route {request.method} {request.url.path}")
    elif exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. not UTF-8)
        error = InvalidRequest(f"the request body cannot be parsed: {exc.detail}")
    elif exc.status_code == 405:
        allowed = allowed_methods(request.app.router.routes, request.scope)
        error = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}", {"allowed": allowed}
        )
        response = error_response(error)
        response.headers["Allow"] = ", ".join(allowed)
        return response
    else:  # any other 4xx Starlette raises (e.g. a malformed form): same shape, its status
        invalid = InvalidRequest(str(exc.detail))
        _count_rejection(request, invalid.code)
        return _json(invalid.to_body(), exc.status_code)
    return _rejected(request, error)


# The methods a 405's Allow header may list (Eddy serves no others).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """The methods some route serves at this path (RFC 9110 15.5.6: a 405 lists them in
    `Allow`). Starlette's own 405 names only the first matching route's methods, while Eddy
    serves e.g. GET, PATCH and DELETE of a topic from three routes, so each method is tried."""
    allowed = [
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    if "GET" in allowed and "HEAD" not in allowed:  # app/head.py answers HEAD for every GET
        allowed.insert(allowed.index("GET") + 1, "HEAD")
    return allowed


async def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    internal = EddyError("internal error")
    return _json(internal.to_body(), internal.http_status)


async def close_unmatched_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket to a path no WebSocket route serves: accepted, told why (an error frame,
    as every 44xx close is), closed with 4404. Starlette's default refuses the handshake with
    HTTP 403, which a browser cannot tell from an authorization failure."""
    websocket = WebSocket(scope, receive, send)
    close = closing(RouteNotFound(f"no WebSocket route {websocket.url.path[:200]}"), 0)
    assert close is not None and close.error is not None
    await websocket.accept()
    await websocket.send_text(close.error.decode())
    await websocket.close(close.code, close.reason)


def websocket_fallback(default: ASGIApp) -> ASGIApp:
    """The router's no-match handler: WebSockets as above, HTTP to `default` (a 404 error)."""

    async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await close_unmatched_websocket(scope, receive, send)
        else:
            await default(scope, receive, send)

    return fallback


def install_error_handlers(app: FastAPI) -> None:
    app.router.default = websocket_fallback(app.router.default)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(EddyError, _eddy_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

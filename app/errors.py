"""The one place where exceptions become the contract's JSON error responses."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.codec import safe_json
from models.errors import (
    EddyError,
    InvalidRequest,
    MethodNotAllowed,
    RateLimited,
    RouteNotFound,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("eddy.errors")


def _json(body: object, status: int) -> Response:
    return Response(safe_json(body), status_code=status, media_type="application/json")


def error_response(error: EddyError) -> Response:
    response = _json(error.to_body(), error.http_status)
    if isinstance(error, RateLimited | Unavailable) and error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    elif isinstance(error, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="eddy"'
    return response


async def _eddy_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, EddyError)
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", ""))} for err in exc.errors()
    ]
    where = ".".join(str(p) for p in problems[0]["loc"]) if problems else "request"
    message = f"{where}: {problems[0]['msg']}" if problems else "invalid request"
    return error_response(InvalidRequest(message, {"errors": problems}))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error: EddyError = RouteNotFound(f"no route {request.method} {request.url.path}")
    elif exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. not UTF-8)
        error = InvalidRequest(f"the request body cannot be parsed: {exc.detail}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    else:  # any other 4xx Starlette raises (e.g. a malformed form): same shape, its status
        return _json(
            {"error": {"code": "invalid_request", "message": str(exc.detail), "details": {}}},
            exc.status_code,
        )
    return error_response(error)


async def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return _json(
        {"error": {"code": "internal_error", "message": "internal error", "details": {}}}, 500
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EddyError, _eddy_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

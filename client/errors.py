"""The client's errors: one base class, `ClientError`, with the server's code, message and
details, and a subclass per family of HTTP status / WebSocket close code.

    ClientError                 (anything the client reports)
    ├── RequestRejected         400, 405, 413, 415, 416, 422, 431; close 4400, 1009
    │   └── OffsetOutOfRange    offset_out_of_range (details: log_start_offset, high_watermark)
    ├── Unauthorized            401; close 4401
    ├── Forbidden               403; close 4403
    ├── NotFound                404; close 4404 (topic_not_found, group_not_found, ...)
    ├── Conflict                409 (topic_exists, group_active, not_assigned, ...)
    │   └── OutOfOrderSequence  out_of_order_sequence (details: expected)
    ├── RateLimited             429; close 4429
    ├── Unavailable             503, 408; close 1001, 1011, 1012, 1013, 4408 (too slow)
    ├── ConnectionLost          the network: refused, cut (1006), timed out ("disconnected")
    └── Closed                  the subscription or publisher was closed by its owner

The server's own error class (`eddy.models.errors.EddyError`) is a different thing: it is
what the server raises; these are what a client receives.
"""

from __future__ import annotations

from typing import Any

# WebSocket closes after which reconnecting would fail the same way (eddy.js has the same list).
PERMANENT_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010, 4400, 4401, 4403, 4404})


class ClientError(Exception):
    """An error from the server (its `code`, `message` and `details`) or from the connection.

    `status` is the HTTP status when an HTTP answer said it, `close_code` the WebSocket close
    code when a close ended it, `request_id` the server's X-Request-ID for the request (quote
    it when asking the server's operators)."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        status: int | None = None,
        close_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.status = status
        self.close_code = close_code
        self.request_id = request_id

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else None
        if where is None and self.close_code is not None:
            where = f"WebSocket close {self.close_code}"
        return f"{self.message} ({self.code}{f', {where}' if where else ''})"

    @property
    def permanent(self) -> bool:
        """Whether trying again would fail the same way."""
        return not isinstance(self, RateLimited | Unavailable | ConnectionLost)


class RequestRejected(ClientError):
    """The request itself is wrong (bad parameters, too large, out of range)."""


class OffsetOutOfRange(RequestRejected):
    pass


class Unauthorized(ClientError):
    pass


class Forbidden(ClientError):
    pass


class NotFound(ClientError):
    pass


class Conflict(ClientError):
    pass


class OutOfOrderSequence(Conflict):
    pass


class RateLimited(ClientError):
    pass


class Unavailable(ClientError):
    pass


class ConnectionLost(ClientError):
    pass


class Closed(ClientError):
    pass


_BY_CODE: dict[str, type[ClientError]] = {
    "invalid_request": RequestRejected,
    "malformed_request": RequestRejected,
    "headers_too_large": RequestRejected,
    "record_too_large": RequestRejected,
    "payload_too_large": RequestRejected,
    "unsupported_media_type": RequestRejected,
    "method_not_allowed": RequestRejected,
    "not_found": NotFound,
    "topic_not_found": NotFound,
    "partition_not_found": NotFound,
    "group_not_found": NotFound,
    "topic_exists": Conflict,
    "group_active": Conflict,
    "not_assigned": Conflict,
    "topic_limit_reached": Conflict,
    "offset_out_of_range": OffsetOutOfRange,
    "out_of_order_sequence": OutOfOrderSequence,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "rate_limited": RateLimited,
    "unavailable": Unavailable,
    "request_timeout": Unavailable,
    "disconnected": ConnectionLost,
    "closed": Closed,
}
_BY_STATUS: dict[int, type[ClientError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: Unavailable,
    409: Conflict,
    429: RateLimited,
}
_BY_CLOSE: dict[int, type[ClientError]] = {
    4401: Unauthorized,
    4403: Forbidden,
    4404: NotFound,
    4429: RateLimited,
}


def error_class(
    code: str, status: int | None = None, close_code: int | None = None
) -> type[ClientError]:
    """The most specific class for a server error: by code, else by status or close code."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status is not None:
        if status in _BY_STATUS:
            return _BY_STATUS[status]
        return Unavailable if status >= 500 else RequestRejected
    if close_code is not None:
        if close_code in _BY_CLOSE:
            return _BY_CLOSE[close_code]
        return RequestRejected if close_code in PERMANENT_CLOSE_CODES else Unavailable
    if code.endswith("_not_found"):
        return NotFound
    return ClientError


def server_error(
    body: Any,
    *,
    status: int | None = None,
    close_code: int | None = None,
    request_id: str | None = None,
    fallback: str = "",
) -> ClientError:
    """The ClientError for an error body (`{"error": {...}}`) or an error frame (`{"type":
    "error", "code": ...}`); `fallback` is the message when the body says nothing usable."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        code = f"http_{status}" if status is not None else f"close_{close_code}"
        cls = error_class(code, status, close_code)
        return cls(
            code, fallback or code, status=status, close_code=close_code, request_id=request_id
        )
    code = error["code"]
    details = error.get("details")
    cls = error_class(code, status, close_code)
    return cls(
        code,
        str(error.get("message", "")),
        details if isinstance(details, dict) else {},
        status=status,
        close_code=close_code,
        request_id=request_id,
    )

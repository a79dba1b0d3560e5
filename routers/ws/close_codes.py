"""The one table from why a session ended to its WebSocket close code (the HTTP statuses of the
same errors are in app/errors.py). 44xx mirror the HTTP statuses; each is preceded by an error
frame saying why (contract, ../shared/API.md)."""

from __future__ import annotations

from eddy.broker.events import End, SessionEnd
from eddy.models.errors import (
    EddyError,
    Forbidden,
    GroupActive,
    GroupNotFound,
    InvalidRequest,
    MethodNotAllowed,
    NotAssigned,
    OffsetOutOfRange,
    OutOfOrderSequence,
    PartitionNotFound,
    PayloadTooLarge,
    RateLimited,
    RecordTooLarge,
    RouteNotFound,
    TopicExists,
    TopicLimitReached,
    TopicNotFound,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)

CLOSE_GOING_AWAY = 1001
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_TOO_SLOW = 4408

# The lookup walks the error's class hierarchy: a subclass not listed takes its parent's code.
ERROR_CLOSE_CODES: dict[type[EddyError], int] = {
    EddyError: CLOSE_INTERNAL_ERROR,
    InvalidRequest: CLOSE_BAD_REQUEST,
    PartitionNotFound: CLOSE_BAD_REQUEST,
    RouteNotFound: 4404,  # no WebSocket route at that path
    MethodNotAllowed: CLOSE_BAD_REQUEST,
    TopicExists: CLOSE_BAD_REQUEST,
    TopicLimitReached: CLOSE_BAD_REQUEST,
    GroupNotFound: CLOSE_BAD_REQUEST,
    GroupActive: CLOSE_BAD_REQUEST,
    NotAssigned: CLOSE_BAD_REQUEST,
    OutOfOrderSequence: CLOSE_BAD_REQUEST,
    OffsetOutOfRange: CLOSE_BAD_REQUEST,
    RecordTooLarge: CLOSE_BAD_REQUEST,
    UnsupportedMediaType: CLOSE_BAD_REQUEST,
    TopicNotFound: 4404,
    Unauthorized: 4401,
    Forbidden: 4403,
    RateLimited: 4429,
    PayloadTooLarge: CLOSE_MESSAGE_TOO_BIG,
    Unavailable: CLOSE_INTERNAL_ERROR,
}

END_CLOSE_CODES: dict[SessionEnd, int] = {
    SessionEnd.TOO_SLOW: CLOSE_TOO_SLOW,
    SessionEnd.SHUTDOWN: CLOSE_GOING_AWAY,
}


# The short close reason of endings that are not errors (an error's reason is its message).
END_REASONS: dict[SessionEnd, str] = {
    SessionEnd.TOO_SLOW: "consumer too slow",
    SessionEnd.SHUTDOWN: "server shutting down",
}
MAX_REASON_BYTES = 123  # RFC 6455 section 5.5: a control frame's payload is at most 125 bytes


def close_reason(end: End) -> str:
    """The close frame's short human-readable reason for how a session ended."""
    if isinstance(end, SessionEnd):
        return END_REASONS[end]
    if end is None:
        return ""
    reason = end.message.encode()[:MAX_REASON_BYTES]
    return reason.decode(errors="ignore")  # cut at a character boundary


def close_code(end: End) -> int | None:
    """The close code for how a session ended (None: the client left, nothing to send)."""
    if end is None:
        return None
    if isinstance(end, SessionEnd):
        return END_CLOSE_CODES[end]
    return error_close_code(end)


def error_close_code(error: EddyError) -> int:
    for cls in type(error).__mro__:
        code = ERROR_CLOSE_CODES.get(cls)
        if code is not None:
            return code
    return CLOSE_INTERNAL_ERROR

"""Why a session ended, as its WebSocket close code: an error's code is the error class's own
(`ws_close_code`, models/errors.py, beside its HTTP status); the endings that are not errors are
listed here. 44xx mirror the HTTP statuses; each is preceded by an error frame saying why
(contract, ../shared/API.md)."""

from __future__ import annotations

from eddy.broker import End, SessionEnd
from eddy.models.errors import CLOSE_INTERNAL_ERROR, CLOSE_MESSAGE_TOO_BIG, EddyError

__all__ = ["CLOSE_INTERNAL_ERROR", "CLOSE_MESSAGE_TOO_BIG", "close_code", "close_reason"]

CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOO_SLOW = 4408

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
    return error.ws_close_code

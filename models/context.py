"""The call being served: its request id and, once known, who makes it.

The transport's outermost middleware sets `current_call` for each HTTP request and WebSocket
upgrade; the broker fills in the principal when it authenticates the caller, and the log
filter adds the request id to every line logged while serving the call. A mutable object in a
context variable (rather than one variable per field) so that a value set deeper down (in a
copied context, say) is still seen by the middleware that logs the call at its end.

The request id is the client's `X-Request-ID` if it is sane, else a new one (`sane_request_id`):
the HTTP layer, the request log and the WebSocket handshake's refusals all use the same rule.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class Call:
    request_id: str
    principal: str | None = None


current_call: ContextVar[Call | None] = ContextVar("eddy_current_call", default=None)

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")
# New ids: 16 random hex digits per process, then a counter (16 hex digits): unique without a
# random draw (a system call) per request.
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)


def sane_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The sane X-Request-ID among these headers (lower-case names), else a new id. Also used
    by the HTTP protocol layer and the WebSocket handshake for the errors they send before any
    app sees the request."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.fullmatch(value):
                given: str = value.decode("ascii")
                return given
            break
    return f"{_ID_PREFIX}{next(_ids):016x}"

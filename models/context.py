"""The call being served: its request id and, once known, who makes it.

The transport's outermost middleware sets `current_call` for each HTTP request and WebSocket
upgrade; the broker fills in the principal when it authenticates the caller, and the log
filter adds the request id to every line logged while serving the call. A mutable object in a
context variable (rather than one variable per field) so that a value set deeper down (in a
copied context, say) is still seen by the middleware that logs the call at its end.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class Call:
    request_id: str
    principal: str | None = None


current_call: ContextVar[Call | None] = ContextVar("eddy_current_call", default=None)

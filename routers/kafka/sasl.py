"""SASL/PLAIN over the Kafka protocol (SaslHandshake v1, then SaslAuthenticate): the password is
an Eddy API key (or a JWT), checked by the same access policy as the REST API's bearer tokens;
the user name is not checked (the key names its principal). A connection that does not
authenticate is anonymous, with the auth file's [anonymous] grants, as over HTTP.

PLAIN sends the key as it is: use it on a loopback listener (or behind a TLS-terminating
proxy). Only SaslHandshake v1 is spoken: v0's bare, unframed tokens are a pre-2017 form.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from kio.schema.errors import ErrorCode

from eddy.models.errors import EddyError
from eddy.routers.kafka.messages import Request
from eddy.routers.kafka.session import Session

MECHANISMS = ("PLAIN",)


async def handshake(session: Session, request: Request) -> dict[str, Any]:
    mechanism = request.body.mechanism
    if mechanism not in MECHANISMS:
        return {"error_code": ErrorCode.unsupported_sasl_mechanism, "mechanisms": MECHANISMS}
    session.sasl_mechanism = mechanism
    return {"error_code": ErrorCode.none, "mechanisms": MECHANISMS}


def _refused(message: str) -> dict[str, Any]:
    return {
        "error_code": ErrorCode.sasl_authentication_failed,
        "error_message": message,
        "auth_bytes": b"",
    }


async def authenticate(session: Session, request: Request) -> dict[str, Any]:
    if session.sasl_mechanism is None:
        return {
            "error_code": ErrorCode.illegal_sasl_state,
            "error_message": "SaslHandshake first",
            "auth_bytes": b"",
        }
    session.sasl_mechanism = None  # one authentication per handshake
    parts = bytes(request.body.auth_bytes).split(b"\0")
    if len(parts) != 3:
        return _refused("PLAIN expects authzid NUL username NUL password")
    try:
        password = parts[2].decode("utf-8")
    except UnicodeDecodeError:
        return _refused("the password is not UTF-8")
    try:
        principal = await session.broker.authenticate(password)
    except EddyError:
        return _refused("invalid credentials")
    if not principal.authenticated:
        return _refused("credentials required")
    session.principal = principal
    lifetime = datetime.timedelta(0)
    if principal.expires_at is not None:  # a JWT: clients re-authenticate before it expires
        lifetime = datetime.timedelta(seconds=max(principal.expires_at - time.time(), 0))
    return {"error_code": ErrorCode.none, "auth_bytes": b"", "session_lifetime": lifetime}

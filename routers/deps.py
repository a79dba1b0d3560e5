"""Dependencies: the broker the lifespan created, and the caller, typed for the endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from eddy.broker import Broker, Principal


async def get_broker(conn: HTTPConnection) -> Broker:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, which would cost
    # a thread hand-off on every request for a dictionary lookup.
    broker: Broker = conn.state.broker
    return broker


def bearer_token_of(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def bearer_token(conn: HTTPConnection, allow_query: bool = False) -> str | None:
    """`Authorization: Bearer <token>`; WebSockets may pass `?token=` instead (browsers cannot
    set headers on a WebSocket)."""
    token = bearer_token_of(conn.headers.get("authorization", ""))
    if token is not None:
        return token
    return conn.query_params.get("token") if allow_query else None


# The HTTP routes' credentials, as FastAPI's security scheme: the OpenAPI document then declares
# it on exactly the operations that identify their caller (Swagger UI's Authorize button).
# auto_error=False: no credentials is anonymous access, which the auth file may allow.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="API key or JWT",
    description="`Authorization: Bearer <API key or JWT>` (see Access control in the README). "
    "Only needed when the server runs with `--auth-file`; a request without credentials has "
    "the auth file's `[anonymous]` permissions.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


async def get_principal(conn: HTTPConnection, credentials: Credentials) -> Principal:
    broker: Broker = conn.state.broker
    return await broker.authenticate(None if credentials is None else credentials.credentials)


NAME_PATTERN = r"^[a-zA-Z0-9._-]+$"
NAME_RULE = "1-249 characters of [a-zA-Z0-9._-], not '.' or '..' (Kafka's rule)"
# The rule is documented in the schema but checked by the broker, whose 422 says it plainly.
NAME_SCHEMA = {"pattern": NAME_PATTERN, "minLength": 1, "maxLength": 249}
TopicPath = Annotated[str, Path(description=NAME_RULE, json_schema_extra=NAME_SCHEMA)]
GroupPath = Annotated[str, Path(description=NAME_RULE, json_schema_extra=NAME_SCHEMA)]

BrokerDep = Annotated[Broker, Depends(get_broker)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]

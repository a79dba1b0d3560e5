"""The WebSocket transport: subscribe (records pushed live) and publish (records in, acks out).

FastAPI routes the upgrade and resolves the dependencies; `session.py` drives the session over
Eddy's protocol class (`protocol.py`), whose fast path writes the frames `frames.py` builds once.
Query strings are parsed in `params.py`; `close_codes.py` is the one table of close codes. The
frames are described in openapi/asyncapi.yaml.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from starlette.routing import Match, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from eddy.broker import Broker
from eddy.models.errors import EddyError
from eddy.routers.ws.params import parse_publish_params, parse_subscribe_params
from eddy.routers.ws.session import WebSocketSession, client_address, incoming_frames

router = APIRouter(tags=["websocket"])

# The kernel send buffer of an on_slow=conflate subscriber (bytes; the kernel doubles it for its
# bookkeeping). It caps throughput at about this much per round trip: 64 KiB per 100 ms is
# 640 KB/s, plenty for a ticker; what waits in the kernel cannot be conflated any more.
CONFLATE_SEND_BUFFER = 64 * 1024


def _broker(websocket: WebSocket) -> Broker:
    broker: Broker = websocket.state.broker  # set by the lifespan
    return broker


async def subscribe(websocket: WebSocket) -> None:
    """Stream a topic's records: `subscribed` frame, stored records, then live ones. A plain
    subscription runs without a task once started; a group member keeps this one (it awaits
    its commits)."""
    topic: str = websocket.path_params["topic"]
    broker = _broker(websocket)
    session = await WebSocketSession.accept(websocket, broker, "subscribe")
    if session is None:
        return
    try:
        principal = await session.authenticate()
        params = parse_subscribe_params(dict(websocket.query_params))
    except EddyError as exc:
        session.end(exc)
        return
    if params.on_slow == "conflate":
        # Unsent data must wait where it can be conflated, not in a kernel buffer of megabytes.
        session.fast.limit_send_buffer(CONFLATE_SEND_BUFFER)
    connection = session.connection
    if params.group is None:
        await session.run_detached(
            principal,
            lambda on_end: broker.open_subscription(topic, params, connection, principal, on_end),
        )
    else:
        incoming = incoming_frames(websocket)
        client = client_address(websocket)
        await session.run(
            principal, broker.subscribe(topic, params, connection, incoming, client, principal)
        )


async def publish(websocket: WebSocket) -> None:
    """Publish records, one JSON object per frame; each gets an ack or error, in order."""
    topic: str = websocket.path_params["topic"]
    broker = _broker(websocket)
    session = await WebSocketSession.accept(websocket, broker, "publish")
    if session is None:
        return
    try:
        principal = await session.authenticate()
        producer_id = parse_publish_params(dict(websocket.query_params))
    except EddyError as exc:
        session.end(exc)
        return
    await session.run(
        principal, broker.publish(topic, producer_id, session.connection, session.fast, principal)
    )


# Plain Starlette routes inside FastAPI's router: the handshake skips dependency resolution,
# which was a large part of its cost (phones reconnect in herds). WebSocket routes are not in
# the OpenAPI document either way; openapi/asyncapi.yaml describes them.
ROUTES = [
    WebSocketRoute("/v1/topics/{topic}/ws", subscribe, name="subscribe"),
    WebSocketRoute("/v1/topics/{topic}/publish", publish, name="publish"),
]
router.routes += ROUTES


async def dispatch(scope: Scope, receive: Receive, send: Send) -> bool:
    """Serve a WebSocket upgrade to a streaming route directly, without the app's other
    middleware (CORS concerns HTTP only; the outermost one, app/request_log.py, still gives it
    a request id and an access-log line) and the scan of every route: a herd of phones
    reconnecting after a network blip pays for each handshake. The endpoints do their own
    origin and credential checks and handle their errors. False: not one of these paths (the
    app routes it, and refuses unknown ones)."""
    for route in ROUTES:
        match, child_scope = route.matches(scope)
        if match is Match.FULL:
            scope.update(child_scope)
            await route.endpoint(WebSocket(scope, receive, send))
            return True
    return False


class WebSocketFastPath:
    """The app's outermost middleware: streaming upgrades go straight to `dispatch`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and await dispatch(scope, receive, send):
            return
        await self.app(scope, receive, send)

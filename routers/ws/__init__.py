"""The WebSocket transport: subscribe (records pushed live) and publish (records in, acks out).

FastAPI routes the upgrade and resolves the dependencies; `session.py` drives the session over
Eddy's protocol class (`protocol.py`), whose fast path writes the frames `frames.py` builds once.
Query strings are parsed in `params.py`; `close_codes.py` is the one table of close codes. The
frames are described in openapi/asyncapi.yaml.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from broker.access import Principal
from broker.events import End
from routers.deps import BrokerDep
from routers.ws.params import parse_publish_params, parse_subscribe_params
from routers.ws.session import WebSocketConnection, client_address, incoming_frames, run_session

router = APIRouter(tags=["websocket"])


@router.websocket("/v1/topics/{topic}/ws")
async def subscribe(websocket: WebSocket, topic: str, broker: BrokerDep) -> None:
    """Stream a topic's records: `subscribed` frame, stored records, then live ones."""
    query = dict(websocket.query_params)

    async def session(principal: Principal, connection: WebSocketConnection) -> End:
        params = parse_subscribe_params(query)
        return await broker.subscribe(
            topic,
            params,
            connection,
            incoming_frames(websocket),
            client_address(websocket),
            principal,
        )

    await run_session(websocket, broker, "subscribe", session)


@router.websocket("/v1/topics/{topic}/publish")
async def publish(websocket: WebSocket, topic: str, broker: BrokerDep) -> None:
    """Publish records, one JSON object per frame; each gets an ack or error, in order."""
    query = dict(websocket.query_params)

    async def session(principal: Principal, connection: WebSocketConnection) -> End:
        producer_id = parse_publish_params(query)
        return await broker.publish(
            topic, producer_id, connection, incoming_frames(websocket), principal
        )

    await run_session(websocket, broker, "publish", session)

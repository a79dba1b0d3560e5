"""WebSocket endpoints: subscribe (records pushed live) and publish (records in, acks out).

Their frames are described in openapi/asyncapi.yaml.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, WebSocket

from broker import Broker
from broker.codec import control_frame
from models.errors import EddyError
from routers.deps import BrokerDep

router = APIRouter(tags=["websocket"])

CLOSE_TRY_AGAIN_LATER = 1013


async def incoming_frames(websocket: WebSocket) -> AsyncIterator[str | bytes]:
    """The client's frames (text or binary) until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        yield text if text is not None else message.get("bytes") or b""


async def run_session(
    websocket: WebSocket,
    broker: Broker,
    endpoint: str,
    session: Callable[[], Awaitable[int | None]],
) -> None:
    """Accept, run the session, and close with the code it (or its error) chose."""
    await websocket.accept()
    if not broker.open_websocket():
        with contextlib.suppress(Exception):
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "too many connections; retry later")
        return
    gauge = broker.metrics.websockets_open.labels(endpoint)
    gauge.inc()
    try:
        try:
            close_code = await session()
        except EddyError as exc:  # refused before it started (bad parameters, no such topic)
            await websocket.send_text(control_frame(exc.to_frame()))
            close_code = exc.ws_close_code
        if close_code is not None:
            with contextlib.suppress(Exception):  # the client may be gone already
                await websocket.close(close_code)
    except Exception:  # the client vanished mid-handshake or mid-send: nothing to tell it
        pass
    finally:
        gauge.dec()
        broker.websocket_closed()


def client_address(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "unknown"


@router.websocket("/v1/topics/{topic}/ws")
async def subscribe(websocket: WebSocket, topic: str, broker: BrokerDep) -> None:
    """Stream a topic's records: `subscribed` frame, stored records, then live ones."""
    query = dict(websocket.query_params)
    await run_session(
        websocket,
        broker,
        "subscribe",
        lambda: broker.subscribe(
            topic, query, websocket, incoming_frames(websocket), client_address(websocket)
        ),
    )


@router.websocket("/v1/topics/{topic}/publish")
async def publish(websocket: WebSocket, topic: str, broker: BrokerDep) -> None:
    """Publish records, one JSON object per frame; each gets an ack or error, in order."""
    await run_session(
        websocket,
        broker,
        "publish",
        lambda: broker.publish(
            topic, dict(websocket.query_params), websocket, incoming_frames(websocket)
        ),
    )

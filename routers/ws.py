"""WebSocket endpoints: subscribe (records pushed live) and publish (records in, acks out).

Their frames are described in openapi/asyncapi.yaml.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, WebSocket

from broker import Broker
from broker.access import Principal
from broker.codec import control_frame
from models.errors import EddyError, Unauthorized
from routers.deps import BrokerDep, bearer_token

router = APIRouter(tags=["websocket"])

CLOSE_TRY_AGAIN_LATER = 1013
Session = Callable[[Principal], Coroutine[Any, Any, int | None]]


async def incoming_frames(websocket: WebSocket) -> AsyncIterator[str | bytes]:
    """The client's frames (text or binary) until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        yield text if text is not None else message.get("bytes") or b""


async def run_session(
    websocket: WebSocket, broker: Broker, endpoint: str, session: Session
) -> None:
    """Accept, check who is calling, run the session, and close with the code it (or its
    error) chose. Errors are sent as a frame before the close because browsers cannot see the
    HTTP status of a refused upgrade."""
    await websocket.accept()
    if not broker.open_websocket():
        with contextlib.suppress(Exception):
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "too many connections; retry later")
        return
    gauge = broker.metrics.websockets_open.labels(endpoint)
    gauge.inc()
    try:
        try:
            broker.check_origin(websocket.headers.get("origin"), websocket.headers.get("host"))
            principal = broker.access.authenticate(bearer_token(websocket, allow_query=True))
            close_code = await _run_while_authorized(broker, principal, session)
        except EddyError as exc:  # refused (bad parameters, no such topic, credentials)
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


async def _run_while_authorized(
    broker: Broker, principal: Principal, session: Session
) -> int | None:
    """Run the session; end it with 4401 if the credentials expire or are revoked meanwhile."""
    running = asyncio.create_task(session(principal))
    watchdog = asyncio.create_task(broker.watch_credentials(principal))
    try:
        await asyncio.wait({running, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            return running.result()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        raise Unauthorized("credentials expired or revoked")
    finally:
        watchdog.cancel()
        running.cancel()


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
        lambda principal: broker.subscribe(
            topic,
            query,
            websocket,
            incoming_frames(websocket),
            client_address(websocket),
            principal,
        ),
    )


@router.websocket("/v1/topics/{topic}/publish")
async def publish(websocket: WebSocket, topic: str, broker: BrokerDep) -> None:
    """Publish records, one JSON object per frame; each gets an ack or error, in order."""
    await run_session(
        websocket,
        broker,
        "publish",
        lambda principal: broker.publish(
            topic, dict(websocket.query_params), websocket, incoming_frames(websocket), principal
        ),
    )

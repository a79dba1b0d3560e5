"""Baseline for fan-out: a minimal `websockets` broadcast server (no storage, no durability).

    python -m bench.ws_broadcast --port 8765

- `/sub`: a subscriber; gets a `subscribed` frame, then every published record.
- `/publish`: each text frame is a record object as in Eddy's publish endpoint; the server wraps
  its value in a record frame shaped like Eddy's (encoded once), hands it to
  `websockets.asyncio.server.broadcast` for every subscriber, then acks it.
- `GET /healthz`: 200 (readiness, as with Eddy).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from http import HTTPStatus

import orjson
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bench.common import run_async

SUBSCRIBERS: set[ServerConnection] = set()
SUBSCRIBED = orjson.dumps({"type": "subscribed", "partitions": {"0": {"offset": 0}}}).decode()


def health(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


async def handler(connection: ServerConnection) -> None:
    path = connection.request.path if connection.request else ""
    if path.startswith("/sub"):
        await connection.send(SUBSCRIBED)
        SUBSCRIBERS.add(connection)
        try:
            await connection.wait_closed()
        finally:
            SUBSCRIBERS.discard(connection)
    elif path.startswith("/publish"):
        with contextlib.suppress(ConnectionClosed):  # the publisher may leave before its acks
            await publish(connection)
    else:
        await connection.close(4404, "unknown path")


async def publish(connection: ServerConnection) -> None:
    offset = 0
    async for message in connection:
        record = orjson.loads(message)
        timestamp = time.time_ns() // 1_000_000
        frame = {
            "type": "record",
            "topic": "fanout",
            "partition": 0,
            "offset": offset,
            "timestamp": timestamp,
            "key": record.get("key"),
            "value": record.get("value"),
            "headers": {},
        }
        broadcast(SUBSCRIBERS, orjson.dumps(frame).decode())
        ack = {"type": "ack", "partition": 0, "offset": offset, "timestamp": timestamp}
        await connection.send(orjson.dumps(ack).decode())
        offset += 1


async def main(port: int) -> None:
    server: Server
    async with serve(  # compression is offered, but the benchmark clients do not ask for it
        handler, "127.0.0.1", port, process_request=health, max_size=None, backlog=2048
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop quietly when the runner is done
    run_async(main(args.port))  # uvloop, the event loop uvicorn picks for Eddy

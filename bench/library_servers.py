"""Servers for `bench.library_peers`: what other well-kept libraries can do in Eddy's place.

    python -m bench.library_servers KIND --port N

KIND is one of
- `ack-websockets`, `ack-asgi`, `ack-picows`: the least a publish socket can do. Each text frame
  is parsed as JSON and answered at once with an ack frame shaped like Eddy's (no storage), by
  websockets' own asyncio server, by a raw ASGI app on uvicorn (the same uvicorn + websockets
  protocol Eddy runs on), and by picows (a Cython WebSocket implementation with its own
  transport);
- `idle-picows`: picows holding idle subscribers: one "subscribed" frame on connect, like Eddy,
  and a ping after 20 s of silence, like Eddy's default;
- `eddy-granian`: Eddy's ASGI app (as `eddy serve --sync full` builds it, objects frozen after
  start-up) for granian, with the data dir in `EDDY_DATA`; not a KIND for this command but the
  app `granian --interface asgi bench.library_servers:eddy_granian_app` serves.

picows and granian come with `pip install -e '.[bench]'`; they are benchmark peers only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import uvloop

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

SUBSCRIBED = b'{"type":"subscribed","topic":"idle","partitions":[0]}'
PING_AFTER_SECONDS = 20.0  # Eddy's default --ws-ping-interval


class Acker:
    """Parses a record frame and builds its ack, as a publish socket must at the least."""

    def __init__(self) -> None:
        self.offset = 0

    def ack(self, frame: bytes) -> bytes:
        record = orjson.loads(frame)
        self.offset += 1
        return orjson.dumps(
            {
                "type": "ack",
                "id": record.get("id"),
                "partition": 0,
                "offset": self.offset,
                "timestamp": time.time_ns() // 1_000_000,
            }
        )


def ready(port: int) -> None:
    print(f"library peer listening on 127.0.0.1:{port} (pid {os.getpid()})", flush=True)


async def ack_websockets(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    acker = Acker()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            data = message if isinstance(message, bytes) else message.encode()
            await ws.send(acker.ack(data).decode())

    async with serve(handler, "127.0.0.1", port, compression=None):
        ready(port)
        await asyncio.Future()


def ack_asgi(port: int) -> None:
    import uvicorn

    acker = Acker()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            data = message.get("bytes") or message["text"].encode()
            await send({"type": "websocket.send", "text": acker.ack(data).decode()})

    ready(port)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets")


async def picows_server(port: int, idle: bool) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    acker = Acker()

    class Listener(WSListener):  # type: ignore[misc,unused-ignore]  # Any without picows
        def on_ws_connected(self, transport: WSTransport) -> None:
            if idle:
                transport.send(WSMsgType.TEXT, SUBSCRIBED)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                transport.send(WSMsgType.TEXT, acker.ack(frame.get_payload_as_bytes()))
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await ws_create_server(
        lambda _request: Listener(),
        "127.0.0.1",
        port,
        backlog=4096,
        enable_auto_ping=idle,
        auto_ping_idle_timeout=PING_AFTER_SECONDS,
    )
    ready(port)
    await server.serve_forever()


def _eddy_for_granian() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    from eddy.app.factory import create_app
    from eddy.app.server import GIL_SWITCH_SECONDS
    from eddy.app.settings import Settings

    sys.setswitchinterval(GIL_SWITCH_SECONDS)  # as EddyServer sets it
    app = create_app(Settings(data_dir=Path(os.environ["EDDY_DATA"]), sync="full"))

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_then_freeze(message: MutableMapping[str, Any]) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":  # as `eddy serve` does
                gc.collect()
                gc.freeze()

        await app(scope, receive, send_then_freeze)

    return served


def __getattr__(name: str) -> Any:  # the app is built only when granian asks for it
    if name == "eddy_granian_app":
        return _eddy_for_granian()
    raise AttributeError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["ack-websockets", "ack-asgi", "ack-picows", "idle-picows"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.kind == "ack-websockets":
        uvloop.run(ack_websockets(args.port))
    elif args.kind == "ack-asgi":
        ack_asgi(args.port)
    else:
        uvloop.run(picows_server(args.port, idle=args.kind == "idle-picows"))


if __name__ == "__main__":
    main()

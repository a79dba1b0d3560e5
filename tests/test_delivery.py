"""Live delivery end to end: many subscribers (more than one fan-out step), replays longer than
the in-memory tail, resumes inside it, overload shedding, and the WebSocket handshake deadline.
Real uvicorn on loopback, real WebSocket clients."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from eddy.app.factory import create_app
from eddy.app.http_protocol import EddyHttpProtocol
from eddy.app.server import EddyServer, uvicorn_config
from eddy.app.settings import Settings
from eddy.broker.hub import FANOUT_STEP
from eddy.broker.tail import TAIL_RECORDS
from eddy.routers.ws.protocol import EddyWebSocketProtocol
from tests.conftest import free_port, serve_in_thread, wait_until
from tests.test_websocket import stalled_websocket


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return frame


async def collect(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        frame = await next_frame(ws)
        assert frame["type"] == "record", frame
        out.append(frame)
    return out


def by_partition(frames: list[dict[str, Any]]) -> dict[int, list[int]]:
    offsets: dict[int, list[int]] = defaultdict(list)
    for f in frames:
        offsets[f["partition"]].append(f["offset"])
    return offsets


def test_many_subscribers_with_filters_get_every_record_in_order(tmp_path: Path) -> None:
    """More subscribers than one fan-out step, produced to while the passes run."""
    subscribers = FANOUT_STEP + 60
    batches, per_batch = 20, 10

    async def scenario(base_url: str, ws_url: str) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await client.post("/v1/topics", json={"name": "many", "partitions": 2})
            queries = ["", "?keys=a", "?partitions=1"]
            sockets = []
            for i in range(subscribers):
                ws = await connect(f"{ws_url}/v1/topics/many/ws{queries[i % 3]}", open_timeout=30)
                assert (await next_frame(ws))["type"] == "subscribed"
                sockets.append(ws)
            produced: list[dict[str, Any]] = []
            for b in range(batches):
                records = [
                    {"key": "a" if i % 2 else "b", "value": b * per_batch + i}
                    for i in range(per_batch)
                ]
                response = await client.post("/v1/topics/many/records", json={"records": records})
                assert response.status_code == 200
                for record, where in zip(records, response.json()["offsets"], strict=True):
                    produced.append({**record, **where})
            expected = [
                produced,
                [r for r in produced if r["key"] == "a"],
                [r for r in produced if r["partition"] == 1],
            ]
            received = await asyncio.gather(
                *(collect(ws, len(expected[i % 3])) for i, ws in enumerate(sockets))
            )
            for i, frames in enumerate(received):
                want = expected[i % 3]
                assert by_partition(frames) == by_partition(want), f"subscriber {i}"
                assert sorted(f["value"] for f in frames) == sorted(r["value"] for r in want)
            for ws in sockets:
                await ws.close()

    with serve_in_thread(tmp_path / "d") as server:
        asyncio.run(scenario(server.base_url, server.ws_url))


def test_replay_longer_than_the_tail_while_producing(tmp_path: Path) -> None:
    """A subscriber from `earliest` reads storage past what the tail holds, turns live, and
    misses or repeats nothing produced meanwhile; a resume inside the tail continues exactly."""
    backlog = TAIL_RECORDS + 1500
    more = 600

    async def scenario(base_url: str, ws_url: str) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await client.post("/v1/topics", json={"name": "long", "partitions": 1})
            live = await connect(f"{ws_url}/v1/topics/long/ws", open_timeout=30)
            await next_frame(live)  # a live subscriber keeps the topic's tail in memory
            for start in range(0, backlog, 500):
                records = [{"value": v} for v in range(start, start + 500)]
                assert (
                    await client.post("/v1/topics/long/records", json={"records": records})
                ).status_code == 200
            replaying = await connect(f"{ws_url}/v1/topics/long/ws?from=earliest", open_timeout=30)
            assert (await next_frame(replaying))["partitions"] == {"0": {"offset": 0}}

            async def produce_more() -> None:
                for v in range(backlog, backlog + more, 20):
                    records = [{"value": x} for x in range(v, v + 20)]
                    assert (
                        await client.post("/v1/topics/long/records", json={"records": records})
                    ).status_code == 200

            frames, _ = await asyncio.gather(collect(replaying, backlog + more), produce_more())
            assert [f["offset"] for f in frames] == list(range(backlog + more))
            assert [f["value"] for f in frames] == list(range(backlog + more))
            assert [f["offset"] for f in await collect(live, backlog + more)] == list(
                range(backlog + more)
            )
            resume_at = backlog + more - 100  # inside the tail
            resumed = await connect(
                f"{ws_url}/v1/topics/long/ws?offsets=0:{resume_at}", open_timeout=30
            )
            assert (await next_frame(resumed))["partitions"] == {"0": {"offset": resume_at}}
            assert [f["offset"] for f in await collect(resumed, 100)] == list(
                range(resume_at, backlog + more)
            )
            for ws in (live, replaying, resumed):
                await ws.close()

    with serve_in_thread(tmp_path / "d") as server:
        asyncio.run(scenario(server.base_url, server.ws_url))


def test_overload_sheds_slow_subscribers_and_keeps_answering(tmp_path: Path) -> None:
    """Many subscribers that stop reading: each is closed 4408 once its buffer is full, while
    produce, /healthz and /metrics keep answering and a reading subscriber gets everything."""
    stalled_count = 40
    with (
        serve_in_thread(tmp_path / "d", ws_buffer_bytes=64 * 1024) as server,
        server.client() as client,
    ):
        client.post("/v1/topics", json={"name": "load", "partitions": 1})
        stalled = [stalled_websocket(server, "/v1/topics/load/ws") for _ in range(stalled_count)]
        batch = {"records": [{"value": "x" * 2_000} for _ in range(20)]}
        total = 0
        with httpx.Client(base_url=server.base_url, timeout=30) as other:

            def all_closed() -> bool:
                nonlocal total
                assert client.post("/v1/topics/load/records", json=batch).status_code == 200
                total += 20
                assert other.get("/healthz").status_code == 200
                metrics = other.get("/metrics").text
                return f"eddy_slow_consumer_closes_total {float(stalled_count)}" in metrics

            wait_until(all_closed, timeout=60)
        for sock in stalled:
            sock.close()
        fetched = client.get(
            "/v1/topics/load/partitions/0/records", params={"offset": "latest"}
        ).json()
        assert fetched["high_watermark"] == total


@contextmanager
def silent_app_server() -> Iterator[int]:
    """uvicorn with Eddy's protocol class and an app that never answers an upgrade."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await asyncio.sleep(3600)

    class QuickDeadline(EddyWebSocketProtocol):
        handshake_timeout = 0.5

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws=QuickDeadline, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15)
    try:
        yield port
    finally:
        server.should_exit = True
        server.force_exit = True
        thread.join(timeout=15)


def test_an_upgrade_the_app_never_answers_is_closed() -> None:
    with silent_app_server() as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.settimeout(30)  # a socket.timeout here: the server never closed it
        data = b"".join(iter(lambda: sock.recv(4096), b""))  # until the server closes
        assert not data.startswith(b"HTTP/1.1 101")


def test_idle_subscribers_cost_no_task(tmp_path: Path) -> None:
    """A plain subscription runs without a task once started (the hub writes its frames, the
    connection's callbacks take its client frames): 100 idle subscribers add no tasks."""
    config = Settings(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "d")
    app = create_app(config)
    server = EddyServer(uvicorn_config(app, config), app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15)
    loop = server.servers[0].get_loop()

    async def count_tasks() -> int:
        return len(asyncio.all_tasks())

    def tasks() -> int:
        return asyncio.run_coroutine_threadsafe(count_tasks(), loop).result(10)

    async def scenario(ws_url: str) -> None:
        before = tasks()
        sockets = [
            await connect(f"{ws_url}/v1/topics/idle/ws", open_timeout=30) for _ in range(100)
        ]
        for ws in sockets:
            assert (await next_frame(ws))["type"] == "subscribed"
        assert tasks() <= before + 2  # (a request of the test itself may be in flight)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.port}") as client:
            await client.post("/v1/topics/idle/records", json={"value": 1})
        for ws in sockets:
            assert (await next_frame(ws))["value"] == 1
        for ws in sockets:
            await ws.close()

    try:
        asyncio.run(scenario(f"ws://127.0.0.1:{config.port}"))
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_an_upgraded_http_protocol_is_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    """After a WebSocket upgrade, the connection's HTTP protocol object is garbage. Its parser
    held its bound methods (a reference cycle), so each handshake left ~25 objects for the cyclic
    collector; now they go by reference counting alone. With the collector off, 50 handshakes
    leave no HTTP protocol object behind."""
    config = Settings(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "d")
    app = create_app(config)
    server = EddyServer(uvicorn_config(app, config), app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15)

    def http_protocols() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, EddyHttpProtocol))

    async def scenario(ws_url: str) -> tuple[int, int]:
        gc.collect()
        before = http_protocols()
        gc.disable()
        try:
            sockets = [
                await connect(f"{ws_url}/v1/topics/cycles/ws", open_timeout=30) for _ in range(50)
            ]
            for ws in sockets:
                assert (await next_frame(ws))["type"] == "subscribed"
            after = http_protocols()
        finally:
            gc.enable()
        for ws in sockets:
            await ws.close()
        return before, after

    try:
        before, after = asyncio.run(scenario(f"ws://127.0.0.1:{config.port}"))
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert after - before <= 1, (before, after)  # (a request of the test itself may be open)

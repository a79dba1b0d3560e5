"""`on_slow=conflate`, `max_rate=` and `since=` end to end: a real uvicorn on loopback, real
WebSocket clients (one of them a phone on a slow network: a small receive buffer, read at about
64 KiB/s), records produced over REST while they listen."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import serve_in_thread

KEYS = [f"SYM{i:02d}" for i in range(20)]


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return frame


async def slow_socket(ws_url: str) -> socket.socket:
    """A connected socket with a small receive buffer: the kernel cannot soak up the backlog."""
    host, port = ws_url.removeprefix("ws://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return sock


async def read_throttled(
    ws: ClientConnection, bytes_per_second: float, frames: list[dict[str, Any]], done: Any
) -> None:
    """Read frames at about `bytes_per_second` until `done(frames)`."""
    started, got = time.monotonic(), 0
    while not done(frames):
        raw = await asyncio.wait_for(ws.recv(), 30)
        got += len(raw)
        frame = json.loads(raw)
        assert frame["type"] == "record", frame
        frames.append(frame)
        ahead = got / bytes_per_second - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)


def check_conflated_stream(
    frames: list[dict[str, Any]], produced: list[dict[str, Any]], start: int
) -> int:
    """Every frame is a produced record at most once and in order; each `conflated` count is the
    number of records of its key skipped since the previous frame of that key; returns the
    number of records conflated away."""
    offsets = [f["offset"] for f in frames]
    assert offsets == sorted(set(offsets)), "repeated or out of order"
    by_offset = {r["offset"]: r for r in produced}
    previous: dict[str, int] = {}
    dropped = 0
    for frame in frames:
        record = by_offset[frame["offset"]]
        assert (frame["key"], frame["value"]) == (record["key"], record["value"])
        since = previous.get(frame["key"], start - 1)
        skipped = [
            r
            for r in produced
            if r["key"] == frame["key"] and since < r["offset"] < frame["offset"]
        ]
        assert frame.get("conflated", 0) == len(skipped), (frame, len(skipped))
        previous[frame["key"]] = frame["offset"]
        dropped += len(skipped)
    return dropped


async def produce_ticks(
    client: httpx.AsyncClient,
    topic: str,
    batches: int,
    per_batch: int,
    value_bytes: int,
    produced: list[dict[str, Any]],
    pause: float = 0.05,
) -> None:
    """About per_batch / pause records a second over the 20 keys, values padded to size."""
    n = len(produced)
    for _ in range(batches):
        records = []
        for _ in range(per_batch):
            records.append(
                {"key": KEYS[n % len(KEYS)], "value": {"n": n, "pad": "x" * value_bytes}}
            )
            n += 1
        response = await client.post(f"/v1/topics/{topic}/records", json={"records": records})
        assert response.status_code == 200, response.text
        for record, where in zip(records, response.json()["offsets"], strict=True):
            produced.append({**record, **where})
        await asyncio.sleep(pause)


def latest_per_key(produced: list[dict[str, Any]]) -> dict[str, int]:
    return {r["key"]: r["offset"] for r in produced}


def has_latest(produced: list[dict[str, Any]]) -> Callable[[list[dict[str, Any]]], bool]:
    def done(frames: list[dict[str, Any]]) -> bool:
        seen = {f["offset"] for f in frames}
        return bool(produced) and set(latest_per_key(produced).values()) <= seen

    return done


def test_a_slow_reader_gets_the_latest_value_of_every_key_and_fast_ones_get_everything(
    tmp_path: Path,
) -> None:
    """About 200 records/s over 20 keys (1 KiB each) to a reader throttled to 64 KiB/s: it
    falls behind, its backlog is conflated per key, and once the producer stops it has the
    latest value of every key, with `conflated` counts adding up to what it did not get; a
    fast subscriber on the same topic gets every record."""

    async def scenario(base_url: str, ws_url: str) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await client.post("/v1/topics", json={"name": "ticks", "partitions": 1})
            url = f"{ws_url}/v1/topics/ticks/ws"
            slow_frames: list[dict[str, Any]] = []
            fast_frames: list[dict[str, Any]] = []
            produced: list[dict[str, Any]] = []
            async with (
                # No compression: the throttle is on the wire, and deflate shrinks these
                # repetitive values so much that the reader would keep up.
                connect(
                    f"{url}?on_slow=conflate",
                    sock=await slow_socket(ws_url),
                    max_queue=2,
                    compression=None,
                ) as slow,
                connect(url, max_size=None) as fast,
            ):
                start = (await next_frame(slow))["partitions"]["0"]["offset"]
                assert (await next_frame(fast))["type"] == "subscribed"

                async def read_fast() -> None:
                    while len(fast_frames) < 600:
                        fast_frames.append(await next_frame(fast))

                producing = asyncio.create_task(
                    produce_ticks(client, "ticks", 60, 10, 1024, produced)
                )
                fast_reader = asyncio.create_task(read_fast())
                done = has_latest(produced)
                await read_throttled(
                    slow, 64 * 1024, slow_frames, lambda f: producing.done() and done(f)
                )
                await producing
                await fast_reader
            assert len(produced) == 600
            assert [f["offset"] for f in fast_frames] == [r["offset"] for r in produced]
            assert all("conflated" not in f for f in fast_frames)
            dropped = check_conflated_stream(slow_frames, produced, start)
            assert dropped > 0, "the slow reader never fell behind: nothing was conflated"
            assert len(slow_frames) + dropped == len(produced)
            last = {f["key"]: f for f in slow_frames}
            for key, offset in latest_per_key(produced).items():
                assert last[key]["offset"] == offset

    with serve_in_thread(tmp_path / "d", ws_buffer_bytes=16 * 1024) as server:
        asyncio.run(scenario(server.base_url, server.ws_url))


def test_max_rate_holds_the_frame_rate_and_conflates_in_between(tmp_path: Path) -> None:
    """About 200 records/s over 20 keys for 7 s to subscribers with max_rate=5 and 20: over a
    6 s window each receives its rate (within 10%), and every frame's `conflated` count is what
    it skipped of its key."""
    window = 6.0

    async def listen(
        ws: ClientConnection, frames: list[dict[str, Any]], times: list[float]
    ) -> None:
        while True:
            frame = await next_frame(ws)
            times.append(time.monotonic())
            frames.append(frame)

    async def scenario(base_url: str, ws_url: str) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await client.post("/v1/topics", json={"name": "rated", "partitions": 1})
            produced: list[dict[str, Any]] = []
            frames: dict[int, list[dict[str, Any]]] = {5: [], 20: []}
            times: dict[int, list[float]] = {5: [], 20: []}
            async with (
                connect(f"{ws_url}/v1/topics/rated/ws?max_rate=5") as five,
                connect(f"{ws_url}/v1/topics/rated/ws?max_rate=20") as twenty,
            ):
                starts = {
                    rate: (await next_frame(ws))["partitions"]["0"]["offset"]
                    for rate, ws in ((5, five), (20, twenty))
                }
                listeners = [
                    asyncio.create_task(listen(ws, frames[rate], times[rate]))
                    for rate, ws in ((5, five), (20, twenty))
                ]
                began = time.monotonic()
                await produce_ticks(client, "rated", 140, 10, 16, produced)
                for task in listeners:
                    task.cancel()
            window_start = began + 0.5
            window_end = window_start + window
            assert time.monotonic() > window_end, "the producer stopped before the window ended"
            for rate in (5, 20):
                got = sum(1 for t in times[rate] if window_start <= t < window_end)
                assert abs(got - rate * window) <= 0.1 * rate * window, (rate, got)
                dropped = check_conflated_stream(frames[rate], produced, starts[rate])
                assert dropped > 0

    with serve_in_thread(tmp_path / "d") as server:
        asyncio.run(scenario(server.base_url, server.ws_url))


def test_keyless_records_under_max_rate_arrive_in_order_at_the_rate(tmp_path: Path) -> None:
    """Keyless records are never conflated: under max_rate they wait for their slots."""

    async def scenario(base_url: str, ws_url: str) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            async with connect(f"{ws_url}/v1/topics/plain/ws?max_rate=100") as ws:
                assert (await next_frame(ws))["type"] == "subscribed"
                body = {"records": [{"value": i} for i in range(150)]}
                response = await client.post("/v1/topics/plain/records", json=body)
                assert response.status_code == 200
                got = [await next_frame(ws) for _ in range(150)]
            assert [f["value"] for f in got] == list(range(150))
            assert all("conflated" not in f for f in got)

    with serve_in_thread(tmp_path / "d") as server:
        asyncio.run(scenario(server.base_url, server.ws_url))


def test_since_starts_at_the_first_record_at_or_after_that_time(tmp_path: Path) -> None:
    """Replays from a time, per partition; offsets= wins where given; a time after every
    record starts at the high watermark (live); group members without a commit start there
    too, and their commits win over it."""

    async def records(ws: ClientConnection, count: int) -> list[tuple[int, int]]:
        out = []
        for _ in range(count):
            frame = await next_frame(ws)
            assert frame["type"] == "record", frame
            out.append((frame["partition"], frame["timestamp"]))
        return sorted(out)

    async def scenario(base_url: str, ws_url: str) -> None:
        url = f"{ws_url}/v1/topics/history/ws"
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await client.post("/v1/topics", json={"name": "history", "partitions": 2})
            stamps = {0: [1000, 2000, 3000, 4000, 5000], 1: [1500, 2500, 3500]}
            body = {
                "records": [
                    {"partition": p, "timestamp": t, "value": t}
                    for p, ts in stamps.items()
                    for t in ts
                ]
            }
            assert (await client.post("/v1/topics/history/records", json=body)).is_success

            async with connect(f"{url}?since=2600") as ws:
                subscribed = await next_frame(ws)
                assert subscribed["partitions"] == {"0": {"offset": 2}, "1": {"offset": 2}}
                assert await records(ws, 4) == [(0, 3000), (0, 4000), (0, 5000), (1, 3500)]

            async with connect(f"{url}?since=2600&offsets=1:0") as ws:
                subscribed = await next_frame(ws)
                assert subscribed["partitions"] == {"0": {"offset": 2}, "1": {"offset": 0}}
                assert len(await records(ws, 6)) == 6

            async with connect(f"{url}?since=99999999999999&partitions=1") as ws:
                assert (await next_frame(ws))["partitions"] == {"1": {"offset": 3}}
                live = {"records": [{"partition": 1, "timestamp": 7000, "value": 7}]}
                assert (await client.post("/v1/topics/history/records", json=live)).is_success
                assert await records(ws, 1) == [(1, 7000)]

            async with connect(f"{url}?group=replay&since=2600") as member:
                assignment = await next_frame(member)
                assert assignment["type"] == "assignment"
                assert assignment["partitions"] == {"0": {"offset": 2}, "1": {"offset": 2}}
                assert await records(member, 5) == [
                    (0, 3000),
                    (0, 4000),
                    (0, 5000),
                    (1, 3500),
                    (1, 7000),
                ]
                await member.send(json.dumps({"type": "commit", "offsets": {"0": 4}}))
                assert (await next_frame(member))["type"] == "committed"

            async with connect(f"{url}?group=replay&since=0") as member:
                assignment = await next_frame(member)
                assert assignment["partitions"] == {"0": {"offset": 4}, "1": {"offset": 0}}

    with serve_in_thread(tmp_path / "d") as server:
        asyncio.run(scenario(server.base_url, server.ws_url))

"""The whole ASGI app in this process, without HTTP: CPU per produce request and per record.

    .venv/bin/python -m bench.inprocess                 # single records and 1,000-record batches
    .venv/bin/python -m bench.inprocess --only single --seconds 3

Calls `create_app(...)` directly with pre-built ASGI scopes (32 concurrent callers for single
records, 4 for batches, `--sync full`), so no socket, parser or client is measured: what is left
is Eddy's own work per request (routing, middleware, drafts, broker, writer thread, commit).
CPU is this process's (all threads) per request, from `os.times()`; on a shared machine it is a
steadier figure than throughput, which the end-to-end `bench.run` rows measure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from bench.common import run_async
from eddy.app.factory import create_app
from eddy.app.settings import Settings


def _single(i: int) -> bytes:
    return orjson.dumps(
        {"key": f"sensor-{i:04d}", "value": {"sensor": f"s-{i:04d}", "reading": 21.375, "seq": i}}
    )


def _batch(n: int) -> bytes:
    return orjson.dumps(
        {
            "records": [
                {"key": f"key-{i}", "value": {"price": 187.3, "n": i, "pad": "x" * 20}}
                for i in range(n)
            ]
        }
    )


async def _call(app: Any, state: Mapping[str, Any], body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/topics/bench/records",
        "raw_path": b"/v1/topics/bench/records",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
        "state": dict(state),
    }
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(
    kind: str, seconds: float, data_dir: Path, tune_gc: bool = True
) -> tuple[float, float, float]:
    """(requests/s, CPU µs per request, CPU µs per record) for `kind` (single or batch)."""
    app = create_app(Settings(data_dir=data_dir, sync="full"))
    callers, size = (32, 1) if kind == "single" else (4, 1000)
    body = _single(1) if kind == "single" else _batch(size)
    async with app.router.lifespan_context(app) as state:
        assert state is not None
        if tune_gc:  # as `eddy serve` does (app/server.py)
            gc.collect()
            gc.freeze()
        for _ in range(20):  # warm-up (creates the topic)
            assert await _call(app, state, body) == 200
        done = 0
        stop = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                status = await _call(app, state, body)
                assert status == 200, status
                done += 1

        cpu0, t0 = sum(os.times()[:2]), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        cpu, wall = sum(os.times()[:2]) - cpu0, time.perf_counter() - t0
    us = cpu / done * 1e6
    return done / wall, us, us / size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["single", "batch"], action="append")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--default-gc", action="store_true", help="nothing frozen out of the GC (for comparison)"
    )
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    for kind in args.only or ["single", "batch"]:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="eddy-inprocess-") as tmp:
                rate, per_request, per_record = run_async(
                    measure(kind, args.seconds, Path(tmp), not args.default_gc)
                )
            print(
                f"{kind:6} {rate:10,.0f} req/s   CPU {per_request:8.1f} µs/request "
                f"{per_record:6.2f} µs/record   (load {os.getloadavg()[0]:.2f})"
            )


if __name__ == "__main__":
    main()

"""What the content-coding layers cost and save: `python -m bench.http_encoding`.

1. Per-request cost of the two middlewares (app/http_encoding.py) on a produce-sized exchange,
   in process (no sockets, so the machine's load matters less): the same minimal ASGI app bare,
   and wrapped in RequestDecoding + GzipGetResponses, for a POST (produce: gzip is bypassed)
   and a GET with a small answer (Starlette's GZipMiddleware runs, compresses nothing).
2. A fetch of 1,000 records as Eddy encodes it: bytes plain and gzipped per zlib level, and the
   CPU time to compress it.
Prints a markdown table; ratios are against the baseline of the same run.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from eddy.app.http_encoding import GZIP_LEVEL, GzipGetResponses, RequestDecoding

N = 20_000
BODY = b'{"key": "AAPL", "value": {"price": 187.3}}'
ACK = b'{"offsets":[{"partition":0,"offset":41,"timestamp":1764000000123}]}'


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"68")],
        }
    )
    await send({"type": "http.response.body", "body": ACK})


def scope(method: str) -> dict[str, Any]:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(BODY)),
        (b"accept-encoding", b"gzip, deflate"),
    ]
    return {"type": "http", "method": method, "path": "/v1/topics/t/records", "headers": headers}


async def per_request_us(app: Any, method: str) -> tuple[float, float]:
    """(wall, CPU) microseconds per request."""
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: dict[str, Any]) -> None:
        return None

    request_scope = scope(method)
    for _ in range(1000):  # warm up
        await app(dict(request_scope), receive, send)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(N):
        await app(dict(request_scope), receive, send)
    return (time.perf_counter() - wall) / N * 1e6, (time.process_time() - cpu) / N * 1e6


def fetch_body() -> bytes:
    records = [
        {
            "topic": "prices",
            "partition": 0,
            "offset": i,
            "timestamp": 1764000000000 + i * 17,
            "key": f"SYM{i % 500}",
            "value": {"price": round(100 + (i * 7919 % 10000) / 100, 2), "volume": i * 31 % 9973},
            "headers": {"source": f"feed-{i % 3}"},
        }
        for i in range(1000)
    ]
    return orjson.dumps(
        {"records": records, "next_offset": 1000, "log_start_offset": 0, "high_watermark": 1000}
    )


def main() -> None:
    wrapped = GzipGetResponses(RequestDecoding(bare, 16 * 1_048_576))
    rows = []
    base_wall, base_cpu = asyncio.run(per_request_us(bare, "POST"))
    rows.append(("bare ASGI app (baseline)", base_wall, base_cpu))
    for method in ("POST", "GET"):
        wall, cpu = asyncio.run(per_request_us(wrapped, method))
        rows.append((f"{method}, Accept-Encoding: gzip, with the middlewares", wall, cpu))
    print(f"load average: {os.getloadavg()[0]:.2f} (2 cores shared with other work)\n")
    print("| produce-sized exchange | us/request | CPU us/request | added CPU us |")
    print("|---|---:|---:|---:|")
    for label, wall, cpu in rows:
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {cpu - base_cpu:+.2f} |")

    body = fetch_body()
    print("\n| fetch of 1,000 records | bytes | ratio | CPU ms to compress |")
    print("|---|---:|---:|---:|")
    print(f"| plain | {len(body):,} | 1.00 | - |")
    for level in (1, GZIP_LEVEL, 9):
        cpu = time.process_time()
        for _ in range(20):
            compressed = zlib.compress(body, level, wbits=31)
        ms = (time.process_time() - cpu) / 20 * 1000
        mark = " (Eddy's)" if level == GZIP_LEVEL else ""
        print(
            f"| gzip level {level}{mark} | {len(compressed):,} | "
            f"{len(body) / len(compressed):.2f} | {ms:.2f} |"
        )


if __name__ == "__main__":
    main()

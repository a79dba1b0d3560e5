"""HTTP load generator: keep-alive HTTP/1.1 connections on a bare asyncio protocol.

A general client library (httpx, aiohttp) spends more CPU per request than uvicorn does on a
minimal ASGI app, so on a small machine it would measure itself rather than the server. This client
sends pre-encoded requests and parses only the status line and Content-Length, so one process
drives far more requests per CPU second; its CPU is reported beside every result anyway.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import time
from array import array
from dataclasses import dataclass
from typing import Any, cast

from bench.common import HOST, child_main, run_async, self_cpu_seconds


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        status = int(head[9:12])
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            waiter.set_exception(RuntimeError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        body = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        self._waiter = None
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionError("server closed the connection")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self._lost is not None or self._transport is None:
            raise ConnectionError("connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def encode_post(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass(frozen=True)
class LoadSpec:
    port: int
    path: str
    bodies: list[bytes]  # cycled through, one per request
    records_per_body: int
    connections: int
    start_at: float  # wall-clock time.time() at which every client process begins (warm-up)
    warmup: float
    duration: float


@dataclass
class LoadResult:
    requests: int  # completed inside the measured window
    records: int  # records acknowledged inside the window (offsets in 200 responses)
    statuses: dict[int, int]
    errors: dict[str, int]
    latencies_ns: bytes  # array('q') of the window's request latencies
    cpu_seconds: float  # this client process's CPU during the window
    wall_seconds: float
    late_start: float  # seconds this process started after start_at (should be ~0)


async def _run_load(spec: LoadSpec) -> LoadResult:
    loop = asyncio.get_running_loop()
    requests = [encode_post(spec.port, spec.path, body) for body in spec.bodies]
    conns: list[HttpConnection] = []
    for _ in range(spec.connections):
        _, protocol = await loop.create_connection(HttpConnection, HOST, spec.port)
        conns.append(protocol)
    late = time.time() - spec.start_at
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    now_ns = time.perf_counter_ns()
    measure_from = now_ns + int(spec.warmup * 1e9)
    measure_to = measure_from + int(spec.duration * 1e9)
    latencies = array("q")
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    counts = [0, 0]  # requests, records in the window
    cpu: list[float] = []

    async def mark_cpu() -> None:
        await asyncio.sleep((measure_from - time.perf_counter_ns()) / 1e9)
        cpu.append(self_cpu_seconds())
        await asyncio.sleep((measure_to - time.perf_counter_ns()) / 1e9)
        cpu.append(self_cpu_seconds())

    async def client(index: int, conn: HttpConnection) -> None:
        i = index
        while True:
            started = time.perf_counter_ns()
            if started >= measure_to:
                return
            try:
                status, body = await conn.request(requests[i % len(requests)])
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return  # a broken connection ends this client
            finished = time.perf_counter_ns()
            i += len(conns)
            if measure_from <= finished <= measure_to:
                latencies.append(finished - started)
                statuses[status] = statuses.get(status, 0) + 1
                counts[0] += 1
                if status == 200:
                    acked = body.count(b'"offset"')
                    counts[1] += acked
                    if acked != spec.records_per_body:
                        errors["short_ack"] = errors.get("short_ack", 0) + 1

    marker = asyncio.create_task(mark_cpu())
    timeout = spec.warmup + spec.duration + 30
    try:
        await asyncio.wait_for(
            asyncio.gather(*(client(i, c) for i, c in enumerate(conns))), timeout
        )
    except TimeoutError:
        errors["timeout"] = errors.get("timeout", 0) + 1
    await marker
    for conn in conns:
        conn.close()
    return LoadResult(
        requests=counts[0],
        records=counts[1],
        statuses=statuses,
        errors=errors,
        latencies_ns=latencies.tobytes(),
        cpu_seconds=cpu[1] - cpu[0],
        wall_seconds=spec.duration,
        late_start=max(0.0, late),
    )


def load_worker(conn: multiprocessing.connection.Connection, spec: LoadSpec) -> None:
    child_main(conn, lambda: run_async(_run_load(spec)))


def merge_latencies(results: list[LoadResult]) -> list[int]:
    merged: list[int] = []
    for result in results:
        values = array("q")
        values.frombytes(result.latencies_ns)
        merged.extend(values)
    merged.sort()
    return merged


def summarize(results: list[LoadResult]) -> dict[str, Any]:
    """Totals across client processes."""
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
        for name, v in r.errors.items():
            errors[name] = errors.get(name, 0) + v
    return {
        "requests": sum(r.requests for r in results),
        "records": sum(r.records for r in results),
        "statuses": statuses,
        "errors": errors,
        "cpu_seconds": sum(r.cpu_seconds for r in results),
        "late_start": max(r.late_start for r in results),
    }

"""WebSocket publish load generator: one connection sends records back to back, reads the acks.

Records go out as pre-encoded, pre-masked text frames (so the client spends its CPU on the socket,
not on JSON or masking) while at most `window` of them wait for their ack; each ack is checked to
answer the oldest record still waiting (acks come in order), so a lost, duplicated or reordered
ack counts as an error. The lean protocol of `bench/wsclient.py` does the handshake and reads the
server's frames.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import os
import time
from array import array
from collections import deque
from dataclasses import dataclass

import orjson

from bench.common import HOST, child_main, run_async, self_cpu_seconds
from bench.wsclient import LeanSubscriber


def masked_text_frame(payload: bytes) -> bytes:
    """A client text frame (RFC 6455 requires clients to mask), unfragmented."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    elif size < 65536:
        head = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@dataclass(frozen=True)
class PublishSpec:
    port: int
    path: str
    bodies: list[bytes]  # record objects without "id"; cycled through
    window: int  # records sent but not yet acked, at most
    start_at: float  # wall-clock time.time() at which sending begins (warm-up)
    warmup: float
    duration: float


@dataclass
class PublishLoadResult:
    acked: int  # acks received inside the measured window
    errors: dict[str, int]
    latencies_ns: bytes  # array('q'): send to ack, for acks inside the window
    cpu_seconds: float
    wall_seconds: float


class _Publisher(LeanSubscriber):
    """The lean subscriber's frame reader, plus writing pre-encoded frames."""

    def send_raw(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)


async def _run(spec: PublishSpec) -> PublishLoadResult:
    # Each pre-encoded frame carries its index as "id"; the acks must come back in that order.
    frames = [masked_text_frame(body[:-1] + b',"id":%d}' % i) for i, body in enumerate(spec.bodies)]
    errors: dict[str, int] = {}
    latencies = array("q")
    waiting: deque[tuple[int, int]] = deque()  # (frame index, sent at ns), oldest first
    window_open = asyncio.Event()
    window_open.set()
    counts = [0]
    marks: list[int] = []  # measure_from, measure_to (perf_counter_ns)

    def error(name: str) -> None:
        errors[name] = errors.get(name, 0) + 1

    def on_message(message: bytes) -> None:
        now = time.perf_counter_ns()
        answer = orjson.loads(message)
        if not waiting:
            error("unexpected_frame")
            return
        index, sent = waiting.popleft()
        if answer.get("type") != "ack":
            error(str(answer.get("code", answer.get("type"))))
        elif answer.get("id") != index:
            error("ack_out_of_order")
        elif marks and marks[0] <= now <= marks[1]:
            latencies.append(now - sent)
            counts[0] += 1
        if len(waiting) < spec.window:
            window_open.set()

    url = f"ws://{HOST}:{spec.port}{spec.path}"
    loop = asyncio.get_running_loop()
    _, publisher = await loop.create_connection(
        lambda: _Publisher(url, on_message), HOST, spec.port
    )
    await asyncio.wait_for(publisher.opened, 10)
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    start = time.perf_counter_ns()
    marks += [start + int(spec.warmup * 1e9), start + int((spec.warmup + spec.duration) * 1e9)]
    cpu: list[float] = []

    async def mark_cpu() -> None:
        await asyncio.sleep((marks[0] - time.perf_counter_ns()) / 1e9)
        cpu.append(self_cpu_seconds())
        await asyncio.sleep((marks[1] - time.perf_counter_ns()) / 1e9)
        cpu.append(self_cpu_seconds())

    marker = asyncio.create_task(mark_cpu())
    i = 0
    while time.perf_counter_ns() < marks[1] and not publisher.closed.done():
        if len(waiting) >= spec.window:
            window_open.clear()
            try:
                await asyncio.wait_for(window_open.wait(), 10)
            except TimeoutError:
                error("ack_timeout")
                break
            continue
        index = i % len(frames)
        waiting.append((index, time.perf_counter_ns()))
        publisher.send_raw(frames[index])
        i += 1
        if i % 64 == 0:
            await asyncio.sleep(0)  # let the acks in
    await marker
    if publisher.closed.done():
        error(f"closed by the server ({publisher.closed.result()})")
    publisher.close()
    return PublishLoadResult(counts[0], errors, latencies.tobytes(), cpu[1] - cpu[0], spec.duration)


def publish_worker(conn: multiprocessing.connection.Connection, spec: PublishSpec) -> None:
    child_main(conn, lambda: run_async(_run(spec)))

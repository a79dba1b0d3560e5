"""Fan-out load: many WebSocket subscribers in several processes, one paced publisher.

Subscriber processes (`subscriber_worker`) open their connections (the lean client of
bench/wsclient.py, or the `websockets` library client, with permessage-deflate for
`websockets-deflate`), wait for each `subscribed` frame, then
read as fast as they can. Each record's value is `{"sent_ns", "seq", "phase"}`; per
connection and phase they count records in `seq` order (gaps, duplicates), and keep the
publish-to-receive latency of every record. The parent drives them over a pipe:

    -> ("snapshot",)                        <- {"cpu": seconds}
    -> ("drain", phase, expected, limit)    <- PhaseReport (when every open connection has
                                               `expected` records, nothing arrived for
                                               STALL_SECONDS, or `limit` seconds passed)
    -> ("close",)                           <- {"cpu": seconds}

The publisher (`publisher_worker`) sends `rate` records/s for `duration` s over one WebSocket
(Eddy's `/publish` endpoint, or the baseline's) and counts the acks.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import time
import traceback
from array import array
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import child_main, run_async, self_cpu_seconds
from bench.wsclient import LeanSubscriber, open_lean

CONNECT_CONCURRENCY = 25  # handshakes in flight per process (keeps the listen backlog small)
STALL_SECONDS = 5.0  # a drain ends when no record arrived for this long


def _client_options(compression: str | None = None) -> dict[str, Any]:
    # No compression unless asked for (`websockets-deflate` subscribers: the compression
    # benchmark); no client pings (the servers ping; the library still answers them); no size
    # limit.
    return {
        "compression": compression,
        "ping_interval": None,
        "max_size": None,
        "open_timeout": 30,
    }


class ConnectError(Exception):
    """A subscription that could not be opened (the message says at which stage)."""


@dataclass
class _Phase:
    received: list[int]  # per connection
    next_seq: list[int]
    latencies_us: array[int] = field(default_factory=lambda: array("q"))
    gaps: int = 0
    duplicates: int = 0
    first_ns: int = 0
    last_ns: int = 0


@dataclass
class PhaseReport:
    connections: int
    open_connections: int
    received: int  # records delivered (in order, counted once) across this process's connections
    missing: int  # expected minus received, summed over connections
    gaps: int
    duplicates: int
    latencies_us: bytes  # array('q')
    first_ns: int
    last_ns: int
    close_codes: dict[str, int]
    cpu: float
    drain_seconds: float
    stalled: bool


class _Subscribers:
    """`count` subscriptions to `url` in this process, with per-phase delivery statistics."""

    def __init__(self, url: str, count: int, client: str) -> None:
        self.url = url
        self.count = count
        self.client = client
        self.connected = [False] * count
        self.finished = [False] * count  # the connection ended (close code recorded)
        self.lean: list[LeanSubscriber] = []
        self.libws: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.phases: dict[int, _Phase] = {}
        self.close_codes: dict[str, int] = {}
        self.connect_errors: dict[str, int] = {}
        self.unexpected_frames = 0

    def phase(self, number: int) -> _Phase:
        p = self.phases.get(number)
        if p is None:
            p = self.phases[number] = _Phase([0] * self.count, [0] * self.count)
        return p

    def on_frame(self, index: int, message: bytes | str) -> None:
        received_at = time.time_ns()
        frame = orjson.loads(message)
        if frame.get("type") != "record":
            self.unexpected_frames += 1
            return
        value = frame["value"]
        p = self.phases.get(value["phase"]) or self.phase(value["phase"])
        p.latencies_us.append((received_at - value["sent_ns"]) // 1000)
        seq, expected = value["seq"], p.next_seq[index]
        if seq >= expected:
            p.gaps += seq - expected
            p.received[index] += 1
            p.next_seq[index] = seq + 1
        else:
            p.duplicates += 1
        if not p.first_ns:
            p.first_ns = received_at
        p.last_ns = received_at

    def on_closed(self, index: int, code: int | None) -> None:
        self.finished[index] = True
        key = "none" if code is None else str(code)
        self.close_codes[key] = self.close_codes.get(key, 0) + 1

    async def connect_all(self) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(index: int) -> None:
            async with gate:
                try:
                    if self.client == "lean":
                        await self._open_lean(index)
                    else:
                        await self._open_websockets(index)
                    self.connected[index] = True
                except Exception as exc:
                    name = str(exc) if isinstance(exc, ConnectError) else type(exc).__name__
                    self.connect_errors[name] = self.connect_errors.get(name, 0) + 1

        await asyncio.gather(*(one(i) for i in range(self.count)))

    async def _open_lean(self, index: int) -> None:
        subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_message(payload: bytes) -> None:
            if subscribed.done():
                self.on_frame(index, payload)
            elif orjson.loads(payload).get("type") == "subscribed":
                subscribed.set_result(None)
            else:
                subscribed.set_exception(RuntimeError(f"first frame was {payload[:200]!r}"))

        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        stage = "handshake"
        try:
            async with asyncio.timeout(30):
                protocol = await open_lean(host, port, self.url, on_message)
            protocol.closed.add_done_callback(lambda f: self.on_closed(index, f.result()))
            self.lean.append(protocol)
            stage = "subscribed frame"
            async with asyncio.timeout(30):
                await subscribed
        except Exception as exc:
            raise ConnectError(f"{type(exc).__name__} waiting for the {stage}") from exc

    async def _open_websockets(self, index: int) -> None:
        deflate = "deflate" if self.client == "websockets-deflate" else None
        ws = await connect(self.url, **_client_options(deflate))
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
        if deflate and not (extensions or "").startswith("permessage-deflate"):
            raise ConnectError("permessage-deflate was not negotiated")
        self.libws.append(ws)
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        if first.get("type") != "subscribed":
            raise RuntimeError(f"first frame was {first!r}")
        self.readers.append(asyncio.create_task(self._read(index, ws)))

    async def _read(self, index: int, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self.on_frame(index, message)
        except ConnectionClosed:
            pass
        self.on_closed(index, ws.close_code)

    def open_connections(self) -> int:
        return sum(c and not f for c, f in zip(self.connected, self.finished, strict=True))

    async def drain(self, number: int, expected: int, limit: float) -> PhaseReport:
        """Wait until every open connection has `expected` records of phase `number`."""
        started = time.monotonic()
        p = self.phase(number)
        last_total, last_progress = -1, started
        stalled = False
        slots = [i for i in range(self.count) if self.connected[i]]
        while True:
            total = sum(p.received)
            now = time.monotonic()
            if total != last_total:
                last_total, last_progress = total, now
            if all(p.received[i] >= expected or self.finished[i] for i in slots):
                break
            if now - started > limit:
                break
            if now - last_progress > STALL_SECONDS:
                stalled = True
                break
            await asyncio.sleep(0.05)
        return PhaseReport(
            connections=len(slots),
            open_connections=self.open_connections(),
            received=sum(p.received),
            missing=sum(max(0, expected - p.received[i]) for i in slots),
            gaps=p.gaps,
            duplicates=p.duplicates,
            latencies_us=p.latencies_us.tobytes(),
            first_ns=p.first_ns,
            last_ns=p.last_ns,
            close_codes=dict(self.close_codes),
            cpu=self_cpu_seconds(),
            drain_seconds=time.monotonic() - started,
            stalled=stalled,
        )

    async def close(self) -> None:
        for protocol in self.lean:
            protocol.close()
        await asyncio.gather(*(ws.close() for ws in self.libws), return_exceptions=True)
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def _subscriber_main(
    conn: multiprocessing.connection.Connection, url: str, n: int, client: str
) -> None:
    loop = asyncio.get_running_loop()
    subs = _Subscribers(url, n, client)
    await subs.connect_all()
    conn.send(
        {
            "connected": sum(subs.connected),
            "errors": subs.connect_errors,
            "cpu": self_cpu_seconds(),
        }
    )
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command[0] == "snapshot":
            conn.send({"cpu": self_cpu_seconds()})
        elif command[0] == "drain":
            _, number, expected, limit = command
            conn.send(await subs.drain(number, expected, limit))
        elif command[0] == "close":
            await subs.close()
            conn.send({"cpu": self_cpu_seconds(), "unexpected_frames": subs.unexpected_frames})
            return


def subscriber_worker(
    conn: multiprocessing.connection.Connection, url: str, n: int, client: str
) -> None:
    try:
        run_async(_subscriber_main(conn, url, n, client))
    except BaseException:
        conn.send({"child_error": traceback.format_exc()})
    finally:
        conn.close()


@dataclass
class PublishResult:
    sent: int
    acked: int
    errors: dict[str, int]
    ack_latencies_us: list[int]
    first_send_ns: int
    last_send_ns: int
    cpu: float


async def _publish(
    url: str, rate: float, duration: float, phase: int, start_at: float, ack_wait: float
) -> Any:
    """Send `rate` records/s for `duration` s (open loop), then wait up to `ack_wait` s for the
    acks still missing."""
    total = int(rate * duration)
    errors: dict[str, int] = {}
    ack_latencies: list[int] = []
    send_times: list[int] = []

    def error(key: str) -> None:
        errors[key] = errors.get(key, 0) + 1

    async with connect(url, **_client_options()) as ws:

        async def read_acks() -> int:
            acked = answered = 0
            try:
                async for message in ws:
                    frame = orjson.loads(message)
                    if frame.get("type") == "ack":
                        ack_latencies.append((time.time_ns() - send_times[acked]) // 1000)
                        acked += 1
                    else:
                        error(str(frame.get("code", frame.get("type"))))
                    answered += 1
                    if answered >= total:
                        break
            except ConnectionClosed as exc:  # e.g. "received 1011 (internal error) ..."
                error(f"publisher connection closed: {exc}")
            return acked

        reader = asyncio.create_task(read_acks())
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu_from = self_cpu_seconds()
        t0 = time.perf_counter()
        for seq in range(total):
            delay = t0 + seq / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if reader.done():
                break  # the connection is gone
            sent_ns = time.time_ns()
            value = {"sent_ns": sent_ns, "seq": seq, "phase": phase}
            send_times.append(sent_ns)  # before the send: its ack may be read while it awaits
            try:
                await ws.send(orjson.dumps({"key": None, "value": value}).decode())
            except ConnectionClosed:
                send_times.pop()
                break
        try:
            acked = await asyncio.wait_for(reader, ack_wait)
        except TimeoutError:
            error("ack_timeout")
            acked = len(ack_latencies)
        cpu = self_cpu_seconds() - cpu_from
    sent = len(send_times)
    first, last = (send_times[0], send_times[-1]) if send_times else (0, 0)
    return PublishResult(sent, acked, errors, ack_latencies, first, last, cpu)


def publisher_worker(
    conn: multiprocessing.connection.Connection,
    url: str,
    rate: float,
    duration: float,
    phase: int,
    start_at: float,
    ack_wait: float,
) -> None:
    child_main(conn, lambda: run_async(_publish(url, rate, duration, phase, start_at, ack_wait)))

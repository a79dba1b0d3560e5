"""Retention under load: fill a backlog, then measure produce latency while it is deleted.

Three pieces, used by `bench_retention` in bench/sections/retention.py:

- `fill_topic`: batch produce (pre-encoded bodies of 1,000 records) from a few keep-alive
  connections in the runner process until a record count or a time budget is reached, printing
  progress.
- `openloop_worker`: an open-loop load generator in its own process. Request i is due at
  `window start - warm-up + i / rate`, whatever happened to earlier requests; a due request waits
  for a free connection of a small keep-alive pool, and its latency is counted from when it was
  due (so a server stall shows in full, not hidden by the client waiting: no coordinated
  omission).
- `Watcher`: polls a topic's partition state (`GET /v1/topics/{t}`) and its files in the data dir
  from the runner while a window runs, to time the deletion and the space reclaim.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import re
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.common import HOST, child_main, http_json, run_async, self_cpu_seconds
from bench.httpload import HttpConnection, encode_post


# --- backlog fill --------------------------------------------------------------------------------
def backlog_bodies(batch_size: int, count: int = 8) -> list[bytes]:
    """`count` batch bodies of `batch_size` records with ~100-byte compact JSON values."""
    bodies = []
    for b in range(count):
        records = []
        for i in range(batch_size):
            n = b * batch_size + i
            value = {
                "sensor": f"s-{n % 997:04d}",
                "seq": n,
                "reading": round(20 + (n % 100) / 8, 3),
                "unit": "celsius",
                "note": "backlog-filler-" + "x" * 16,
            }
            records.append({"key": f"sensor-{n % 997:04d}", "value": value})
        bodies.append(orjson.dumps({"records": records}))
    return bodies


def mean_value_bytes(body: bytes) -> float:
    records = orjson.loads(body)["records"]
    return sum(len(orjson.dumps(r["value"])) for r in records) / len(records)


@dataclass
class FillResult:
    records: int
    seconds: float
    reached_target: bool
    errors: dict[str, int]


async def _fill(
    port: int,
    path: str,
    bodies: list[bytes],
    records_per_body: int,
    target: int,
    connections: int,
    budget: float,
    progress: Callable[[int, float], None],
) -> FillResult:
    loop = asyncio.get_running_loop()
    requests = [encode_post(port, path, body) for body in bodies]
    conns: list[HttpConnection] = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(HttpConnection, HOST, port)
        conns.append(protocol)
    started = time.monotonic()
    deadline = started + budget
    claimed = [0]  # records claimed by a request in flight or done
    acked = [0]
    errors: dict[str, int] = {}

    async def client(index: int, conn: HttpConnection) -> None:
        i = index
        while claimed[0] < target and time.monotonic() < deadline and not errors:
            claimed[0] += records_per_body
            try:
                status, body = await conn.request(requests[i % len(requests)])
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            i += len(conns)
            if status != 200:
                key = f"HTTP {status}: {body[:200].decode(errors='replace')}"
                errors[key] = errors.get(key, 0) + 1
                return
            acked[0] += body.count(b'"offset"')

    async def report() -> None:
        while True:
            await asyncio.sleep(2.0)
            progress(acked[0], time.monotonic() - started)

    reporter = asyncio.create_task(report())
    try:
        await asyncio.wait_for(
            asyncio.gather(*(client(i, c) for i, c in enumerate(conns))), budget + 30
        )
    except TimeoutError:
        errors["timeout"] = errors.get("timeout", 0) + 1
    finally:
        reporter.cancel()
        for conn in conns:
            conn.close()
    return FillResult(acked[0], time.monotonic() - started, acked[0] >= target, errors)


def fill_topic(
    port: int,
    topic: str,
    bodies: list[bytes],
    records_per_body: int,
    target: int,
    connections: int,
    budget: float,
    progress: Callable[[int, float], None],
) -> FillResult:
    """Batch-produce until `target` records are acked or `budget` seconds have passed."""
    return run_async(
        _fill(
            port,
            f"/v1/topics/{topic}/records",
            bodies,
            records_per_body,
            target,
            connections,
            budget,
            progress,
        )
    )


# --- open-loop load generator --------------------------------------------------------------------
@dataclass(frozen=True)
class OpenLoopSpec:
    port: int
    path: str
    bodies: list[bytes]  # cycled through, one per request
    rate: float  # requests per second, on a fixed schedule
    connections: int  # keep-alive pool; a due request waits for a free connection
    start_at: float  # wall-clock time.time() of the first (warm-up) request
    warmup: float
    duration: float
    grace: float  # after the window, how long requests still in flight may take


@dataclass
class OpenLoopResult:
    planned: int  # requests due inside the window
    completed_in_window: int  # 200 responses that arrived inside the window (any request)
    statuses: dict[int, int]  # of the window's requests
    errors: dict[str, int]
    due_ns: bytes  # array('q'): when each window request was due, ns after the window start
    latencies_ns: bytes  # array('q'): due -> response, same order as due_ns
    service_ns: bytes  # array('q'): sent -> response (without waiting for a connection)
    unfinished: int  # window requests with no response by the end of the grace period
    cpu_seconds: float  # this process's CPU during the window
    late_start: float  # seconds this process started after start_at (should be ~0)


async def _run_open_loop(spec: OpenLoopSpec) -> OpenLoopResult:
    loop = asyncio.get_running_loop()
    requests = [encode_post(spec.port, spec.path, body) for body in spec.bodies]
    idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
    conns: list[HttpConnection] = []
    for _ in range(spec.connections):
        _, protocol = await loop.create_connection(HttpConnection, HOST, spec.port)
        conns.append(protocol)
        idle.put_nowait(protocol)
    late = time.time() - spec.start_at
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    origin = time.perf_counter_ns()
    window_from = origin + int(spec.warmup * 1e9)
    window_to = window_from + int(spec.duration * 1e9)
    interval_ns = 1e9 / spec.rate
    warmup_requests = round(spec.warmup * spec.rate)
    total = warmup_requests + round(spec.duration * spec.rate)
    due_ns, latencies, service = array("q"), array("q"), array("q")
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    in_window = [0]
    cpu: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def mark_cpu() -> None:
        await asyncio.sleep((window_from - time.perf_counter_ns()) / 1e9)
        cpu.append(self_cpu_seconds())
        await asyncio.sleep((window_to - time.perf_counter_ns()) / 1e9)
        cpu.append(self_cpu_seconds())

    async def one(number: int, due: int) -> None:
        conn = await idle.get()
        sent = time.perf_counter_ns()
        try:
            status, _ = await conn.request(requests[number % len(requests)])
        except Exception as exc:
            if due >= window_from:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return  # the connection is broken: it does not go back to the pool
        done = time.perf_counter_ns()
        idle.put_nowait(conn)
        if status == 200 and window_from <= done <= window_to:
            in_window[0] += 1  # any request answered inside the window, warm-up ones too
        if due < window_from:
            return  # warm-up
        due_ns.append(due - window_from)
        latencies.append(done - due)
        service.append(done - sent)
        statuses[status] = statuses.get(status, 0) + 1

    marker = asyncio.create_task(mark_cpu())
    for number in range(total):
        due = origin + int(number * interval_ns)
        delay = (due - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(number, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await marker
    unfinished = 0
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=spec.grace)
        unfinished = len(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if unfinished:
        errors["no response within grace"] = unfinished
    for conn in conns:
        conn.close()
    return OpenLoopResult(
        planned=total - warmup_requests,
        completed_in_window=in_window[0],
        statuses=statuses,
        errors=errors,
        due_ns=due_ns.tobytes(),
        latencies_ns=latencies.tobytes(),
        service_ns=service.tobytes(),
        unfinished=unfinished,
        cpu_seconds=cpu[1] - cpu[0],
        late_start=max(0.0, late),
    )


def openloop_worker(conn: multiprocessing.connection.Connection, spec: OpenLoopSpec) -> None:
    child_main(conn, lambda: run_async(_run_open_loop(spec)))


def as_array(raw: bytes) -> array[int]:
    values = array("q")
    values.frombytes(raw)
    return values


# --- observing the backlog -----------------------------------------------------------------------
def dir_bytes(path: Path) -> tuple[int, int]:
    """(all files, WAL file) in bytes of a topic's directory."""
    total = wal = 0
    try:
        for f in path.iterdir():
            if f.is_file():
                size = f.stat().st_size
                total += size
                if f.name.endswith("-wal"):
                    wal = size
    except OSError:
        pass
    return total, wal


def partition_zero(port: int, topic: str) -> dict[str, int]:
    status, body = http_json(port, "GET", f"/v1/topics/{topic}")
    if status != 200:
        raise RuntimeError(f"GET /v1/topics/{topic} answered {status}: {body}")
    part: dict[str, int] = body["partitions"][0]
    return part


_REMOVED = re.compile(r"^eddy_records_removed_total\{([^}]*)\}\s+([0-9.e+]+)$", re.M)


def records_removed(port: int, topic: str, reason: str = "retention") -> float:
    """`eddy_records_removed_total{topic,reason}` from /metrics (0 when absent)."""
    status, body = http_json(port, "GET", "/metrics")
    if status != 200 or not isinstance(body, str):
        return float("nan")
    for labels, value in _REMOVED.findall(body):
        if f'topic="{topic}"' in labels and f'reason="{reason}"' in labels:
            return float(value)
    return 0.0


@dataclass
class Sample:
    at: float  # seconds after the window start
    log_start_offset: int
    high_watermark: int
    size_bytes: int
    disk_bytes: int
    wal_bytes: int


@dataclass
class Watcher:
    """Polls one partition's state and the topic's files; samples are relative to `origin`."""

    port: int
    topic: str
    topic_dir: Path
    origin: float  # wall-clock window start
    interval: float = 0.1
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> Sample:
        part = partition_zero(self.port, self.topic)
        disk, wal = dir_bytes(self.topic_dir)
        s = Sample(
            time.time() - self.origin,
            part["log_start_offset"],
            part["high_watermark"],
            part["size_bytes"],
            disk,
            wal,
        )
        self.samples.append(s)
        return s

    def run_until(self, wall_time: float, stop: Callable[[Sample], bool] | None = None) -> None:
        """Sample every `interval` s until `wall_time` (or until `stop(sample)` is true)."""
        while True:
            s = self.sample()
            if stop is not None and stop(s):
                return
            left = wall_time - time.time()
            if left <= 0:
                return
            time.sleep(min(self.interval, left))

    def first(self, test: Callable[[Sample], bool]) -> Sample | None:
        return next((s for s in self.samples if test(s)), None)


class Settled:
    """Stop condition after a deletion: every record gone and the space reclaim finished (the
    WAL truncated to 0 bytes, which the cleaner does last, or the files' size unchanged for
    `quiet` seconds)."""

    def __init__(self, quiet: float = 5.0) -> None:
        self.quiet = quiet
        self._size = -1
        self._since = 0.0
        self.reached = False

    def __call__(self, s: Sample) -> bool:
        if s.disk_bytes != self._size:
            self._size, self._since = s.disk_bytes, s.at
        if s.log_start_offset < s.high_watermark:
            return False
        self.reached = s.wal_bytes == 0 or s.at - self._since >= self.quiet
        return self.reached

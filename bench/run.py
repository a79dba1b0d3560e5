"""Eddy benchmark suite: `python -m bench.run [--quick]`.

Starts real servers (Eddy and minimal baselines) as subprocesses on free loopback ports with
temporary data dirs, drives them from separate load-generator processes, and prints one markdown
table (also written to bench/results/latest.md). Every Eddy figure sits beside a baseline measured
in the same run; the ratio is the headline. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from bench.common import (
    HOST,
    ServerProcess,
    eddy_server,
    http_json,
    machine_busy_seconds,
    percentile,
    raise_open_file_limit,
    raw_asgi_server,
    spawn_child,
    wait_until,
    ws_broadcast_server,
)
from bench.fanout import PhaseReport, PublishResult, publisher_worker, subscriber_worker
from bench.httpload import LoadResult, LoadSpec, load_worker, merge_latencies, summarize
from bench.retention import (
    FillResult,
    OpenLoopResult,
    OpenLoopSpec,
    Sample,
    Settled,
    Watcher,
    as_array,
    backlog_bodies,
    dir_bytes,
    fill_topic,
    mean_value_bytes,
    openloop_worker,
    partition_zero,
    records_removed,
)
from bench.sqlite_baseline import SqliteResult, SqliteSpec, sqlite_worker
from bench.wspublish import PublishLoadResult, PublishSpec, publish_worker

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECTIONS = ("produce", "batch", "wspublish", "fanout", "retention", "compression")
# "Other CPU" above this (cores) in a produce/batch row means something besides the benchmark
# competed for the machine. Fan-out rows are not checked: there Other is mostly the kernel's
# loopback networking, so an idle check before each fan-out run stands in.
BUSY_MACHINE_CPU = 0.6
IDLE_MACHINE_CPU = 0.3  # busy cores in the idle check before the fan-out runs


@dataclass(frozen=True)
class Config:
    quick: bool
    sections: tuple[str, ...]
    produce_seconds: float
    warmup_seconds: float
    produce_connections: int
    produce_processes: int
    batch_seconds: float
    batch_connections: int
    batch_size: int
    publish_window: int  # WebSocket publish: records sent and not yet acked, at most
    fanout_subscribers: int
    fanout_processes: int
    fanout_rates: tuple[float, ...]
    fanout_seconds: float
    drain_timeout: float
    sync_modes: tuple[str, ...]
    ws_client: str
    repeats: int
    backlog_records: int
    backlog_fill_budget: float  # seconds the backlog fill may take at most
    retention_rate: float  # single-record produce requests/s to `live`
    retention_connections: int
    retention_seconds: float  # each of the two measured windows
    reclaim_wait: float  # after the retention window, how long to wait for the space reclaim
    compression_rate: float  # records/s of the compression section's publisher


def make_config(args: argparse.Namespace) -> Config:
    quick = bool(args.quick)
    subscribers = args.subscribers or (200 if quick else 1000)
    processes = args.subscriber_processes or (2 if quick else 4)
    return Config(
        quick=quick,
        sections=tuple(args.only or SECTIONS),
        produce_seconds=1.5 if quick else 5.0,
        warmup_seconds=0.5 if quick else 1.0,
        produce_connections=32,
        produce_processes=args.client_processes,
        batch_seconds=1.5 if quick else 6.0,
        batch_connections=4,
        batch_size=1000,
        publish_window=1000,
        fanout_subscribers=subscribers,
        fanout_processes=min(processes, subscribers),
        fanout_rates=tuple(float(r) for r in args.rates.split(","))
        if args.rates
        else (50.0, 200.0),
        fanout_seconds=args.fanout_seconds or (2.5 if quick else 10.0),
        drain_timeout=8.0 if quick else 15.0,  # also the publisher's wait for missing acks
        sync_modes=("full",) if quick else ("full", "normal"),
        ws_client=args.ws_client,
        repeats=args.repeat or (1 if quick else 2),
        backlog_records=args.backlog or (100_000 if quick else 500_000),
        backlog_fill_budget=12.0 if quick else 45.0,
        retention_rate=200.0,
        retention_connections=4,
        retention_seconds=4.0 if quick else 10.0,
        reclaim_wait=8.0 if quick else 30.0,
        compression_rate=args.compression_rate or (10.0 if quick else 20.0),
    )


# --- results -------------------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    system: str
    throughput: str
    p50: str
    p99: str
    problems: str
    server_cpu: str
    loadgen_cpu: str
    other_cpu: str
    ratio: str = ""
    check_busy: bool = False  # flag the row when Other CPU says the machine was busy


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  !! {text}", flush=True)


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}"


def fmt_ms(ns_or_nan: float, scale: float = 1e6) -> str:
    value = ns_or_nan / scale
    if value != value:  # nan
        return "n/a"
    return f"{value:,.2f} ms" if value < 100 else f"{value:,.0f} ms"


def fmt_ratio(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return "n/a"
    return f"{value:.3f}x" if value < 0.1 else f"{value:.2f}x"


def _float(text: str) -> float:
    try:
        return float(text.lstrip("~"))
    except ValueError:
        return 0.0


def safe_div(a: float, b: float) -> float:
    return a / b if b else float("nan")


# --- servers -------------------------------------------------------------------------------------
@contextmanager
def running(server: ServerProcess, report: Report) -> Iterator[ServerProcess]:
    print(f"  starting {server.name} on {HOST}:{server.port}", flush=True)
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
        if code not in (0, None, -signal.SIGTERM):  # uvicorn re-raises SIGTERM after shutdown
            report.problem(f"{server.name} exited with code {code} on SIGTERM")
        blocks = server.log_problems()
        if blocks:
            first = blocks[0].splitlines()
            summary = first[0] if len(first) == 1 else f"{first[0]} ... {first[-1]}"
            report.problem(
                f"{server.name} logged {len(blocks)} warning(s)/error(s); first: {summary[:300]}"
            )
            report.details.append(
                f"Log excerpt of {server.name}:\n\n```\n" + "\n".join(blocks[:5]) + "\n```"
            )


def create_topic(server: ServerProcess, name: str, partitions: int = 1) -> None:
    status, body = http_json(
        server.port, "POST", "/v1/topics", {"name": name, "partitions": partitions}
    )
    if status != 201:
        raise RuntimeError(f"creating topic {name} failed: {status} {body}")


# --- HTTP produce --------------------------------------------------------------------------------
@dataclass
class HttpMeasurement:
    requests_per_s: float
    records_per_s: float
    p50_ns: float
    p99_ns: float
    statuses: dict[int, int]
    errors: dict[str, int]
    server_cpu: float
    loadgen_cpu: float
    other_cpu: float


def measure_http(
    server: ServerProcess,
    path: str,
    bodies: list[bytes],
    records_per_body: int,
    connections: int,
    processes: int,
    warmup: float,
    duration: float,
) -> HttpMeasurement:
    start_at = time.time() + 1.5  # time for the client processes to start and connect
    per_process = [
        connections // processes + (i < connections % processes) for i in range(processes)
    ]
    children = [
        spawn_child(
            load_worker,
            LoadSpec(server.port, path, bodies, records_per_body, n, start_at, warmup, duration),
        )
        for n in per_process
    ]
    try:
        wait_until(start_at + warmup)
        cpu_from, busy_from = server.cpu_seconds(), machine_busy_seconds()
        wait_until(start_at + warmup + duration)
        cpu_to, busy_to = server.cpu_seconds(), machine_busy_seconds()
        results: list[LoadResult] = [c.receive(duration + warmup + 90) for c in children]
    finally:
        for c in children:
            c.stop()
    total = summarize(results)
    if total["late_start"] > 0.5:
        total["errors"]["client_started_late"] = 1
    latencies = merge_latencies(results)
    return HttpMeasurement(
        requests_per_s=total["requests"] / duration,
        records_per_s=total["records"] / duration,
        p50_ns=percentile(latencies, 0.50),
        p99_ns=percentile(latencies, 0.99),
        statuses=total["statuses"],
        errors=total["errors"],
        server_cpu=(cpu_to - cpu_from) / duration,
        loadgen_cpu=total["cpu_seconds"] / duration,
        other_cpu=max(
            0.0, (busy_to - busy_from - (cpu_to - cpu_from) - total["cpu_seconds"]) / duration
        ),
    )


def http_problems(m: HttpMeasurement) -> str:
    bad = {s: n for s, n in m.statuses.items() if s != 200}
    parts = [f"{n}x HTTP {s}" for s, n in sorted(bad.items())]
    parts += [f"{n}x {name}" for name, n in sorted(m.errors.items())]
    return ", ".join(parts) or "0"


def single_bodies() -> list[bytes]:
    return [
        orjson.dumps(
            {
                "key": f"sensor-{i:04d}",
                "value": {"sensor": f"s-{i:04d}", "reading": 21.375, "seq": i, "unit": "celsius"},
            }
        )
        for i in range(64)
    ]


def least_disturbed(
    label: str, runs: list[HttpMeasurement], report: Report, unit: str = "req/s"
) -> HttpMeasurement:
    """Of repeated measurements, the one with the least other activity on the machine."""
    if len(runs) > 1:
        report.details.append(
            f"{label}: repetitions "
            + ", ".join(
                f"{r.requests_per_s if unit == 'req/s' else r.records_per_s:,.0f} {unit} "
                f"(other CPU {r.other_cpu:.2f})"
                for r in runs
            )
            + "; the table shows the one with the least other CPU."
        )
    return min(runs, key=lambda r: r.other_cpu)


def bench_produce(cfg: Config, tmp: Path, report: Report) -> None:
    section = f"1. Single-record produce, {cfg.produce_connections} keep-alive clients"
    print(f"== {section}", flush=True)
    bodies = single_bodies()
    path = "/v1/topics/produce/records"

    def measure(server: ServerProcess, label: str) -> HttpMeasurement:
        runs = []
        for _ in range(cfg.repeats):
            m = measure_http(
                server,
                path,
                bodies,
                1,
                cfg.produce_connections,
                cfg.produce_processes,
                cfg.warmup_seconds,
                cfg.produce_seconds,
            )
            print(
                f"  {label}: {m.requests_per_s:,.0f} req/s (other CPU {m.other_cpu:.2f})",
                flush=True,
            )
            runs.append(m)
        return least_disturbed(f"Single produce, {label}", runs, report)

    with running(raw_asgi_server(tmp), report) as raw:
        base = measure(raw, "raw ASGI")
    report.rows.append(
        Row(
            section,
            "baseline: raw ASGI app on uvicorn",
            fmt_rate(base.requests_per_s, "req/s"),
            fmt_ms(base.p50_ns),
            fmt_ms(base.p99_ns),
            http_problems(base),
            f"{base.server_cpu:.2f}",
            f"{base.loadgen_cpu:.2f}",
            f"{base.other_cpu:.2f}",
            "1.00x (reference)",
            check_busy=True,
        )
    )
    for sync in cfg.sync_modes:
        with running(eddy_server(tmp / f"produce-{sync}", tmp, sync), report) as eddy:
            create_topic(eddy, "produce")
            m = measure(eddy, f"Eddy --sync {sync}")
        if http_problems(m) != "0":
            report.problem(f"single produce, Eddy --sync {sync}: {http_problems(m)}")
        report.rows.append(
            Row(
                section,
                f"Eddy `--sync {sync}`",
                fmt_rate(m.requests_per_s, "req/s"),
                fmt_ms(m.p50_ns),
                fmt_ms(m.p99_ns),
                http_problems(m),
                f"{m.server_cpu:.2f}",
                f"{m.loadgen_cpu:.2f}",
                f"{m.other_cpu:.2f}",
                f"**{fmt_ratio(safe_div(m.requests_per_s, base.requests_per_s))}** req/s; "
                f"p50 {fmt_ratio(safe_div(m.p50_ns, base.p50_ns))}, "
                f"p99 {fmt_ratio(safe_div(m.p99_ns, base.p99_ns))}",
                check_busy=True,
            )
        )


# --- batch produce -------------------------------------------------------------------------------
def batch_records(batch_size: int, batch_number: int) -> list[tuple[str, bytes]]:
    """(key, compact JSON value) of one batch; values are ~70 bytes."""
    out = []
    for i in range(batch_size):
        n = batch_number * batch_size + i
        value = {
            "sensor": f"s-{n % 997:04d}",
            "reading": round(20 + (n % 100) / 8, 3),
            "seq": n,
            "unit": "celsius",
        }
        out.append((f"sensor-{n % 997:04d}", orjson.dumps(value)))
    return out


@dataclass
class SqliteMeasurement:
    records_per_s: float
    p50_ns: float
    p99_ns: float
    cpu: float
    other_cpu: float


def measure_sqlite(
    cfg: Config, tmp: Path, sync: str, batch: list[tuple[str, bytes]]
) -> SqliteMeasurement:
    db = tmp / f"sqlite-{sync}-{time.monotonic_ns()}.db"
    spec = SqliteSpec(str(db), sync.upper(), batch, cfg.warmup_seconds, cfg.batch_seconds)
    busy_from, wall_from = machine_busy_seconds(), time.monotonic()
    child = spawn_child(sqlite_worker, spec)
    try:
        result: SqliteResult = child.receive(cfg.batch_seconds + cfg.warmup_seconds + 60)
    finally:
        child.stop()
    # The child times its own window; the machine is sampled around the whole child, so the
    # child's start-up and warm-up are spread over the figure (hence the "~" in the table).
    wall = time.monotonic() - wall_from
    machine = (machine_busy_seconds() - busy_from) / wall
    latencies = sorted(result.latencies_ns)
    cpu = result.cpu_seconds / result.wall_seconds
    return SqliteMeasurement(
        records_per_s=result.records / result.wall_seconds,
        p50_ns=percentile(latencies, 0.5),
        p99_ns=percentile(latencies, 0.99),
        cpu=cpu,
        other_cpu=max(0.0, machine - cpu * result.wall_seconds / wall),
    )


def batch_bodies(batches: list[list[tuple[str, bytes]]]) -> list[bytes]:
    """The produce request body of each batch."""
    return [
        b'{"records":['
        + b",".join(b'{"key":"%s","value":%s}' % (k.encode(), v) for k, v in batch)
        + b"]}"
        for batch in batches
    ]


def measure_batch_rest(
    cfg: Config, eddy: ServerProcess, topic: str, bodies: list[bytes]
) -> HttpMeasurement:
    return measure_http(
        eddy,
        f"/v1/topics/{topic}/records",
        bodies,
        cfg.batch_size,
        cfg.batch_connections,
        1,
        cfg.warmup_seconds,
        cfg.batch_seconds,
    )


def bench_batch(cfg: Config, tmp: Path, report: Report) -> None:
    section = (
        f"2. Batch produce, {cfg.batch_size:,} records/request, "
        f"{cfg.batch_connections} concurrent clients"
    )
    print(f"== {section}", flush=True)
    batches = [batch_records(cfg.batch_size, b) for b in range(4)]
    bodies = batch_bodies(batches)
    value_bytes = sum(len(v) for _, v in batches[0]) / cfg.batch_size
    report.details.append(
        f"Batch produce: request body {len(bodies[0]) / 1024:.0f} KiB for {cfg.batch_size:,} "
        f"records, mean value {value_bytes:.0f} bytes."
    )
    for sync in cfg.sync_modes:
        label = f"sqlite3 synchronous={sync.upper()}"
        runs = []
        for _ in range(cfg.repeats):
            b = measure_sqlite(cfg, tmp, sync, batches[0])
            print(f"  {label}: {b.records_per_s:,.0f} rec/s (other CPU ~{b.other_cpu:.2f})")
            runs.append(b)
        if len(runs) > 1:
            report.details.append(
                f"Batch produce, {label}: repetitions "
                + ", ".join(
                    f"{r.records_per_s:,.0f} rec/s (other CPU ~{r.other_cpu:.2f})" for r in runs
                )
                + "; the table shows the one with the least other CPU."
            )
        base = min(runs, key=lambda r: r.other_cpu)
        report.rows.append(
            Row(
                section,
                f"baseline: Python sqlite3, WAL, synchronous={sync.upper()}, executemany",
                fmt_rate(base.records_per_s, "rec/s"),
                fmt_ms(base.p50_ns),
                fmt_ms(base.p99_ns),
                "0",
                f"{base.cpu:.2f}",
                "(in-process)",
                f"~{base.other_cpu:.2f}",
                "1.00x (reference)",
                check_busy=True,
            )
        )
        with running(eddy_server(tmp / f"batch-{sync}", tmp, sync), report) as eddy:
            create_topic(eddy, "batch")
            eddy_runs = []
            for _ in range(cfg.repeats):
                m = measure_batch_rest(cfg, eddy, "batch", bodies)
                print(
                    f"  Eddy --sync {sync}: {m.records_per_s:,.0f} rec/s "
                    f"(other CPU {m.other_cpu:.2f})",
                    flush=True,
                )
                eddy_runs.append(m)
        m = least_disturbed(f"Batch produce, Eddy --sync {sync}", eddy_runs, report, "rec/s")
        if http_problems(m) != "0":
            report.problem(f"batch produce, Eddy --sync {sync}: {http_problems(m)}")
        report.rows.append(
            Row(
                section,
                f"Eddy `--sync {sync}`",
                fmt_rate(m.records_per_s, "rec/s"),
                fmt_ms(m.p50_ns),
                fmt_ms(m.p99_ns),
                http_problems(m),
                f"{m.server_cpu:.2f}",
                f"{m.loadgen_cpu:.2f}",
                f"{m.other_cpu:.2f}",
                f"**{fmt_ratio(safe_div(m.records_per_s, base.records_per_s))}** rec/s",
                check_busy=True,
            )
        )


# --- WebSocket publish ---------------------------------------------------------------------------
def measure_wspublish(
    cfg: Config, server: ServerProcess, topic: str, records: list[tuple[str, bytes]]
) -> HttpMeasurement:
    bodies = [b'{"key":"%s","value":%s}' % (k.encode(), v) for k, v in records]
    start_at = time.time() + 1.5  # time for the client process to start and connect
    spec = PublishSpec(
        server.port,
        f"/v1/topics/{topic}/publish",
        bodies,
        cfg.publish_window,
        start_at,
        cfg.warmup_seconds,
        cfg.batch_seconds,
    )
    child = spawn_child(publish_worker, spec)
    duration = cfg.batch_seconds
    try:
        wait_until(start_at + cfg.warmup_seconds)
        cpu_from, busy_from = server.cpu_seconds(), machine_busy_seconds()
        wait_until(start_at + cfg.warmup_seconds + duration)
        cpu_to, busy_to = server.cpu_seconds(), machine_busy_seconds()
        result: PublishLoadResult = child.receive(duration + cfg.warmup_seconds + 60)
    finally:
        child.stop()
    latencies = array("q")
    latencies.frombytes(result.latencies_ns)
    ordered = sorted(latencies)
    server_cpu = cpu_to - cpu_from
    return HttpMeasurement(
        requests_per_s=result.acked / duration,
        records_per_s=result.acked / duration,
        p50_ns=percentile(ordered, 0.50),
        p99_ns=percentile(ordered, 0.99),
        statuses={200: result.acked},
        errors=result.errors,
        server_cpu=server_cpu / duration,
        loadgen_cpu=result.cpu_seconds / duration,
        other_cpu=max(0.0, (busy_to - busy_from - server_cpu - result.cpu_seconds) / duration),
    )


def bench_wspublish(cfg: Config, tmp: Path, report: Report) -> None:
    """WebSocket publish over one connection beside batch REST produce on the same server."""
    section = (
        f"5. WebSocket publish, one connection, up to {cfg.publish_window:,} records awaiting "
        "their ack"
    )
    print(f"== {section}", flush=True)
    batches = [batch_records(cfg.batch_size, b) for b in range(4)]
    bodies = batch_bodies(batches)
    with running(eddy_server(tmp / "wspublish", tmp, "full"), report) as eddy:
        create_topic(eddy, "batch")
        create_topic(eddy, "wspublish")
        rest_runs, ws_runs = [], []
        for _ in range(cfg.repeats):
            m = measure_batch_rest(cfg, eddy, "batch", bodies)
            print(f"  Eddy batch REST: {m.records_per_s:,.0f} rec/s (other CPU {m.other_cpu:.2f})")
            rest_runs.append(m)
            m = measure_wspublish(cfg, eddy, "wspublish", batches[0])
            print(f"  Eddy /publish: {m.records_per_s:,.0f} rec/s (other CPU {m.other_cpu:.2f})")
            ws_runs.append(m)
    base = least_disturbed("WebSocket publish, batch REST baseline", rest_runs, report, "rec/s")
    m = least_disturbed("WebSocket publish", ws_runs, report, "rec/s")
    report.rows.append(
        Row(
            section,
            f"baseline: Eddy `--sync full` batch REST ({cfg.batch_size:,} records/request, "
            f"{cfg.batch_connections} connections), same server",
            fmt_rate(base.records_per_s, "rec/s"),
            fmt_ms(base.p50_ns),
            fmt_ms(base.p99_ns),
            http_problems(base),
            f"{base.server_cpu:.2f}",
            f"{base.loadgen_cpu:.2f}",
            f"{base.other_cpu:.2f}",
            "1.00x (reference)",
            check_busy=True,
        )
    )
    if http_problems(m) != "0":
        report.problem(f"WebSocket publish: {http_problems(m)}")
    report.rows.append(
        Row(
            section,
            "Eddy `--sync full` `/publish`, one record per frame (p50/p99: send to ack)",
            fmt_rate(m.records_per_s, "rec/s"),
            fmt_ms(m.p50_ns),
            fmt_ms(m.p99_ns),
            http_problems(m),
            f"{m.server_cpu:.2f}",
            f"{m.loadgen_cpu:.2f}",
            f"{m.other_cpu:.2f}",
            f"**{fmt_ratio(safe_div(m.records_per_s, base.records_per_s))}** rec/s",
            check_busy=True,
        )
    )


# --- fan-out -------------------------------------------------------------------------------------
@dataclass
class FanoutPhase:
    rate: float
    planned: int
    offered_per_s: float
    delivered: int
    delivered_per_s: float
    p50_us: float
    p99_us: float
    lost: int
    gaps: int
    duplicates: int
    close_codes: dict[str, int]
    publish: PublishResult
    server_cpu: float
    loadgen_cpu: float
    other_cpu: float
    drain_seconds: float
    stalled: bool
    server_peak_mib: float
    wall: float  # seconds of the measured window (the CPU figures are per wall second)
    server_cpu_seconds: float
    loadgen_cpu_seconds: float


def run_fanout(
    cfg: Config,
    server: ServerProcess,
    sub_url: str,
    pub_url: str,
    report: Report,
) -> tuple[int, list[FanoutPhase]]:
    sizes = [
        cfg.fanout_subscribers // cfg.fanout_processes
        + (i < cfg.fanout_subscribers % cfg.fanout_processes)
        for i in range(cfg.fanout_processes)
    ]
    subs = [spawn_child(subscriber_worker, sub_url, n, cfg.ws_client) for n in sizes]
    phases: list[FanoutPhase] = []
    try:
        t_connect = time.monotonic()
        hello = [s.receive(180) for s in subs]
        connected = sum(h["connected"] for h in hello)
        connect_errors: dict[str, int] = {}
        for h in hello:
            for k, v in h["errors"].items():
                connect_errors[k] = connect_errors.get(k, 0) + v
        print(
            f"  {connected}/{cfg.fanout_subscribers} subscribers connected in "
            f"{time.monotonic() - t_connect:.1f}s",
            flush=True,
        )
        if connect_errors:
            report.problem(f"{server.name}: subscriber connect errors {connect_errors}")
        previous_codes: dict[str, int] = {}
        for number, rate in enumerate(cfg.fanout_rates):
            start_at = time.time() + 2.0  # publisher process start-up and connect
            publisher = spawn_child(
                publisher_worker,
                pub_url,
                rate,
                cfg.fanout_seconds,
                number,
                start_at,
                cfg.drain_timeout,
            )
            try:
                wait_until(start_at)
                sub_cpu_from = sum(s.request(("snapshot",), 30)["cpu"] for s in subs)
                server_cpu_from = server.cpu_seconds()
                busy_from = machine_busy_seconds()
                wall_from = time.time()
                pub: PublishResult = publisher.receive(cfg.fanout_seconds + 90)
            finally:
                publisher.stop()
            expected = pub.acked
            for s in subs:
                s.conn.send(("drain", number, expected, cfg.drain_timeout))
            reports: list[PhaseReport] = [s.receive(cfg.drain_timeout + 60) for s in subs]
            wall = time.time() - wall_from
            server_cpu = server.cpu_seconds() - server_cpu_from
            busy = machine_busy_seconds() - busy_from
            sub_cpu = sum(r.cpu for r in reports) - sub_cpu_from
            latencies: list[int] = []
            for r in reports:
                values = array("q")
                values.frombytes(r.latencies_us)
                latencies.extend(values)
            latencies.sort()
            codes: dict[str, int] = {}
            for r in reports:
                for k, v in r.close_codes.items():
                    codes[k] = codes.get(k, 0) + v
            new_codes = {k: v - previous_codes.get(k, 0) for k, v in codes.items()}
            new_codes = {k: v for k, v in new_codes.items() if v}
            previous_codes = codes
            delivered = sum(r.received for r in reports)
            last_ns = max((r.last_ns for r in reports if r.last_ns), default=0)
            # From the first send to the last receive (at least the publishing time itself).
            span = (
                max((last_ns - pub.first_send_ns) / 1e9, cfg.fanout_seconds)
                if last_ns and pub.sent
                else 0.0
            )
            phase = FanoutPhase(
                rate=rate,
                planned=int(rate * cfg.fanout_seconds),
                offered_per_s=rate * connected,
                delivered=delivered,
                delivered_per_s=safe_div(delivered, span),
                p50_us=percentile(latencies, 0.5),
                p99_us=percentile(latencies, 0.99),
                lost=sum(r.missing for r in reports),
                gaps=sum(r.gaps for r in reports),
                duplicates=sum(r.duplicates for r in reports),
                close_codes=new_codes,
                publish=pub,
                server_cpu=server_cpu / wall,
                loadgen_cpu=(sub_cpu + pub.cpu) / wall,
                other_cpu=max(0.0, (busy - server_cpu - sub_cpu - pub.cpu) / wall),
                drain_seconds=max(r.drain_seconds for r in reports),
                stalled=any(r.stalled for r in reports),
                server_peak_mib=server.memory_mib()[1],
                wall=wall,
                server_cpu_seconds=server_cpu,
                loadgen_cpu_seconds=sub_cpu + pub.cpu,
            )
            phases.append(phase)
            print(
                f"  {rate:.0f} rec/s: delivered {phase.delivered_per_s:,.0f}/s, "
                f"p50 {phase.p50_us / 1000:.1f} ms, p99 {phase.p99_us / 1000:.1f} ms, "
                f"lost {phase.lost}, closes {new_codes or 'none'}, acked {pub.acked}/{pub.sent}",
                flush=True,
            )
    finally:
        for s in subs:
            try:
                s.conn.send(("close",))
                s.receive(30)
            except Exception as exc:
                report.problem(f"{server.name}: closing subscribers: {exc}")
            s.stop()
    return connected, phases


def idle_check(report: Report, before: str, seconds: float = 1.0) -> None:
    """Fan-out rows cannot tell other work from kernel networking in Other CPU, so sample the
    machine while nothing of the benchmark runs."""
    busy_from = machine_busy_seconds()
    time.sleep(seconds)
    busy = (machine_busy_seconds() - busy_from) / seconds
    report.details.append(f"Idle check before {before}: machine busy {busy:.2f} cores.")
    if busy > IDLE_MACHINE_CPU:
        report.problem(
            f"the machine was busy ({busy:.2f} cores) with other work just before {before}; "
            "those figures are less reliable"
        )


def fanout_problems(phase: FanoutPhase) -> str:
    parts = [f"lost {phase.lost:,}"]
    closes = ", ".join(f"{n}x {code}" for code, n in sorted(phase.close_codes.items()))
    parts.append(f"closed: {closes}" if closes else "closed: 0")
    if phase.gaps or phase.duplicates:
        parts.append(f"gaps {phase.gaps}, dups {phase.duplicates}")
    pub = phase.publish
    if pub.acked != phase.planned or pub.errors:
        parts.append(
            f"publisher: {pub.acked:,} acked / {pub.sent:,} sent / {phase.planned:,} planned"
            + "".join(f"; {n}x {e}" for e, n in sorted(pub.errors.items()))
        )
    if phase.stalled:
        parts.append("drain stalled")
    return "; ".join(parts)


def bench_fanout(cfg: Config, tmp: Path, report: Report) -> None:
    section = f"3. Fan-out to {cfg.fanout_subscribers:,} WebSocket subscribers"
    print(f"== {section}", flush=True)
    idle_check(report, "the fan-out baseline")
    with running(ws_broadcast_server(tmp), report) as base_server:
        url = f"ws://{HOST}:{base_server.port}"
        _, base = run_fanout(cfg, base_server, f"{url}/sub", f"{url}/publish", report)
    idle_check(report, "the Eddy fan-out")
    with running(eddy_server(tmp / "fanout", tmp, "full"), report) as eddy:
        create_topic(eddy, "fanout")
        url = f"ws://{HOST}:{eddy.port}/v1/topics/fanout"
        _, mine = run_fanout(cfg, eddy, f"{url}/ws?from=latest", f"{url}/publish", report)
    for b, m in zip(base, mine, strict=True):
        label = f"{section}, publisher at {m.rate:.0f} rec/s for {cfg.fanout_seconds:g} s"
        for system, p, ratio in (
            ("baseline: `websockets` broadcast server", b, "1.00x (reference)"),
            (
                "Eddy `--sync full`",
                m,
                f"delivered **{fmt_ratio(safe_div(m.delivered_per_s, b.delivered_per_s))}**; "
                f"p50 **{fmt_ratio(safe_div(m.p50_us, b.p50_us))}**, "
                f"p99 **{fmt_ratio(safe_div(m.p99_us, b.p99_us))}**",
            ),
        ):
            report.rows.append(
                Row(
                    label,
                    system,
                    f"{p.delivered_per_s:,.0f} rec/s delivered (offered {p.offered_per_s:,.0f}/s)",
                    fmt_ms(p.p50_us, 1e3),
                    fmt_ms(p.p99_us, 1e3),
                    fanout_problems(p),
                    f"{p.server_cpu:.2f}",
                    f"{p.loadgen_cpu:.2f}",
                    f"{p.other_cpu:.2f}",
                    ratio,
                )
            )
            acks = sorted(p.publish.ack_latencies_us)
            report.details.append(
                f"Fan-out {p.rate:.0f} rec/s, {system}: {p.delivered:,} records delivered, "
                f"drain {p.drain_seconds:.1f} s, publish ack p50 "
                f"{fmt_ms(percentile(acks, 0.5), 1e3)} / p99 "
                f"{fmt_ms(percentile(acks, 0.99), 1e3)}, server peak RSS "
                f"{p.server_peak_mib:.0f} MiB."
            )
        if set(m.publish.errors) - {"ack_timeout"}:  # slow acks alone are overload, not a bug
            report.problem(
                f"fan-out at {m.rate:.0f} rec/s: Eddy acked {m.publish.acked:,} of "
                f"{m.publish.sent:,} sent of {int(m.rate * cfg.fanout_seconds):,} planned records; "
                f"publisher errors {m.publish.errors}"
            )
        if m.lost or any(code == "4408" for code in m.close_codes):
            report.problem(
                f"fan-out at {m.rate:.0f} rec/s: Eddy lost {m.lost:,} record deliveries; "
                f"closes {m.close_codes}"
            )


# --- permessage-deflate on the fan-out ----------------------------------------------------------
def bytes_out(server: ServerProcess) -> float:
    """Record bytes Eddy has written to subscribers (`eddy_bytes_out_total`: the frames as sent,
    compressed ones for permessage-deflate subscribers)."""
    with urllib.request.urlopen(f"http://{HOST}:{server.port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("eddy_bytes_out_total")
    )


def bench_compression(cfg: Config, tmp: Path, report: Report) -> None:
    """The same fan-out with and without compression in one run, the `websockets` client on
    both sides of the comparison (every subscriber offers permessage-deflate, or none does),
    alternating `--repeat` times; CPU per delivered frame, server and clients. Each variant's
    row is its repetition with the least other CPU on the machine (all are in Details)."""
    rate = cfg.compression_rate
    section = (
        f"6. permessage-deflate: {cfg.fanout_subscribers:,} subscribers (`websockets` client), "
        f"{rate:.0f} rec/s for {cfg.fanout_seconds:g} s"
    )
    print(f"== {section}", flush=True)
    variants = (
        ("Eddy, no compression", "websockets"),
        ("Eddy, permessage-deflate", "websockets-deflate"),
    )
    runs: dict[str, list[tuple[FanoutPhase, float]]] = {label: [] for label, _ in variants}
    for repetition in range(cfg.repeats):
        for label, client in variants:
            idle_check(report, f"the fan-out of '{label}' ({repetition + 1}/{cfg.repeats})")
            data = tmp / f"compression-{client}-{repetition}"
            with running(eddy_server(data, tmp, "full"), report) as eddy:
                create_topic(eddy, "fanout")
                url = f"ws://{HOST}:{eddy.port}/v1/topics/fanout"
                run_cfg = replace(cfg, ws_client=client, fanout_rates=(rate,))
                wire_from = bytes_out(eddy)
                _, phases = run_fanout(
                    run_cfg, eddy, f"{url}/ws?from=latest", f"{url}/publish", report
                )
                runs[label].append((phases[0], bytes_out(eddy) - wire_from))

    def per_frame_us(seconds: float, phase: FanoutPhase) -> float:
        return safe_div(seconds, phase.delivered) * 1e6

    chosen = {label: min(r, key=lambda run: run[0].other_cpu) for label, r in runs.items()}
    plain = chosen[variants[0][0]][0]
    plain_server_us = per_frame_us(plain.server_cpu_seconds, plain)
    plain_client_us = per_frame_us(plain.loadgen_cpu_seconds, plain)
    for label, _ in variants:
        report.details.append(
            f"{label}: server / client CPU per frame in each repetition: "
            + ", ".join(
                f"{per_frame_us(p.server_cpu_seconds, p):.2f} / "
                f"{per_frame_us(p.loadgen_cpu_seconds, p):.2f} µs (other CPU {p.other_cpu:.2f})"
                for p, _ in runs[label]
            )
            + "."
        )
        phase, wire = chosen[label]
        server_us = per_frame_us(phase.server_cpu_seconds, phase)
        client_us = per_frame_us(phase.loadgen_cpu_seconds, phase)
        ratio = (
            "1.00x (reference)"
            if phase is plain
            else f"server CPU/frame **{fmt_ratio(safe_div(server_us, plain_server_us))}**, "
            f"client CPU/frame **{fmt_ratio(safe_div(client_us, plain_client_us))}**"
        )
        report.rows.append(
            Row(
                section,
                label,
                f"{phase.delivered_per_s:,.0f} frames/s; server {server_us:.2f} µs CPU/frame, "
                f"clients {client_us:.2f} µs CPU/frame; "
                f"{safe_div(wire, phase.delivered):.0f} B/frame on the wire",
                fmt_ms(phase.p50_us, 1e3),
                fmt_ms(phase.p99_us, 1e3),
                fanout_problems(phase),
                f"{phase.server_cpu:.2f}",
                f"{phase.loadgen_cpu:.2f}",
                f"{phase.other_cpu:.2f}",
                ratio,
            )
        )


# --- produce latency while retention deletes a backlog -------------------------------------------
RETENTION_GRACE = 10.0  # seconds a window's last requests may still take after the window


@dataclass
class RetentionWindow:
    result: OpenLoopResult
    latencies: list[int]  # sorted, ns, due -> response
    achieved_per_s: float
    server_cpu: float
    loadgen_cpu: float
    other_cpu: float
    watcher: Watcher
    patched_at: float | None  # seconds after the window start at which the PATCH was answered
    server_peak_mib: float

    def pct(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)

    @property
    def max_ns(self) -> float:
        return float(self.latencies[-1]) if self.latencies else float("nan")


def measure_retention_window(
    cfg: Config, server: ServerProcess, topic_dir: Path, patch: bool
) -> RetentionWindow:
    """Open-loop single-record produce to `live` for one window; with `patch`, set the backlog's
    retention.ms to 0 at the window start. The runner polls the backlog meanwhile."""
    start_at = time.time() + 1.5  # time for the client process to start and connect
    window_from = start_at + cfg.warmup_seconds
    spec = OpenLoopSpec(
        server.port,
        "/v1/topics/live/records",
        single_bodies(),
        cfg.retention_rate,
        cfg.retention_connections,
        start_at,
        cfg.warmup_seconds,
        cfg.retention_seconds,
        RETENTION_GRACE,
    )
    child = spawn_child(openloop_worker, spec)
    watcher = Watcher(server.port, "backlog", topic_dir, window_from)
    patched_at = None
    try:
        wait_until(window_from)
        cpu_from, busy_from = server.cpu_seconds(), machine_busy_seconds()
        if patch:
            status, body = http_json(
                server.port, "PATCH", "/v1/topics/backlog", {"config": {"retention.ms": 0}}
            )
            if status != 200:
                raise RuntimeError(f"PATCH /v1/topics/backlog answered {status}: {body}")
            patched_at = time.time() - window_from
        watcher.run_until(window_from + cfg.retention_seconds)
        cpu_to, busy_to = server.cpu_seconds(), machine_busy_seconds()
        wall = time.time() - window_from
        result: OpenLoopResult = child.receive(
            cfg.retention_seconds + cfg.warmup_seconds + RETENTION_GRACE + 60
        )
    finally:
        child.stop()
    if result.late_start > 0.5:
        result.errors["client_started_late"] = 1
    server_cpu = cpu_to - cpu_from
    return RetentionWindow(
        result=result,
        latencies=sorted(as_array(result.latencies_ns)),
        achieved_per_s=result.completed_in_window / cfg.retention_seconds,
        server_cpu=server_cpu / wall,
        loadgen_cpu=result.cpu_seconds / cfg.retention_seconds,
        other_cpu=max(0.0, (busy_to - busy_from - server_cpu - result.cpu_seconds) / wall),
        watcher=watcher,
        patched_at=patched_at,
        server_peak_mib=server.memory_mib()[1],
    )


def open_loop_problems(w: RetentionWindow) -> str:
    bad = {s: n for s, n in w.result.statuses.items() if s != 200}
    parts = [f"{n}x HTTP {s}" for s, n in sorted(bad.items())]
    parts += [f"{n}x {name}" for name, n in sorted(w.result.errors.items())]
    return ", ".join(parts) or "0"


def latency_between(w: RetentionWindow, lo: float, hi: float) -> str:
    """p50/p99/max of the requests due between `lo` and `hi` seconds into the window."""
    due, lat = as_array(w.result.due_ns), as_array(w.result.latencies_ns)
    values = sorted(x for d, x in zip(due, lat, strict=True) if lo * 1e9 <= d < hi * 1e9)
    if not values:
        return "no requests"
    return (
        f"{len(values):,} requests, p50 {fmt_ms(percentile(values, 0.5))}, "
        f"p99 {fmt_ms(percentile(values, 0.99))}, max {fmt_ms(values[-1])}"
    )


def max_per_second(w: RetentionWindow, seconds: float) -> str:
    """Max latency (ms) of the requests due in each second of the window."""
    buckets = [0] * max(1, round(seconds))
    for d, x in zip(as_array(w.result.due_ns), as_array(w.result.latencies_ns), strict=True):
        i = min(len(buckets) - 1, d // 1_000_000_000)
        buckets[i] = max(buckets[i], x)
    return ", ".join(f"{b / 1e6:.0f}" if b >= 1e7 else f"{b / 1e6:.1f}" for b in buckets)


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 / 10 else f"{n / 1024:,.0f} KiB"


def bench_retention(cfg: Config, tmp: Path, report: Report) -> None:
    section = "4. Produce latency while retention deletes a large backlog"
    print(f"== {section}", flush=True)
    data_dir = tmp / "retention"
    topic_dir = data_dir / "topics" / "backlog"
    server = eddy_server(data_dir, tmp, "full", ("--retention-check-interval", "1"))
    with running(server, report) as eddy:
        create_topic(eddy, "backlog")
        create_topic(eddy, "live")
        bodies = backlog_bodies(cfg.batch_size)
        target = cfg.backlog_records

        def progress(records: int, seconds: float) -> None:
            print(
                f"  fill: {records:,} / {target:,} records after {seconds:.0f} s "
                f"({safe_div(records, seconds):,.0f} rec/s)",
                flush=True,
            )

        fill: FillResult = fill_topic(
            eddy.port,
            "backlog",
            bodies,
            cfg.batch_size,
            target,
            4,
            cfg.backlog_fill_budget,
            progress,
        )
        print(f"  filled {fill.records:,} records in {fill.seconds:.1f} s", flush=True)
        if fill.errors:
            raise RuntimeError(f"filling the backlog failed: {fill.errors}")
        time.sleep(1.0)  # let the last fill commit settle before the baseline
        before = partition_zero(eddy.port, "backlog")
        disk_before, wal_before = dir_bytes(topic_dir)
        removed_before = records_removed(eddy.port, "backlog")
        backlog = before["high_watermark"] - before["log_start_offset"]
        report.details.append(
            f"Retention: backlog of {backlog:,} records (mean value "
            f"{mean_value_bytes(bodies[0]):.0f} bytes; size_bytes {mib(before['size_bytes'])}) "
            f"filled in {fill.seconds:.1f} s ({safe_div(fill.records, fill.seconds):,.0f} rec/s, "
            f"4 connections x {cfg.batch_size:,}-record batches)"
            + (
                ""
                if fill.reached_target
                else f"; the {cfg.backlog_fill_budget:g} s fill budget ran out before the "
                f"{target:,}-record target"
            )
            + "."
        )

        base_runs = []
        for _ in range(cfg.repeats):
            m = measure_retention_window(cfg, eddy, topic_dir, patch=False)
            print(
                f"  baseline: {m.achieved_per_s:,.0f} req/s, p99 {fmt_ms(m.pct(0.99))}, "
                f"max {fmt_ms(m.max_ns)} (other CPU {m.other_cpu:.2f})",
                flush=True,
            )
            if any(s.log_start_offset != before["log_start_offset"] for s in m.watcher.samples):
                report.problem("retention: the backlog changed during a baseline window")
            base_runs.append(m)
        base = min(base_runs, key=lambda r: r.other_cpu)
        if len(base_runs) > 1:
            report.details.append(
                "Retention, baseline: repetitions "
                + ", ".join(
                    f"p99 {fmt_ms(r.pct(0.99))} (other CPU {r.other_cpu:.2f})" for r in base_runs
                )
                + "; the table shows the one with the least other CPU (the window with "
                "retention cannot be repeated without refilling the backlog)."
            )

        under = measure_retention_window(cfg, eddy, topic_dir, patch=True)
        print(
            f"  during retention: {under.achieved_per_s:,.0f} req/s, "
            f"p99 {fmt_ms(under.pct(0.99))}, max {fmt_ms(under.max_ns)}",
            flush=True,
        )
        w = under.watcher
        end_of_window = w.samples[-1]
        # Keep watching until every record is gone and the space has been given back.
        settled = Settled()
        w.run_until(time.time() + cfg.reclaim_wait, stop=settled)
        final = partition_zero(eddy.port, "backlog")
        removed = records_removed(eddy.port, "backlog") - removed_before

    start = before["log_start_offset"]
    patched = under.patched_at or 0.0
    samples = w.samples
    first_index = next((i for i, s in enumerate(samples) if s.log_start_offset > start), None)
    done: Sample | None = w.first(lambda s: s.log_start_offset >= s.high_watermark)
    last = samples[-1]
    reclaimed = None
    if done is not None and settled.reached:
        after_done = [s for s in samples if s.at >= done.at]
        reclaimed = next(s for s in after_done if s.disk_bytes <= last.disk_bytes)
    peak = max(samples, key=lambda s: s.disk_bytes)

    if done is None:
        took = "not finished"
        report.problem(
            f"retention: the backlog was not deleted within {cfg.retention_seconds:g} s + "
            f"{cfg.reclaim_wait:g} s of the PATCH (log_start_offset {final['log_start_offset']:,}"
            f" of high watermark {final['high_watermark']:,})"
        )
    else:
        if done.at > cfg.retention_seconds:
            report.problem(
                f"retention: deleting the backlog took {done.at - patched:.1f} s, longer than "
                f"the {cfg.retention_seconds:g} s window (the window saw only part of it)"
            )
        first_seen = samples[first_index].at if first_index is not None else done.at
        began = samples[first_index - 1].at if first_index else patched
        deleting = max(done.at - began, w.interval)
        took = (
            f"all gone {done.at - patched:.1f} s after the PATCH, "
            f"~{round(safe_div(backlog, deleting), -3):,.0f} rec/s while deleting"
        )
        report.details.append(
            f"Retention: PATCH retention.ms=0 answered {patched * 1000:.0f} ms into the window; "
            f"first removal seen {first_seen - patched:.1f} s "
            f"after it (cleaner interval 1 s), all gone {done.at - patched:.1f} s after it: "
            f"deleting took at most {deleting:.1f} s (from the last poll without a removal to "
            f"the first with log_start_offset = high watermark, polled every "
            f"{w.interval:g} s), i.e. at least {safe_div(backlog, deleting):,.0f} records/s."
        )
    if final["log_start_offset"] != final["high_watermark"] or final["size_bytes"] != 0:
        report.problem(
            f"retention: after the wait the backlog shows log_start_offset "
            f"{final['log_start_offset']:,}, high watermark {final['high_watermark']:,}, "
            f"size_bytes {final['size_bytes']:,} (expected all removed, size 0)"
        )
    if final["high_watermark"] != before["high_watermark"]:
        report.problem(
            f"retention: the backlog's high watermark moved from {before['high_watermark']:,} "
            f"to {final['high_watermark']:,}"
        )
    if removed != backlog:
        report.problem(
            f'retention: eddy_records_removed_total{{topic="backlog",reason="retention"}} rose '
            f"by {removed:,.0f}, expected {backlog:,}"
        )
    disk_after = last.disk_bytes
    if reclaimed is None or not (last.wal_bytes == 0 or disk_after < disk_before / 10):
        report.problem(
            f"retention: backlog files still {mib(disk_after)} (WAL {mib(last.wal_bytes)}) "
            f"{last.at - patched:.0f} s after the PATCH; before {mib(disk_before)}"
        )
    report.details.append(
        f"Retention: backlog files on disk (log.db + WAL + SHM) {mib(disk_before)} before "
        f"(WAL {mib(wal_before)}), peak {mib(peak.disk_bytes)} at {peak.at - patched:.1f} s, "
        f"{mib(end_of_window.disk_bytes)} at the end of the window, {mib(disk_after)} "
        + (
            f"once the space reclaim finished {reclaimed.at - patched:.1f} s after the PATCH"
            if reclaimed is not None
            else f"{last.at - patched:.1f} s after the PATCH (reclaim not finished)"
        )
        + f"; metrics: {removed:,.0f} records removed by retention."
    )
    if done is not None:
        at_done = max((s for s in samples if s.at <= done.at), key=lambda s: s.at)
        reclaim_to = reclaimed if reclaimed is not None else last
        reclaim_time = reclaim_to.at - done.at
        if reclaim_time > 0:
            report.details.append(
                f"Retention, space reclaim (incremental vacuum after the deletion): files "
                f"{mib(at_done.disk_bytes)} -> {mib(reclaim_to.disk_bytes)} in "
                f"{reclaim_time:.1f} s"
                + ("" if reclaimed is not None else " (not finished)")
                + f", {(at_done.disk_bytes - reclaim_to.disk_bytes) / 2**20 / reclaim_time:.2f}"
                " MiB/s."
            )
        reclaim_end = min(reclaim_to.at, cfg.retention_seconds)
        phases = [
            f"while deleting {latency_between(under, patched, done.at)}",
            "while reclaiming space"
            + (" (until the end of the window)" if reclaim_end < reclaim_to.at else "")
            + f" {latency_between(under, done.at, reclaim_end)}",
        ]
        if reclaim_end < cfg.retention_seconds:
            phases.append(
                f"after the reclaim {latency_between(under, reclaim_end, cfg.retention_seconds)}"
            )
        report.details.append(
            "Retention, live produce latency by phase (requests due in it): "
            + "; ".join(phases)
            + "."
        )
    report.details.append(
        "Retention, max produce latency (ms) per second of the window, baseline: "
        f"{max_per_second(base, cfg.retention_seconds)}; with retention: "
        f"{max_per_second(under, cfg.retention_seconds)}."
    )
    for label, m in (("baseline", base), ("with retention", under)):
        service = sorted(as_array(m.result.service_ns))
        report.details.append(
            f"Retention, {label}: service time (sent -> response, not counting the wait for a "
            f"free connection) p50 {fmt_ms(percentile(service, 0.5))}, p99 "
            f"{fmt_ms(percentile(service, 0.99))}, max "
            f"{fmt_ms(service[-1] if service else float('nan'))}; "
            f"{m.result.planned:,} requests due; server peak RSS {m.server_peak_mib:.0f} MiB."
        )
    for label, m in (("baseline", base), ("with retention", under)):
        if open_loop_problems(m) != "0":
            report.problem(f"retention, live produce {label}: {open_loop_problems(m)}")

    rows = (
        (
            f"Eddy `--sync full`, {backlog:,}-record backlog untouched",
            base,
            "1.00x (reference)",
        ),
        (
            f"Eddy `--sync full`, retention deleting the {backlog:,}-record backlog",
            under,
            f"p99 **{fmt_ratio(safe_div(under.pct(0.99), base.pct(0.99)))}**; "
            f"p50 {fmt_ratio(safe_div(under.pct(0.5), base.pct(0.5)))}, "
            f"max {fmt_ratio(safe_div(under.max_ns, base.max_ns))}; backlog {took}; its "
            f"files {mib(disk_before)} -> {mib(disk_after)} "
            + (
                f"(space reclaimed {reclaimed.at - patched:.0f} s after the PATCH)"
                if reclaimed is not None
                else f"(reclaim not finished {last.at - patched:.0f} s after the PATCH)"
            ),
        ),
    )
    label = (
        f"{section}, single-record produce to another topic at {cfg.retention_rate:.0f} req/s "
        f"(open loop, {cfg.retention_connections} connections) for {cfg.retention_seconds:g} s"
    )
    for system, m, ratio in rows:
        report.rows.append(
            Row(
                label,
                system,
                f"{m.achieved_per_s:,.0f} req/s (offered {cfg.retention_rate:.0f}/s); "
                f"max {fmt_ms(m.max_ns)}",
                fmt_ms(m.pct(0.5)),
                fmt_ms(m.pct(0.99)),
                open_loop_problems(m),
                f"{m.server_cpu:.2f}",
                f"{m.loadgen_cpu:.2f}",
                f"{m.other_cpu:.2f}",
                ratio,
                check_busy=True,
            )
        )


# --- output --------------------------------------------------------------------------------------
def render(cfg: Config, report: Report, started: float) -> str:
    head = [
        "# Eddy benchmark results",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')} · {'quick' if cfg.quick else 'full'} run · "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}) · "
        f"Python {platform.python_version()} · wall time {time.time() - started:.0f} s",
        "",
        f"CPU columns: CPU seconds per wall-clock second in the measured window (1.00 = one "
        f"core busy; this machine has {os.cpu_count()}). Server: the server process, all its "
        "threads. Load-gen: all load-generator processes (HTTP clients; or WebSocket "
        "subscribers + publisher). Other: the rest of the machine (kernel work not charged to "
        "a process, and anything else running; in fan-out rows mostly the kernel's loopback "
        "networking). When Server + Load-gen + Other is near the CPU count, the machine, not "
        "the server alone, set the limit.",
        "",
        "Eddy ÷ baseline: for throughput above 1.00 favours Eddy; for latency above 1.00 means "
        "Eddy is slower. Setup: "
        f"produce {cfg.produce_connections} connections x {cfg.produce_seconds:g} s "
        f"(after {cfg.warmup_seconds:.1f} s warm-up); batch {cfg.batch_connections} connections "
        f"x {cfg.batch_seconds:g} s; fan-out {cfg.fanout_subscribers:,} subscribers in "
        f"{cfg.fanout_processes} processes ({cfg.ws_client} client), "
        + " then ".join(f"{r:.0f}" for r in cfg.fanout_rates)
        + f" rec/s for {cfg.fanout_seconds:g} s each; retention {cfg.backlog_records:,}-record "
        f"backlog, {cfg.retention_rate:.0f} req/s open loop on {cfg.retention_connections} "
        f"connections for {cfg.retention_seconds:g} s per window.",
        "",
    ]
    cols = (
        "Measurement",
        "System",
        "Throughput",
        "p50",
        "p99",
        "Errors / lost",
        "Server CPU",
        "Load-gen CPU",
        "Other CPU",
        "Eddy ÷ baseline",
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    previous = ""
    for r in report.rows:
        cells = (
            r.section if r.section != previous else "",
            r.system,
            r.throughput,
            r.p50,
            r.p99,
            r.problems,
            r.server_cpu,
            r.loadgen_cpu,
            r.other_cpu,
            r.ratio,
        )
        previous = r.section
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    tail = ["", "## Details", ""]
    tail += [f"- {d}" for d in report.details if "\n" not in d]
    tail += ["", *[d for d in report.details if "\n" in d]]
    tail += ["", "## Problems seen", ""]
    tail += [f"- {p}" for p in report.problems] or ["- none"]
    return "\n".join(head + lines + tail) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 60 s)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    parser.add_argument("--subscribers", type=int, help="fan-out subscribers (default 1000)")
    parser.add_argument(
        "--subscriber-processes", type=int, help="processes the subscribers are spread over"
    )
    parser.add_argument(
        "--client-processes", type=int, default=1, help="processes for the 32 produce clients"
    )
    parser.add_argument(
        "--rates", help="fan-out publisher rates in records/s, comma-separated (default 50,200)"
    )
    parser.add_argument(
        "--fanout-seconds", type=float, help="publishing time per fan-out rate (default 10)"
    )
    parser.add_argument(
        "--ws-client",
        choices=("lean", "websockets"),
        default="lean",
        help="subscriber client: lean protocol (default) or the websockets library client",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="repetitions of each produce/batch measurement; the least disturbed one is shown "
        "(default 2, 1 with --quick)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        help="records in the retention backlog (default 500000, 100000 with --quick)",
    )
    parser.add_argument(
        "--compression-rate",
        type=float,
        help="publisher records/s of the permessage-deflate section (default 20, 10 with --quick)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.md")
    parser.add_argument("--keep-temp", action="store_true", help="keep data dirs and server logs")
    args = parser.parse_args(argv)
    cfg = make_config(args)
    nofile = raise_open_file_limit()
    needed = cfg.fanout_subscribers + 200  # the server holds one socket per subscriber
    if "fanout" in cfg.sections and nofile < needed:
        print(f"warning: open-file limit {nofile} is below the {needed} the fan-out needs")
    started = time.time()
    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="eddy-bench-"))
    steps: dict[str, Callable[[Config, Path, Report], None]] = {
        "produce": bench_produce,
        "batch": bench_batch,
        "wspublish": bench_wspublish,
        "fanout": bench_fanout,
        "retention": bench_retention,
        "compression": bench_compression,
    }
    status = 0
    try:
        for name in SECTIONS:
            if name in cfg.sections:
                try:
                    steps[name](cfg, tmp, report)
                except Exception as exc:
                    status = 1
                    report.problem(f"section {name} failed: {type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        status = 130
        report.problem("interrupted")
    finally:
        if args.keep_temp:
            print(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    busy = [r for r in report.rows if r.check_busy and _float(r.other_cpu) > BUSY_MACHINE_CPU]
    if busy:
        report.problem(
            f"the machine was busy with other work during {len(busy)} row(s) (Other CPU > "
            f"{BUSY_MACHINE_CPU:.1f}: "
            + "; ".join(f"{r.system} {r.other_cpu}" for r in busy)
            + "); those figures are less reliable; rerun on an idle machine"
        )
    text = render(cfg, report, started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print()
    print(text)
    print(f"(written to {args.output})")
    return status


if __name__ == "__main__":
    sys.exit(main())

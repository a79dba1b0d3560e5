"""Section 2 (`--only batch`): batch REST produce, Eddy beside Python `sqlite3` with
`executemany` in one process (the disk's limit for the same rows)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import eddy_server, machine_busy_seconds, percentile, spawn_child
from bench.sections.config import Config
from bench.sections.http_produce import (
    batch_bodies,
    batch_records,
    http_problems,
    least_disturbed,
    measure_batch_rest,
)
from bench.sections.report import Report, Row, fmt_ms, fmt_rate, fmt_ratio, safe_div
from bench.sections.servers import create_topic, running
from bench.sqlite_baseline import SqliteResult, SqliteSpec, sqlite_worker


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

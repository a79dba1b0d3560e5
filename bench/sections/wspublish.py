"""Section 5 (`--only wspublish`): WebSocket publish over one connection, beside batch REST
produce on the same server."""

from __future__ import annotations

import time
from array import array
from pathlib import Path

from bench.common import (
    ServerProcess,
    eddy_server,
    machine_busy_seconds,
    percentile,
    spawn_child,
    wait_until,
)
from bench.sections.config import Config
from bench.sections.http_produce import (
    HttpMeasurement,
    batch_bodies,
    batch_records,
    http_problems,
    least_disturbed,
    measure_batch_rest,
)
from bench.sections.report import Report, Row, fmt_ms, fmt_rate, fmt_ratio, safe_div
from bench.sections.servers import create_topic, running
from bench.wspublish import PublishLoadResult, PublishSpec, publish_worker


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

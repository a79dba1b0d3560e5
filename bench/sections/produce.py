"""Section 1 (`--only produce`): single-record REST produce from keep-alive clients, Eddy beside
a raw ASGI app on the same uvicorn."""

from __future__ import annotations

from pathlib import Path

from bench.common import ServerProcess, eddy_server, raw_asgi_server
from bench.sections.config import Config
from bench.sections.http_produce import (
    HttpMeasurement,
    http_problems,
    least_disturbed,
    measure_http,
    single_bodies,
)
from bench.sections.report import Report, Row, fmt_ms, fmt_rate, fmt_ratio, safe_div
from bench.sections.servers import create_topic, running


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

"""Section 3 (`--only fanout`): fan-out to many WebSocket subscribers, Eddy beside a minimal
`websockets` broadcast server; `run_fanout` also drives section 6 (compression)."""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    HOST,
    ServerProcess,
    eddy_server,
    machine_busy_seconds,
    percentile,
    spawn_child,
    wait_until,
    ws_broadcast_server,
)
from bench.fanout import PhaseReport, PublishResult, publisher_worker, subscriber_worker
from bench.sections.config import Config
from bench.sections.report import Report, Row, fmt_ms, fmt_ratio, safe_div
from bench.sections.servers import create_topic, running

IDLE_MACHINE_CPU = 0.3  # busy cores in the idle check before the fan-out runs


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

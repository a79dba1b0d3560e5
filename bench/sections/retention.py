"""Section 4 (`--only retention`): produce latency to one topic while retention deletes a large
backlog of another, beside the same window before the deletion (the load generator, backlog
fill and watcher are bench/retention.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    ServerProcess,
    eddy_server,
    http_json,
    machine_busy_seconds,
    percentile,
    spawn_child,
    wait_until,
)
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
from bench.sections.config import Config
from bench.sections.http_produce import single_bodies
from bench.sections.report import Report, Row, fmt_ms, fmt_ratio, safe_div
from bench.sections.servers import create_topic, running

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

"""The runner's results: the table's rows, the details and problems gathered beside them, the
number formats, and the markdown they are rendered to."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field

from bench.sections.config import Config


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


def safe_div(a: float, b: float) -> float:
    return a / b if b else float("nan")


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

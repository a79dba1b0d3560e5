"""Section 6 (`--only compression`): the fan-out with and without permessage-deflate, CPU and
bytes per delivered frame."""

from __future__ import annotations

import urllib.request
from dataclasses import replace
from pathlib import Path

from bench.common import HOST, ServerProcess, eddy_server
from bench.sections.config import Config
from bench.sections.fanout import FanoutPhase, fanout_problems, idle_check, run_fanout
from bench.sections.report import Report, Row, fmt_ms, fmt_ratio, safe_div
from bench.sections.servers import create_topic, running


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

"""Eddy benchmark suite: `python -m bench.run [--quick]`.

Starts real servers (Eddy and minimal baselines) as subprocesses on free loopback ports with
temporary data dirs, drives them from separate load-generator processes, and prints one markdown
table (also written to bench/results/latest.md). Every Eddy figure sits beside a baseline measured
in the same run; the ratio is the headline. See bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import raise_open_file_limit
from bench.sections.batch import bench_batch
from bench.sections.compression import bench_compression
from bench.sections.config import SECTIONS, Config, make_config
from bench.sections.fanout import bench_fanout
from bench.sections.produce import bench_produce
from bench.sections.report import Report, render
from bench.sections.retention import bench_retention
from bench.sections.wspublish import bench_wspublish

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# "Other CPU" above this (cores) in a produce/batch row means something besides the benchmark
# competed for the machine. Fan-out rows are not checked: there Other is mostly the kernel's
# loopback networking, so an idle check before each fan-out run stands in.
BUSY_MACHINE_CPU = 0.6


def _float(text: str) -> float:
    try:
        return float(text.lstrip("~"))
    except ValueError:
        return 0.0


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

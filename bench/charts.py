"""The Benchmarks page's charts, drawn from the figures in docs/bench/results.json:

- `fanout-latency.png`: produce-to-delivery latency (p99, and p50 dashed) against the number of
  subscribers, for Eddy, nchan and the Python limit measured in the same run;
- `produce-rates.png`: each produce rate beside the ceiling it was measured against.

    python -m bench.charts                  # rewrites docs/bench/*.png
    python -m bench.charts --out /tmp/x     # somewhere else

Nothing is measured here: the benchmarks write their figures into the JSON (by hand or by the
runner), and this draws them. Each PNG records the digest of the JSON it was drawn from
(tests/test_bench_charts.py fails when a chart is older than the figures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

# Figure objects, not pyplot: no global state and no GUI backend (savefig uses Agg for PNGs).
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "bench" / "results.json"
OUT = REPO / "docs" / "bench"

PEERS = [  # (key in the JSON, label, colour): Eddy in the site's teal, the peers in grey/orange
    ("eddy", "Eddy", "#00897b"),
    ("nchan", "nchan (nginx, C)", "#546e7a"),
    ("python_limit", "Python limit (pre-built frames)", "#ef6c00"),
]


def source_stamp(results: bytes) -> str:
    """What each PNG records of the JSON it was drawn from (its `Source` text chunk), so that a
    test can tell a chart that was not redrawn after the figures changed."""
    return "docs/bench/results.json sha256:" + hashlib.sha256(results).hexdigest()


def _thousands(value: float, _position: object = None) -> str:
    return f"{value:,.0f}"


def fanout_latency(fanout: dict[str, Any], path: Path, metadata: dict[str, Any]) -> None:
    rows = fanout["latency_ms"]
    labels = [f"{r['subscribers']:,}\nx {r['records_per_second']}/s" for r in rows]
    positions = list(range(len(rows)))
    figure = Figure(figsize=(8, 4.6), dpi=120)
    axes = figure.subplots()
    for key, label, colour in PEERS:
        p99 = [r[key]["p99"] for r in rows]
        p50 = [r[key]["p50"] for r in rows]
        axes.plot(positions, p99, marker="o", color=colour, linewidth=2.2, label=f"{label}, p99")
        axes.plot(
            positions,
            p50,
            marker=".",
            color=colour,
            linewidth=1.2,
            linestyle="--",
            alpha=0.7,
            label=f"{label}, p50",
        )
    for x, row in zip(positions, rows, strict=True):
        ratio = row["eddy"]["p99"] / row["nchan"]["p99"]
        axes.annotate(
            f"{ratio:.2f}x nchan",
            (x, row["eddy"]["p99"]),
            textcoords="offset points",
            xytext=(10, -4),
            color=PEERS[0][2],
            fontsize=9,
            fontweight="bold",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(_thousands))
    axes.set_xticks(positions, labels)
    axes.set_xlim(-0.3, len(rows) - 0.5)
    axes.set_xlabel("subscribers x records per second")
    axes.set_ylabel("produce-to-delivery latency, ms (log scale)")
    axes.set_title("Fan-out latency against subscribers", loc="left", fontweight="bold")
    axes.grid(True, which="major", axis="y", alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(fontsize=8, ncols=2, frameon=False, loc="upper left")
    figure.text(
        0.01,
        0.01,
        f"{fanout['command']}, {fanout['measured']}, load average {fanout['load_average']}",
        fontsize=7.5,
        color="#607d8b",
    )
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, metadata=metadata)


def produce_rates(produce: dict[str, Any], path: Path, metadata: dict[str, Any]) -> None:
    """One bar per measurement, as a share of its ceiling (the grey bar is the ceiling, 1.0x)."""
    rows = produce["rows"]
    figure = Figure(figsize=(9, 0.85 * len(rows) + 1.3), dpi=120)
    axes = figure.subplots()
    ys = list(range(len(rows)))[::-1]
    for y, row in zip(ys, rows, strict=True):
        ratio = row["eddy"] / row["ceiling"]
        axes.barh(y, 1.0, height=0.62, color="#eceff1", edgecolor="#b0bec5")
        axes.barh(y, ratio, height=0.62, color=PEERS[0][2])
        axes.text(
            ratio + 0.015,
            y + 0.02,
            f"{ratio:.2f}x",
            va="center",
            fontsize=10,
            fontweight="bold",
            color="#004d40",
        )
        axes.text(
            1.03,
            y + 0.02,
            f"{row['eddy']:,} of {row['ceiling']:,}\n{row['unit']}",
            va="center",
            fontsize=8,
            color="#455a64",
        )
        target = row.get("target_ratio")
        if target:
            axes.plot([target] * 2, [y - 0.4, y + 0.4], color="#bf360c", linewidth=2)
    labels = [f"{row['name']}\nceiling: {row['ceiling_name']}" for row in rows]
    axes.set_yticks(ys, labels, fontsize=7.5)
    axes.set_xlim(0, 1.42)
    axes.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "0.25x", "0.5x", "0.75x", "1x (ceiling)"])
    axes.set_xlabel(
        "Eddy's rate as a share of the ceiling measured in the same run (red: the target)",
        fontsize=9,
    )
    axes.set_title("Produce rates against their ceilings", loc="left", fontweight="bold")
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, metadata=metadata)


def draw(results: Path, out: Path) -> list[Path]:
    """Draws every chart of `results` into `out`; returns the files written."""
    data = results.read_bytes()
    figures = json.loads(data)
    # No matplotlib version or date in the files (same JSON, same bytes); the JSON's digest.
    metadata = {"Software": None, "Source": source_stamp(data)}
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "fanout-latency.png", out / "produce-rates.png"]
    fanout_latency(figures["fanout"], written[0], metadata)
    produce_rates(figures["produce"], written[1], metadata)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    arguments = parser.parse_args()
    for path in draw(arguments.results, arguments.out):
        print(path)


if __name__ == "__main__":
    main()

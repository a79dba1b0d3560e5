"""The Benchmarks page's charts (bench/charts.py): they are drawn from docs/bench/results.json,
the checked-in PNGs were drawn from its current figures, and the page shows them."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from bench import charts
from tests.conftest import REPO

CHARTS = ["fanout-latency.png", "produce-rates.png"]


def test_the_charts_are_drawn_from_the_results(tmp_path: Path) -> None:
    written = charts.draw(charts.RESULTS, tmp_path)
    assert sorted(path.name for path in written) == sorted(CHARTS)
    stamp = charts.source_stamp(charts.RESULTS.read_bytes())
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width >= 900 and image.height >= 400
            assert image.info["Source"] == stamp
            assert "Software" not in image.info  # no version: redrawing changes nothing


def test_the_checked_in_charts_show_the_current_figures() -> None:
    stamp = charts.source_stamp(charts.RESULTS.read_bytes())
    for name in CHARTS:
        with Image.open(charts.OUT / name) as image:
            assert image.info.get("Source") == stamp, (
                f"docs/bench/{name} is older than docs/bench/results.json: "
                "run `python -m bench.charts`"
            )


def test_the_results_hold_every_peer_at_every_load_and_a_ceiling_per_rate() -> None:
    figures = json.loads(charts.RESULTS.read_text())
    assert figures["fanout"]["measured"] and figures["fanout"]["load_average"]
    rows = figures["fanout"]["latency_ms"]
    assert [row["subscribers"] for row in rows] == sorted(row["subscribers"] for row in rows)
    for row in rows:
        for peer, _, _ in charts.PEERS:
            assert 0 < row[peer]["p50"] <= row[peer]["p99"], (row["subscribers"], peer)
    for row in figures["produce"]["rows"]:
        assert row["eddy"] > 0 and row["ceiling"] > 0, row["name"]
        assert row["measured"] and row["load_average"], row["name"]


def test_the_benchmarks_page_shows_the_charts() -> None:
    page = (REPO / "docs" / "benchmarks.md").read_text()
    for name in CHARTS:
        assert f"](bench/{name})" in page, name

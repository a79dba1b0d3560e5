"""A real browser's EventSource (Debian's chromium, driven by Playwright) on the SSE subscription:
it resumes by itself, with `Last-Event-ID`, after the server restarts, losing and repeating
nothing. (The browser stack is required: see tests/test_console.py.)"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser

from tests.browser import browser_fixture  # noqa: F401 (the browser fixture)
from tests.conftest import fetch_all, free_port, start_server_process

TIMEOUT_MS = 60_000  # the browser waits its own retry delay (3 s in chromium) between attempts

SUBSCRIBE = """(url) => {
  window.got = [];
  window.opens = 0;
  window.lastIds = [];
  const source = new EventSource(url);
  source.onopen = () => { window.opens += 1; };
  source.addEventListener("record", (e) => {
    const record = JSON.parse(e.data);
    window.got.push([record.partition, record.offset, record.value]);
    window.lastIds.push(e.lastEventId);
  });
  window.source = source;
}"""


def produce(base_url: str, values: range, partitions: int = 2) -> None:
    records: list[dict[str, Any]] = [{"value": v, "partition": v % partitions} for v in values]
    response = httpx.post(f"{base_url}/v1/topics/b/records", json={"records": records})
    assert response.status_code == 200, response.text


def test_event_source_resumes_after_a_server_restart(browser: Browser, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    process = start_server_process(data, "--default-partitions", "2", port=port)
    page = browser.new_page()
    try:
        produce(process.base_url, range(10))
        page.goto(process.base_url + "/healthz")  # any page of the server's origin
        page.evaluate(SUBSCRIBE, "/v1/topics/b/events?from=earliest")
        page.wait_for_function("window.got.length === 10", timeout=TIMEOUT_MS)
        produce(process.base_url, range(10, 15))
        page.wait_for_function("window.got.length === 15", timeout=TIMEOUT_MS)

        assert process.stop(signal.SIGTERM) == 0
        process = start_server_process(data, port=port)
        produce(process.base_url, range(15, 30))  # before and while the browser reconnects
        page.wait_for_function("window.got.length >= 30 && window.opens >= 2", timeout=TIMEOUT_MS)
        produce(process.base_url, range(30, 35))
        page.wait_for_function("window.got.length >= 35", timeout=TIMEOUT_MS)
        got = page.evaluate("window.got")
        ids = page.evaluate("window.lastIds")
        with httpx.Client(base_url=process.base_url) as client:
            stored = fetch_all(client, "b", 0) + fetch_all(client, "b", 1)
    finally:
        page.close()
        process.stop(signal.SIGTERM)
    positions = [(p, o) for p, o, _ in got]
    assert len(positions) == len(set(positions)) == 35  # nothing repeated
    assert sorted(positions) == sorted((r["partition"], r["offset"]) for r in stored)
    assert sorted(v for _, _, v in got) == list(range(35))  # nothing lost
    assert ids[-1] == ",".join(f"{p}:{1 + max(o for q, o in positions if q == p)}" for p in (0, 1))

"""The JavaScript client (static/eddy.js) in real Chromium, imported by a page of the server it
talks to, as a web app would: subscribe across a server restart, permanent errors, group
commits, publishing, and the Server-Sent Events fallback.

The SSE tests need the SSE endpoint (routers/sse.py, built on the `sse` branch): they skip,
saying so, until it is merged."""

from __future__ import annotations

import importlib.util
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.browser import TIMEOUT_MS, browser_fixture  # noqa: F401 (the browser fixture)
from tests.conftest import (
    RunningServer,
    ServerProcess,
    fetch_all,
    free_port,
    serve_in_thread,
    start_server_process,
)

needs_sse = pytest.mark.skipif(
    importlib.util.find_spec("eddy.routers.sse") is None,
    reason="needs the SSE endpoint GET /v1/topics/{topic}/events (routers/sse.py, sse branch)",
)

# Runs in the page: the client, and what it delivered, kept on `window` for the test to read.
SETUP = """async (options) => {
  const { EddyClient } = await import("/static/eddy.js");
  window.eddy = new EddyClient({ minDelayMs: 100, maxDelayMs: 1000, ...(options || {}) });
  window.records = [];
  window.events = [];
  window.note = (event) => window.events.push(event);
}"""

SUBSCRIBE = """([topic, options]) => {
  window.subscription = window.eddy.subscribe(topic, {
    ...options,
    onRecord: (r) => {
      window.records.push({ partition: r.partition, offset: r.offset, value: r.value });
    },
  });
  const s = window.subscription;
  s.on("subscribed", (f) => note({ event: "subscribed", partitions: f.partitions }));
  s.on("disconnect", (d) => note({ event: "disconnect", code: d.code }));
  s.on("transport", (t) => note({ event: "transport", transport: t }));
  s.on("error", (e) => note({ event: "error", code: e.code, message: e.message }));
}"""


@pytest.fixture
def same_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    port = free_port()
    monkeypatch.setattr("tests.conftest.free_port", lambda: port)
    yield port


def open_page(browser: Browser, base_url: str, **client_options: Any) -> tuple[Page, list[str]]:
    """A same-origin page (as a web app served by Eddy) with the client loaded."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base_url + "/healthz")
    page.evaluate(SETUP, client_options)
    return page, errors


def wait_records(page: Page, count: int) -> list[dict[str, Any]]:
    page.wait_for_function(f"window.records.length >= {count}")
    records: list[dict[str, Any]] = page.evaluate("window.records")
    return records


def wait_event(page: Page, kind: str, count: int = 1) -> list[dict[str, Any]]:
    page.wait_for_function(f"window.events.filter((e) => e.event === {kind!r}).length >= {count}")
    events: list[dict[str, Any]] = page.evaluate(
        f"window.events.filter((e) => e.event === {kind!r})"
    )
    return events


def produce(base_url: str, topic: str, values: range, partitions: int = 3) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as rest:
        records = [{"value": v, "partition": v % partitions} for v in values]
        response = rest.post(f"/v1/topics/{topic}/records", json={"records": records})
        assert response.status_code == 200, response.text


def assert_each_once_in_order(records: list[dict[str, Any]], total: int, partitions: int) -> None:
    assert Counter((r["partition"], r["offset"]) for r in records).most_common(1)[0][1] == 1
    assert sorted(r["value"] for r in records) == list(range(total))
    for partition in range(partitions):
        offsets = [r["offset"] for r in records if r["partition"] == partition]
        assert offsets == list(range(total // partitions))


def restart_mid_stream(
    browser: Browser, tmp_path: Path, options: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Subscribe, stream, restart the server (SIGTERM, same port), stream on; what arrived."""
    data = tmp_path / "data"
    server: ServerProcess = start_server_process(data)
    page: Page | None = None
    try:
        with httpx.Client(base_url=server.base_url) as rest:
            assert (
                rest.post("/v1/topics", json={"name": "ticks", "partitions": 3}).status_code == 201
            )
        produce(server.base_url, "ticks", range(0, 60))
        page, errors = open_page(browser, server.base_url)
        page.evaluate(SUBSCRIBE, ["ticks", {"from": "earliest", **options}])
        wait_records(page, 60)
        produce(server.base_url, "ticks", range(60, 90))
        wait_records(page, 90)
        server.stop(signal.SIGTERM)
        wait_event(page, "disconnect")
        server = start_server_process(data)
        produce(server.base_url, "ticks", range(90, 150))
        records = wait_records(page, 150)
        events: list[dict[str, Any]] = page.evaluate("window.events")
    finally:
        if page is not None:
            page.context.close()
        server.stop()
    return records, events, errors


def test_subscriber_resumes_across_server_restart(
    browser: Browser, tmp_path: Path, same_port: int
) -> None:
    records, events, errors = restart_mid_stream(browser, tmp_path, {})
    assert_each_once_in_order(records, 150, 3)
    assert len([e for e in events if e["event"] == "subscribed"]) >= 2
    assert not [e for e in events if e["event"] == "error"]
    assert errors == []


def test_permanent_errors_stop_with_the_servers_message(browser: Browser, tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data", auto_create_topics=False) as server:
        page, errors = open_page(browser, server.base_url)
        try:
            results = page.evaluate(
                """async () => {
                  const out = [];
                  for (const [topic, options] of [["bad name", {}], ["missing", {}],
                                                  ["x", { max_rate: -1, from: "soon" }]]) {
                    const s = window.eddy.subscribe(topic, options);
                    const states = [];
                    s.on("state", (state) => states.push(state));
                    const e = await s.closed;
                    out.push({ code: e.code, message: e.message, closeCode: e.closeCode, states });
                  }
                  const p = window.eddy.publisher("missing");
                  const failed = (e) => ({ code: e.code, closeCode: e.closeCode });
                  out.push(await p.send({ value: 1 }).catch(failed));
                  return out;
                }"""
            )
        finally:
            page.context.close()
    bad, missing, params, publish = results
    assert (bad["closeCode"], bad["code"]) == (4400, "invalid_request")
    assert "invalid topic name" in bad["message"]
    assert (missing["closeCode"], missing["code"]) == (4404, "topic_not_found")
    assert "missing" in missing["message"]
    assert params["closeCode"] == 4400
    for result in (bad, missing, params):
        assert "reconnecting" not in result["states"]
        assert result["states"][-1] == "failed"
    assert publish == {"code": "topic_not_found", "closeCode": 4404}
    assert errors == []


def test_group_member_commits_in_the_browser(browser: Browser, server: RunningServer) -> None:
    with server.client() as rest:
        assert rest.post("/v1/topics", json={"name": "orders", "partitions": 2}).status_code == 201
        produce(server.base_url, "orders", range(10), partitions=2)
        page, errors = open_page(browser, server.base_url)
        try:
            page.evaluate(SUBSCRIBE, ["orders", {"group": "web", "from": "earliest"}])
            wait_records(page, 10)
            committed = page.evaluate("window.subscription.commit()")
            assert committed == {"0": 5, "1": 5}
            assert page.evaluate("window.subscription.commit()") == {}  # nothing new
            offsets = rest.get("/v1/groups/web").json()["offsets"]
            assert {o["partition"]: o["committed_offset"] for o in offsets} == {0: 5, 1: 5}
            # A commit the server refuses: its error, and the member carries on.
            refused = page.evaluate(
                "window.subscription.commit({7: 1}).catch((e) => ({code: e.code}))"
            )
            assert refused == {"code": "partition_not_found"}
            produce(server.base_url, "orders", range(10, 12), partitions=2)
            wait_records(page, 12)
            assert page.evaluate("window.subscription.commit()") == {"0": 6, "1": 6}
        finally:
            page.context.close()
    assert errors == []


def test_publisher_acks_in_the_browser(browser: Browser, server: RunningServer) -> None:
    page, errors = open_page(browser, server.base_url)
    try:
        acks = page.evaluate(
            """async () => {
              const p = window.eddy.publisher("clicks", { idempotent: true });
              const sends = [];
              for (let n = 0; n < 50; n += 1) {
                const record = { key: `u${n % 3}`, value: n };
                if (n === 20) record.headers = { bad: 1 }; // refused: not a string
                const answer = p.send(record);
                const acked = (a) => ({ n, offset: a.offset });
                sends.push(answer.then(acked, (e) => ({ n, code: e.code })));
              }
              const out = await Promise.all(sends);
              p.close();
              return out;
            }"""
        )
    finally:
        page.context.close()
    assert acks[20] == {"n": 20, "code": "invalid_request"}
    assert [a["offset"] for a in acks if "offset" in a] == list(range(49))
    with server.client() as rest:
        values = [r["value"] for r in fetch_all(rest, "clicks")]
    assert values == [n for n in range(50) if n != 20]
    assert errors == []


@needs_sse
def test_sse_subscriber_resumes_across_server_restart(
    browser: Browser, tmp_path: Path, same_port: int
) -> None:
    records, events, errors = restart_mid_stream(browser, tmp_path, {"transport": "sse"})
    assert_each_once_in_order(records, 150, 3)
    assert not [e for e in events if e["event"] == "error"]
    assert errors == []


@needs_sse
def test_auto_transport_falls_back_to_sse_when_websockets_are_blocked(
    browser: Browser, server: RunningServer
) -> None:
    """A proxy that refuses WebSocket upgrades, as a WebSocket class whose connections never
    open: after two failed attempts the subscription continues over Server-Sent Events."""
    produce(server.base_url, "prices", range(6), partitions=1)
    page, errors = open_page(browser, server.base_url)
    try:
        page.evaluate(
            """() => {
              class Blocked {
                constructor() { setTimeout(() => this.onclose({ code: 1006, reason: "" }), 0); }
                send() {}
                close() {}
              }
              const options = { minDelayMs: 50, maxDelayMs: 200, WebSocket: Blocked };
              window.eddy = new window.eddy.constructor(options);
            }"""
        )
        page.evaluate(SUBSCRIBE, ["prices", {"from": "earliest", "transport": "auto"}])
        assert wait_event(page, "transport") == [{"event": "transport", "transport": "sse"}]
        wait_records(page, 6)
        produce(server.base_url, "prices", range(6, 9), partitions=1)
        records = wait_records(page, 9)
    finally:
        page.context.close()
    assert sorted(r["value"] for r in records) == list(range(9))
    assert errors == []


@needs_sse
def test_sse_permanent_error_stops_with_the_servers_message(
    browser: Browser, tmp_path: Path
) -> None:
    with serve_in_thread(tmp_path / "data", auto_create_topics=False) as server:
        page, errors = open_page(browser, server.base_url)
        try:
            page.evaluate(SUBSCRIBE, ["missing", {"transport": "sse"}])
            (error,) = wait_event(page, "error")
        finally:
            page.context.close()
    assert error["code"] == "topic_not_found"
    assert "missing" in error["message"]
    assert errors == []

"""End-to-end tests of the web console (static/) in a real browser: Debian's chromium driven by
Playwright for Python.

The browser stack is required, not optional: when Playwright or chromium is missing these tests
fail (CI installs them with `.ci/install-browser.sh` and the dev extras); they never skip.
Nothing here sleeps a fixed time: every wait is for an element or attribute to appear.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, free_port, serve_in_thread

try:
    from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
except ImportError as exc:  # a failure, not a skip: CI must have the browser stack
    raise ImportError(
        "Playwright for Python is required by the console tests: pip install 'playwright' "
        "(never `playwright install`: the tests use Debian's chromium, see .ci/install-browser.sh)"
    ) from exc

CHROMIUM = os.environ.get("EDDY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"chromium not found at {CHROMIUM}: run `bash .ci/install-browser.sh` "
            "(or set EDDY_CHROMIUM to a chromium binary)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def open_console(browser: Browser, base_url: str) -> tuple[Page, list[str]]:
    """A fresh page on the console, ready (its script ran); the list collects script errors."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base_url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page, errors


@pytest.fixture
def console(browser: Browser, server: RunningServer) -> Iterator[Page]:
    page, errors = open_console(browser, server.base_url)
    try:
        yield page
    finally:
        page.context.close()
    assert errors == [], f"the console's script failed: {errors}"


@pytest.fixture
def rest(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def topic_row(page: Page, topic: str) -> Locator:
    return page.locator(f'[data-testid="topic-row"][data-topic="{topic}"]')


def start_tail(page: Page, topic: str, start: str = "latest", keys: str = "") -> None:
    page.fill("#tail-topic", topic)
    page.select_option("#tail-from", start)
    page.fill("#tail-keys", keys)
    page.click("#tail-start")
    # After `subscribed`, every record produced is delivered (for from=latest too).
    expect(page.locator("#tail-status")).to_have_attribute("data-state", "live")


def test_page_lists_topic_created_via_rest(
    browser: Browser, server: RunningServer, rest: httpx.Client
) -> None:
    assert rest.post("/v1/topics", json={"name": "prices", "partitions": 2}).status_code == 201
    for price in (187.3, 187.4):
        response = rest.post(
            "/v1/topics/prices/records", json={"key": "AAPL", "value": price, "partition": 1}
        )
        assert response.status_code == 200
    page, errors = open_console(browser, server.base_url)
    try:
        row = topic_row(page, "prices")
        expect(row).to_be_visible()
        expect(row.get_by_test_id("topic-name")).to_have_text("prices")
        expect(row.get_by_test_id("topic-partitions")).to_have_text("2")
        hwm = row.locator('[data-testid="partition-hwm"]')
        expect(hwm).to_have_count(2)
        expect(hwm.nth(0)).to_have_attribute("data-hwm", "0")
        expect(hwm.nth(1)).to_have_attribute("data-hwm", "2")
        expect(row.get_by_test_id("topic-records")).to_have_text("2")
        expect(page.locator("#docs-link")).to_have_attribute("href", "/docs")
        expect(page.locator("#health")).to_have_attribute("data-state", "ok")
    finally:
        page.context.close()
    assert errors == []


def test_create_topic_through_ui(console: Page, rest: httpx.Client) -> None:
    console.fill("#create-name", "orders.v1")
    console.fill("#create-partitions", "3")
    console.click("#create-submit")
    expect(console.locator('#create-result [data-testid="ok"]')).to_contain_text("orders.v1")
    described = rest.get("/v1/topics/orders.v1")
    assert described.status_code == 200
    assert [p["partition"] for p in described.json()["partitions"]] == [0, 1, 2]
    expect(topic_row(console, "orders.v1").get_by_test_id("topic-partitions")).to_have_text("3")

    # Creating it again shows the API's 409 topic_exists.
    console.fill("#create-name", "orders.v1")
    console.click("#create-submit")
    error = console.locator('#create-result [data-testid="api-error"]')
    expect(error.get_by_test_id("error-code")).to_have_text("topic_exists")


def test_produce_through_ui(console: Page, rest: httpx.Client) -> None:
    assert rest.post("/v1/topics", json={"name": "events", "partitions": 2}).status_code == 201
    console.fill("#produce-topic", "events")
    console.fill("#produce-key", "user-7")
    console.fill("#produce-partition", "1")
    console.fill("#produce-value", '{"clicked": "buy", "n": [1, 2.5, null]}')
    console.fill("#produce-headers", '{"source": "console"}')
    console.click("#produce-submit")
    ok = console.locator('#produce-result [data-testid="ok"]')
    expect(ok.get_by_test_id("produced-partition")).to_have_text("1")
    expect(ok.get_by_test_id("produced-offset")).to_have_text("0")

    fetched = rest.get("/v1/topics/events/partitions/1/records", params={"offset": 0})
    assert fetched.status_code == 200
    records = fetched.json()["records"]
    assert len(records) == 1
    assert records[0]["key"] == "user-7"
    assert records[0]["value"] == {"clicked": "buy", "n": [1, 2.5, None]}
    assert records[0]["headers"] == {"source": "console"}
    # The topic list follows (high watermark 1 on partition 1).
    hwm = topic_row(console, "events").locator('[data-testid="partition-hwm"][data-partition="1"]')
    expect(hwm).to_have_attribute("data-hwm", "1")

    # Invalid JSON is caught before anything is sent.
    console.fill("#produce-value", "{not json")
    console.click("#produce-submit")
    expect(console.locator('#produce-result [data-testid="api-error"]')).to_contain_text(
        "not valid JSON"
    )
    assert rest.get("/v1/topics/events").json()["partitions"][1]["high_watermark"] == 1


def test_live_tail_shows_record_produced_after_it_opened(console: Page, rest: httpx.Client) -> None:
    assert rest.post("/v1/topics", json={"name": "ticks"}).status_code == 201
    assert rest.post("/v1/topics/ticks/records", json={"key": "old", "value": 0}).status_code == 200
    start_tail(console, "ticks", "latest")
    expect(console.locator("#tail-positions")).to_have_text("0:1")

    hostile = '<img src=x onerror="document.body.dataset.pwned=1">'
    response = rest.post(
        "/v1/topics/ticks/records",
        json={"key": "<b>key</b>", "value": {"html": hostile}, "headers": {"h": "1"}},
    )
    assert response.status_code == 200
    row = console.locator('[data-testid="tail-row"][data-partition="0"][data-offset="1"]')
    expect(row).to_be_visible()
    expect(row.get_by_test_id("tail-key")).to_have_text("<b>key</b>")
    expect(row.get_by_test_id("tail-value")).to_have_text('{"html":' + _json_string(hostile) + "}")
    # from=latest: the record stored before the tail opened is not shown.
    expect(console.locator('[data-testid="tail-row"]')).to_have_count(1)
    expect(console.locator("#tail-count")).to_have_text("1")
    expect(console.locator("#tail-positions")).to_have_text("0:2")
    # Record content is text, never markup.
    assert console.locator("#tail-body img, #tail-body b").count() == 0
    assert console.locator("body").get_attribute("data-pwned") is None

    console.click("#tail-stop")
    expect(console.locator("#tail-status")).to_have_attribute("data-state", "stopped")


def test_live_tail_from_earliest_with_keys_filter(console: Page, rest: httpx.Client) -> None:
    assert rest.post("/v1/topics", json={"name": "fx"}).status_code == 201
    batch = {"records": [{"key": "EUR", "value": 1.08}, {"key": "JPY", "value": 151}]}
    assert rest.post("/v1/topics/fx/records", json=batch).status_code == 200
    start_tail(console, "fx", "earliest", keys="EUR, GBP")
    expect(console.locator('[data-testid="tail-row"][data-offset="0"]')).to_be_visible()
    for key, value in (("JPY", 152), ("GBP", 0.85)):
        response = rest.post("/v1/topics/fx/records", json={"key": key, "value": value})
        assert response.status_code == 200
    # GBP (offset 3) comes after JPY (offsets 1 and 2) on the one partition: once it is shown,
    # the JPY records were filtered out rather than still on their way.
    expect(console.locator('[data-testid="tail-row"][data-offset="3"]')).to_be_visible()
    keys = console.locator('[data-testid="tail-key"]')
    expect(keys).to_have_text(["GBP", "EUR"])  # newest first


def test_api_error_shown_for_invalid_topic_name(console: Page, rest: httpx.Client) -> None:
    console.fill("#create-name", "bad name!")
    console.click("#create-submit")
    error = console.locator('#create-result [data-testid="api-error"]')
    expect(error).to_be_visible()
    expect(error.get_by_test_id("error-code")).to_have_text("invalid_request")
    expect(error).to_contain_text("HTTP 422")
    expect(error.get_by_test_id("error-message")).to_contain_text("name")
    assert rest.get("/v1/topics").json()["topics"] == []

    # Producing to an invalid name shows the server's error too.
    console.fill("#produce-topic", "bad name")
    console.fill("#produce-value", "1")
    console.click("#produce-submit")
    produce_error = console.locator('#produce-result [data-testid="api-error"]')
    expect(produce_error.get_by_test_id("error-code")).to_have_text("invalid_request")
    expect(produce_error).to_contain_text("invalid topic name")

    # And the tail shows the error frame and the close code.
    console.fill("#tail-topic", "bad name")
    console.click("#tail-start")
    expect(console.locator("#tail-status")).to_have_attribute("data-state", "closed")
    expect(console.locator("#tail-close")).to_contain_text("4400")
    expect(console.locator('#tail-error [data-testid="error-code"]')).to_have_text(
        "invalid_request"
    )


def test_live_tail_resumes_by_offset_after_server_restart(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server restarts (close 1001/1012): the tail reconnects with offsets= and shows the
    records produced meanwhile exactly once."""
    port = free_port()
    monkeypatch.setattr("tests.conftest.free_port", lambda: port)  # same address after restart
    data_dir = tmp_path / "data"
    with serve_in_thread(data_dir) as first:
        with first.client() as rest:
            assert rest.post("/v1/topics/ticks/records", json={"value": 0}).status_code == 200
        page, errors = open_console(browser, first.base_url)
        start_tail(page, "ticks", "earliest")
        expect(page.locator('[data-testid="tail-row"][data-offset="0"]')).to_be_visible()
    try:
        status = page.locator("#tail-status")
        expect(status).to_have_attribute("data-state", "reconnecting")
        expect(page.locator("#tail-close")).to_contain_text("10")  # 1001 or 1012
        with serve_in_thread(data_dir) as second:
            with second.client() as rest:
                for value in (1, 2):
                    response = rest.post("/v1/topics/ticks/records", json={"value": value})
                    assert response.status_code == 200
            expect(page.locator('[data-testid="tail-row"][data-offset="2"]')).to_be_visible()
            expect(status).to_have_attribute("data-state", "live")
            offsets = page.locator('[data-testid="tail-offset"]')
            expect(offsets).to_have_text(["2", "1", "0"])
    finally:
        page.context.close()
    assert errors == []


def _json_string(text: str) -> str:
    """`text` as JSON.stringify writes it (quotes escaped; <, > and = kept)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

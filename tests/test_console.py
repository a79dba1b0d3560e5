"""End-to-end tests of the web console (static/) in a real browser: Debian's chromium driven by
Playwright for Python.

The browser stack is required, not optional: when Playwright or chromium is missing these tests
fail (CI installs them with `.ci/install-debian-packages.sh` and the dev extras); they never skip.
Nothing here sleeps a fixed time: every wait is for an element or attribute to appear.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from websockets.sync.client import ClientConnection, connect

from tests.browser import TIMEOUT_MS, browser_fixture  # noqa: F401 (the browser fixture)
from tests.conftest import RunningServer, free_port, serve_in_thread, wait_until


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


def group_row(page: Page, group: str) -> Locator:
    return page.locator(f'[data-testid="group-row"][data-group="{group}"]')


def expect_offset(
    page: Page, topic: str, partition: int, committed: str, hwm: str, lag: str, owner: str
) -> None:
    """The selected group's row for topic/partition shows these cells ("-": none)."""
    row = page.locator(
        f'[data-testid="group-offset"][data-topic="{topic}"][data-partition="{partition}"]'
    )
    expect(row.get_by_test_id("offset-committed")).to_have_text(committed)
    expect(row.get_by_test_id("offset-hwm")).to_have_text(hwm)
    expect(row.get_by_test_id("offset-lag")).to_have_text(lag)
    expect(row.get_by_test_id("offset-owner")).to_have_text(owner)


def recv_until(ws: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    """The next frame of type `kind` (frames of other types are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if frame["type"] == kind:
            return frame


def test_group_offsets_committed_via_rest_shown_with_lag(
    browser: Browser, server: RunningServer, rest: httpx.Client
) -> None:
    assert rest.post("/v1/topics", json={"name": "orders", "partitions": 3}).status_code == 201
    records = [{"value": i, "partition": p} for p, count in ((0, 5), (1, 2)) for i in range(count)]
    assert rest.post("/v1/topics/orders/records", json={"records": records}).status_code == 200
    for group, offsets in (("billing", {"0": 3, "1": 2}), ("audit", {"2": 0})):
        response = rest.post(
            f"/v1/groups/{group}/offsets", json={"topic": "orders", "offsets": offsets}
        )
        assert response.status_code == 200, response.text
    page, errors = open_console(browser, server.base_url)
    try:
        # Both groups are listed (sorted); the first one is shown until another is picked.
        expect(page.locator('[data-testid="group-row"]')).to_have_count(2)
        expect(page.get_by_test_id("group-name")).to_have_text(["audit", "billing"])
        expect(group_row(page, "audit")).to_have_attribute("aria-current", "true")
        expect(page.locator("#group-title")).to_have_text("audit")
        expect_offset(page, "orders", 2, committed="0", hwm="0", lag="0", owner="-")

        billing = group_row(page, "billing")
        expect(billing.get_by_test_id("group-topics")).to_have_text("orders")
        expect(billing.get_by_test_id("group-member-count")).to_have_text("0")
        billing.get_by_test_id("group-select").click()
        expect(billing).to_have_attribute("aria-current", "true")
        expect(page.locator("#group-title")).to_have_text("billing")
        expect_offset(page, "orders", 0, committed="3", hwm="5", lag="2", owner="-")
        expect_offset(page, "orders", 1, committed="2", hwm="2", lag="0", owner="-")
        expect_offset(page, "orders", 2, committed="-", hwm="0", lag="-", owner="-")
        expect(page.locator("#group-summary")).to_have_attribute("data-total-lag", "2")
        expect(page.get_by_test_id("group-members-empty")).to_be_visible()
        lag = page.locator(
            '[data-testid="group-offset"][data-partition="0"] [data-testid="offset-lag"]'
        )
        expect(lag).to_have_attribute("data-state", "behind")

        # New records and a new commit show after a refresh; the selection is kept.
        response = rest.post("/v1/topics/orders/records", json={"value": "x", "partition": 1})
        assert response.status_code == 200
        response = rest.post(
            "/v1/groups/billing/offsets", json={"topic": "orders", "offsets": {"0": 5}}
        )
        assert response.status_code == 200
        page.click("#groups-refresh")
        expect_offset(page, "orders", 0, committed="5", hwm="5", lag="0", owner="-")
        expect_offset(page, "orders", 1, committed="2", hwm="3", lag="1", owner="-")
        expect(page.locator("#group-title")).to_have_text("billing")

        # A deleted group disappears; the remaining one is shown.
        assert rest.delete("/v1/groups/billing").status_code == 204
        page.click("#topics-refresh")  # one refresh for topics and groups
        expect(billing).to_have_count(0)
        expect(page.locator("#group-title")).to_have_text("audit")
        assert rest.delete("/v1/groups/audit").status_code == 204
        page.click("#groups-refresh")
        expect(page.get_by_test_id("groups-empty")).to_be_visible()
        expect(page.get_by_test_id("groups-table")).to_be_hidden()
    finally:
        page.context.close()
    assert errors == []


def test_group_member_on_websocket_shown(
    console: Page, server: RunningServer, rest: httpx.Client
) -> None:
    assert rest.post("/v1/topics", json={"name": "orders", "partitions": 2}).status_code == 201
    batch = {"records": [{"value": i, "partition": i % 2} for i in range(5)]}  # 3 on 0, 2 on 1
    assert rest.post("/v1/topics/orders/records", json=batch).status_code == 200
    expect(console.get_by_test_id("groups-empty")).to_be_visible()

    url = f"{server.ws_url}/v1/topics/orders/ws?group=emailer&from=earliest"
    with connect(url, open_timeout=10) as ws:
        assignment = recv_until(ws, "assignment")
        member_id = assignment["member_id"]
        assert sorted(assignment["partitions"]) == ["0", "1"]

        # No click: the auto-refresh (on by default) picks the new member up.
        expect(group_row(console, "emailer").get_by_test_id("group-member-count")).to_have_text("1")
        member = console.locator(f'[data-testid="group-member"][data-member="{member_id}"]')
        expect(member.get_by_test_id("member-id")).to_have_text(member_id)
        expect(member.get_by_test_id("member-topic")).to_have_text("orders")
        expect(member.get_by_test_id("member-partitions")).to_have_attribute(
            "data-partitions", "0,1"
        )
        expect(member.get_by_test_id("member-auto-commit")).to_have_text("off")
        expect_offset(console, "orders", 0, committed="-", hwm="3", lag="-", owner=member_id)
        expect_offset(console, "orders", 1, committed="-", hwm="2", lag="-", owner=member_id)

        # The member reads every record and commits (partition 1 only in part).
        records = [recv_until(ws, "record") for _ in range(5)]
        assert sorted((r["partition"], r["offset"]) for r in records) == [
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (1, 1),
        ]
        ws.send(json.dumps({"type": "commit", "offsets": {"0": 3, "1": 1}}))
        assert recv_until(ws, "committed")["offsets"] == {"0": 3, "1": 1}
        console.click("#groups-refresh")
        expect_offset(console, "orders", 0, committed="3", hwm="3", lag="0", owner=member_id)
        expect_offset(console, "orders", 1, committed="1", hwm="2", lag="1", owner=member_id)

        # A second member (auto-commit) joins: the partitions are split between the two.
        with connect(url + "&auto_commit=true", open_timeout=10) as second:
            second_assignment = recv_until(second, "assignment")
            second_id = second_assignment["member_id"]
            (taken,) = (int(p) for p in second_assignment["partitions"])
            console.click("#groups-refresh")
            expect(console.locator('[data-testid="group-member"]')).to_have_count(2)
            other = console.locator(f'[data-testid="group-member"][data-member="{second_id}"]')
            expect(other.get_by_test_id("member-auto-commit")).to_have_text("on")
            expect(other.get_by_test_id("member-partitions")).to_have_attribute(
                "data-partitions", str(taken)
            )
            expect(member.get_by_test_id("member-partitions")).to_have_attribute(
                "data-partitions", str(1 - taken)
            )
            owners = console.locator('[data-testid="group-offset"] [data-testid="offset-owner"]')
            expected = [second_id if p == taken else member_id for p in (0, 1)]
            expect(owners).to_have_text(expected)
            expect(group_row(console, "emailer").get_by_test_id("group-member-count")).to_have_text(
                "2"
            )

    # Both closed: the group stays (its committed offsets do), with no members and no owners.
    wait_until(lambda: rest.get("/v1/groups/emailer").json()["members"] == [])
    console.click("#groups-refresh")
    expect(group_row(console, "emailer").get_by_test_id("group-member-count")).to_have_text("0")
    expect(console.get_by_test_id("group-members-empty")).to_be_visible()
    expect(console.locator('[data-testid="group-member"]')).to_have_count(0)
    expect_offset(console, "orders", 0, committed="3", hwm="3", lag="0", owner="-")


def test_topic_config_sources_shown(console: Page, rest: httpx.Client) -> None:
    response = rest.post("/v1/topics", json={"name": "audit", "config": {"retention.ms": 3600000}})
    assert response.status_code == 201
    sources = response.json()["config_sources"]
    assert sources["retention.ms"] == "topic" and sources["cleanup.policy"] == "default"
    console.click("#topics-refresh")
    config = topic_row(console, "audit").get_by_test_id("topic-config")
    expect(config).to_have_attribute("data-overrides", "1")
    expect(config.locator("summary")).to_have_text("1 set on topic")
    config.locator("summary").click()
    retention = config.locator('[data-testid="config-entry"][data-key="retention.ms"]')
    expect(retention.get_by_test_id("config-value")).to_have_text("3600000 (1 h)")
    expect(retention.get_by_test_id("config-source")).to_have_text("topic")
    policy = config.locator('[data-testid="config-entry"][data-key="cleanup.policy"]')
    expect(policy.get_by_test_id("config-value")).to_have_text("delete")
    expect(policy.get_by_test_id("config-source")).to_have_text("default")
    expect(policy).to_have_attribute("data-source", "default")

    # It stays open across refreshes.
    assert rest.post("/v1/topics/audit/records", json={"value": 1}).status_code == 200
    console.click("#topics-refresh")
    expect(topic_row(console, "audit").get_by_test_id("topic-records")).to_have_text("1")
    expect(config).to_have_js_property("open", True)
    expect(retention.get_by_test_id("config-source")).to_be_visible()


def _json_string(text: str) -> str:
    """`text` as JSON.stringify writes it (quotes escaped; <, > and = kept)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

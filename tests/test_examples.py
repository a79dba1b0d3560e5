"""The documented Python examples (examples/; docs/tour.md, docs/clients.md) as real processes
against real servers: permanent errors end them with the server's message and exit status 1;
transient ones reconnect and resume without losing or repeating anything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.conftest import (
    REPO,
    ServerProcess,
    fetch_all,
    free_port,
    serve_in_thread,
    start_server_process,
    wait_until,
)
from tests.relay import relay_to


class Example:
    """`python examples/<name>.py args...` with EDDY_URL set; its output lines, as they come."""

    def __init__(self, name: str, url: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "examples" / f"{name}.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "EDDY_URL": url},
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr)),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        with stream:
            for line in stream:
                lines.append(line.rstrip("\n"))

    def finish(self, timeout: float = 30) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"still running: {self.stdout[-5:]} {self.stderr[-5:]}") from None
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)


@pytest.fixture
def same_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    port = free_port()
    monkeypatch.setattr("tests.conftest.free_port", lambda: port)
    yield port


def test_permanent_errors_end_the_examples_with_the_servers_message(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data", auto_create_topics=False) as server:
        runs = {
            "bad name": Example("subscriber", server.ws_url, "bad name"),
            "missing": Example("subscriber", server.ws_url, "missing"),
            "worker": Example("order_worker", server.ws_url),
            "feed": Example("stock_feed", server.base_url, "3"),  # http:// works too
        }
        codes = {name: run.finish() for name, run in runs.items()}
    assert codes == dict.fromkeys(runs, 1)
    bad = runs["bad name"].stderr[-1]
    assert bad.startswith("error: invalid_request: invalid topic name") and "close 4400" in bad
    for name, topic in (("missing", "missing"), ("worker", "orders"), ("feed", "prices")):
        last = runs[name].stderr[-1]
        assert last.startswith("error: topic_not_found:") and f"'{topic}'" in last, last
        assert "close 4404" in last
        assert not [line for line in runs[name].stdout if "reconnecting" in line]


def test_deleted_topic_ends_the_subscriber_and_is_not_recreated(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data") as server, server.client() as rest:
        assert rest.post("/v1/topics", json={"name": "doomed"}).status_code == 201
        subscriber = Example("subscriber", server.ws_url, "doomed")
        wait_until(lambda: _subscribed(rest))
        assert rest.post("/v1/topics/doomed/records", json={"value": 1}).status_code == 200
        wait_until(lambda: subscriber.stdout)
        assert rest.delete("/v1/topics/doomed").status_code == 204
        assert subscriber.finish() == 1
        assert rest.get("/v1/topics/doomed").status_code == 404
    assert subscriber.stdout == ["0 0 None 1"]
    assert "topic_not_found" in subscriber.stderr[-1]


def _subscribed(rest: httpx.Client) -> bool:
    """The subscriber's WebSocket is open (the gauge of open subscribe WebSockets says so)."""
    metrics = rest.get("/metrics").text
    match = re.search(r'eddy_websockets_open\{endpoint="subscribe"\} (\d+)', metrics)
    return bool(match and float(match.group(1)) >= 1)


def test_subscriber_resumes_across_server_restart(tmp_path: Path, same_port: int) -> None:
    data = tmp_path / "data"
    server: ServerProcess = start_server_process(data)
    subscriber: Example | None = None
    try:
        with _client(server) as rest:
            response = rest.post("/v1/topics", json={"name": "prices", "partitions": 2})
            assert response.status_code == 201
            subscriber = Example("subscriber", server.ws_url, "prices")
            wait_until(lambda: _subscribed(rest), timeout=20)
            _produce(rest, range(0, 10))
            wait_until(lambda: len(subscriber.stdout) >= 10)
        server.stop(signal.SIGTERM)
        wait_until(lambda: any("reconnecting" in line for line in subscriber.stderr))
        server = start_server_process(data)
        with _client(server) as rest:
            _produce(rest, range(10, 20))
            wait_until(lambda: len(subscriber.stdout) >= 20, timeout=30)
    finally:
        if subscriber is not None:
            subscriber.stop()
        server.stop()
    seen = [line.split() for line in subscriber.stdout]
    assert len({(p, o) for p, o, _key, _value in seen}) == len(seen) == 20  # nothing repeated
    assert sorted(int(value) for *_, value in seen) == list(range(20))  # nothing lost


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=10)


def _produce(rest: httpx.Client, values: range) -> None:
    for v in values:
        response = rest.post(
            "/v1/topics/prices/records", json={"key": f"k{v % 3}", "value": v, "partition": v % 2}
        )
        assert response.status_code == 200


def test_stock_feed_resends_across_a_cut_connection_without_duplicates(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "data") as server,
        server.client() as rest,
        relay_to(int(server.base_url.rsplit(":", 1)[1])) as relay,
    ):
        feed = Example("stock_feed", relay.url, "30")
        wait_until(lambda: len(feed.stdout) >= 10, timeout=30)
        relay.hold_replies()  # the ack of the update in flight is lost ...
        wait_until(lambda: len(fetch_all(rest, "prices")) > len(feed.stdout))
        relay.cut()  # ... and the connection breaks: the update is sent again
        assert feed.finish() == 0, feed.stderr
        stored = fetch_all(rest, "prices")
    assert len(stored) == 30
    assert len({(r["value"]["at"], r["key"]) for r in stored}) == 30  # each update once
    assert any("reconnecting" in line for line in feed.stderr)


def test_order_worker_resumes_at_the_group_commits_across_server_restart(
    tmp_path: Path, same_port: int
) -> None:
    data = tmp_path / "data"
    server: ServerProcess = start_server_process(data)
    worker: Example | None = None
    try:
        with _client(server) as rest:
            response = rest.post("/v1/topics", json={"name": "orders", "partitions": 2})
            assert response.status_code == 201
            worker = Example("order_worker", server.ws_url)
            _orders(rest, range(0, 10))
            wait_until(lambda: len(_emails(worker)) >= 10, timeout=30)
            wait_until(lambda: _all_committed(rest))
        server.stop(signal.SIGTERM)
        wait_until(lambda: any("reconnecting" in line for line in worker.stdout))
        server = start_server_process(data)
        with _client(server) as rest:
            _orders(rest, range(10, 20))
            wait_until(lambda: len(_emails(worker)) >= 20, timeout=30)
            wait_until(lambda: _all_committed(rest))
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    assert sorted(_emails(worker)) == list(range(20))  # each order once: commits were kept


def _orders(rest: httpx.Client, ids: range) -> None:
    for order in ids:
        response = rest.post(
            "/v1/topics/orders/records", json={"key": f"c{order}", "value": {"id": order}}
        )
        assert response.status_code == 200


def _emails(worker: Example) -> list[int]:
    return [
        int(m.group(1))
        for line in worker.stdout
        if (m := re.match(r"email sent for order (\d+)", line))
    ]


def _all_committed(rest: httpx.Client) -> bool:
    offsets = rest.get("/v1/groups/emailer").json()["offsets"]
    return bool(offsets) and all(o["committed_offset"] == o["high_watermark"] for o in offsets)

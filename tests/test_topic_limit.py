"""--max-topics bounds explicit creation and auto-creation (produce, subscribe, publish)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, serve_in_thread, start_server_process
from tests.rawhttp import websocket_refusal


@pytest.fixture
def small(tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(tmp_path / "data", max_topics=3) as running:
        yield running


def assert_limit(response: httpx.Response, topic: str) -> None:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "topic_limit_reached"
    assert error["details"] == {"topic": topic, "max_topics": 3}


def test_create_and_auto_create_stop_at_the_limit(small: RunningServer) -> None:
    with small.client() as client:
        for name in ("a", "b"):
            assert client.post("/v1/topics", json={"name": name}).status_code == 201
        auto = client.post("/v1/topics/c/records", json={"records": [{"value": 1}]})
        assert auto.status_code == 200  # the third topic, auto-created
        assert_limit(client.post("/v1/topics", json={"name": "d"}), "d")
        assert_limit(client.post("/v1/topics/e/records", json={"records": [{"value": 1}]}), "e")
        existing = client.post("/v1/topics", json={"name": "a"})
        assert existing.json()["error"]["code"] == "topic_exists"  # the better answer
        assert client.post("/v1/topics/a/records", json={"records": [{"value": 2}]}).is_success
        assert [t["name"] for t in client.get("/v1/topics").json()["topics"]] == ["a", "b", "c"]
        assert client.delete("/v1/topics/b").status_code == 204
        assert client.post("/v1/topics", json={"name": "d"}).status_code == 201


def test_auto_create_by_websocket_is_refused_with_an_error_frame(small: RunningServer) -> None:
    with small.client() as client:
        for name in ("a", "b", "c"):
            assert client.post("/v1/topics", json={"name": name}).status_code == 201
    for endpoint in ("ws", "publish"):
        frame, code = websocket_refusal(f"{small.ws_url}/v1/topics/new/{endpoint}")
        assert (frame["type"], frame["code"], code) == ("error", "topic_limit_reached", 4400)


def test_concurrent_creates_do_not_pass_the_limit(small: RunningServer) -> None:
    def create(i: int) -> int:
        with small.client() as client:
            return client.post("/v1/topics", json={"name": f"t{i}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(create, range(8)))
    assert sorted(statuses) == [201] * 3 + [409] * 5


def test_the_cli_flag_sets_the_limit(tmp_path: Path) -> None:
    server = start_server_process(tmp_path / "data", "--max-topics", "1")
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert client.post("/v1/topics", json={"name": "one"}).status_code == 201
            refused = client.post("/v1/topics", json={"name": "two"})
            assert refused.status_code == 409
            assert refused.json()["error"]["details"]["max_topics"] == 1
    finally:
        server.stop()

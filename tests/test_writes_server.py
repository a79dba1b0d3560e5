"""Writes through a real server: auto-committing group members racing each other, a failed
auto-commit retried, idempotent WebSocket resends after a reconnect, 503 with Retry-After."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from eddy.app.errors import error_response
from eddy.models.errors import Unavailable
from tests.conftest import fetch_all, fill_disk, serve_in_thread, start_server_process, wait_until

PARTITIONS = 20


def committed(client: httpx.Client, group: str) -> dict[int, int | None]:
    response = client.get(f"/v1/groups/{group}")
    if response.status_code == 404:
        return {}
    return {o["partition"]: o["committed_offset"] for o in response.json()["offsets"]}


def high_watermarks(client: httpx.Client, topic: str) -> dict[int, int]:
    info = client.get(f"/v1/topics/{topic}").json()
    return {p["partition"]: p["high_watermark"] for p in info["partitions"]}


class Consumer(threading.Thread):
    """A group member with auto_commit, reading until told to stop."""

    def __init__(self, ws_url: str, topic: str, group: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{ws_url}/v1/topics/{topic}/ws?group={group}&auto_commit=true&from=earliest"
        self.joined = threading.Event()
        self.stop = threading.Event()
        self.records = 0
        self.errors: list[dict[str, Any]] = []

    def run(self) -> None:
        with connect(self.url, open_timeout=10) as ws:
            while not self.stop.is_set():
                try:
                    frame = json.loads(ws.recv(timeout=0.2))
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    return
                if frame["type"] == "assignment":
                    self.joined.set()
                elif frame["type"] == "record":
                    self.records += 1
                elif frame["type"] == "error":
                    self.errors.append(frame)


def test_twenty_auto_committing_members_never_fail_and_commits_survive_a_kill(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    server = start_server_process(data, "--auto-commit-interval", "0.1")
    consumers = [Consumer(server.ws_url, "flow", "g") for _ in range(PARTITIONS)]
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            created = client.post("/v1/topics", json={"name": "flow", "partitions": PARTITIONS})
            assert created.status_code == 201
            for consumer in consumers:
                consumer.start()
                if not consumer.joined.wait(10):
                    server.stop(signal.SIGKILL)
                    pytest.fail(f"a member got no assignment; the server said:\n{server.output}")
            sent = 0
            for _ in range(150):  # ~3,000 records while 20 members auto-commit
                records = [{"value": sent + i} for i in range(20)]
                response = client.post("/v1/topics/flow/records", json={"records": records})
                assert response.status_code == 200, response.text
                sent += len(records)
            ends = high_watermarks(client, "flow")
            assert sum(ends.values()) == sent
            # Every member commits what it was sent: the group catches up with the log.
            wait_until(lambda: committed(client, "g") == ends, timeout=30)
            acknowledged = committed(client, "g")
    finally:
        for consumer in consumers:
            consumer.stop.set()
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)  # memory never claimed what the disk does not hold
    for consumer in consumers:
        consumer.join(10)
        assert not consumer.errors
    assert "auto-commit" not in server.output and "cannot commit" not in server.output
    server = start_server_process(data)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert committed(client, "g") == acknowledged
    finally:
        server.stop()


def test_a_failed_auto_commit_is_retried_at_the_next_interval(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="eddy.groups")
    with (
        serve_in_thread(small_fs / "data", auto_commit_interval=0.1) as server,
        server.client() as client,
    ):
        assert client.post("/v1/topics", json={"name": "t"}).status_code == 201
        records = [{"value": i} for i in range(50)]
        assert client.post("/v1/topics/t/records", json={"records": records}).status_code == 200
        filler = fill_disk(small_fs)  # the disk is full: groups.db cannot grow its log
        consumer = Consumer(server.ws_url, "t", "g")
        consumer.start()
        try:
            wait_until(lambda: consumer.records == 50)
            wait_until(lambda: "auto-commit" in caplog.text)
            assert committed(client, "g") == {0: None}  # nothing claimed
            filler.unlink()
            wait_until(lambda: committed(client, "g") == {0: 50})
        finally:
            consumer.stop.set()
            consumer.join(10)


def test_idempotent_resends_after_a_reconnect_get_their_original_acks(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data") as server, server.client() as client:
        assert client.post("/v1/topics", json={"name": "t", "partitions": 3}).status_code == 201
        url = f"{server.ws_url}/v1/topics/t/publish?producer_id=phone-1"
        frames = [json.dumps({"id": i, "value": i, "sequence": i}) for i in range(100)]
        with connect(url) as ws:  # sends everything, reads no ack, goes away
            for frame in frames:
                ws.send(frame)
        with connect(url) as ws:
            for frame in frames:
                ws.send(frame)
            acks = [json.loads(ws.recv(timeout=10)) for _ in frames]
            ws.send(json.dumps({"id": "next", "value": "next", "sequence": 100}))
            after = json.loads(ws.recv(timeout=10))
        assert [a["type"] for a in acks] == ["ack"] * 100, acks
        stored = {r["value"]: (p, r["offset"]) for p in range(3) for r in fetch_all(client, "t", p)}
        assert len(stored) == 101 and sum(high_watermarks(client, "t").values()) == 101
        assert [(a["partition"], a["offset"]) for a in acks] == [stored[i] for i in range(100)]
        assert after["type"] == "ack" and (after["partition"], after["offset"]) == stored["next"]


def test_an_unavailable_storage_answers_503_with_retry_after() -> None:
    response = error_response(Unavailable("queue full", retry_after=0.4))
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert json.loads(bytes(response.body))["error"]["code"] == "unavailable"
    assert "Retry-After" not in error_response(Unavailable("disk")).headers

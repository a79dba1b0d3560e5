"""Consumer groups against a real server with real WebSocket clients."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import RunningServer, serve_in_thread, wait_until
from tests.test_websocket import stalled_websocket

FAST_PING = {"ws_ping_interval": 0.3, "ws_ping_timeout": 0.5, "auto_commit_interval": 0.2}


@pytest.fixture
def gserver(tmp_path: Path) -> Iterator[RunningServer]:
    """A server that notices vanished clients and auto-commits quickly."""
    with serve_in_thread(tmp_path / "data", **FAST_PING) as running:
        yield running


@pytest.fixture
def client(gserver: RunningServer) -> Iterator[httpx.Client]:
    with gserver.client() as c:
        yield c


class Member:
    """A group member: a WebSocket plus what it has seen."""

    def __init__(self, server: RunningServer, topic: str, group: str, query: str = "") -> None:
        url = f"{server.ws_url}/v1/topics/{topic}/ws?group={group}{query}"
        self.ws: ClientConnection = connect(url, open_timeout=10).__enter__()
        self.assignment: dict[int, int] = {}
        self.member_id = ""
        self.records: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []  # frames that arrived while awaiting a reply

    def next_frame(self, timeout: float = 10) -> dict[str, Any]:
        frame = self._pending.pop(0) if self._pending else self._read(timeout)
        if frame["type"] == "assignment":
            self.assignment = {int(p): v["offset"] for p, v in frame["partitions"].items()}
            self.member_id = frame["member_id"]
        elif frame["type"] == "record":
            self.records.append(frame)
        return frame

    def _read(self, timeout: float) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        self.frames.append(frame)
        return frame

    def until(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next_frame(max(deadline - time.monotonic(), 0.01))
            if frame["type"] == kind:
                return frame

    def settle(self, quiet: float = 0.3) -> None:
        """Read frames until none arrives for `quiet` seconds."""
        try:
            while True:
                self.next_frame(quiet)
        except TimeoutError:
            pass

    def commit(self, offsets: dict[int, int]) -> dict[str, Any]:
        self.ws.send(
            json.dumps({"type": "commit", "offsets": {str(p): o for p, o in offsets.items()}})
        )
        while True:
            frame = self._read(10)
            if frame["type"] in ("committed", "error"):
                return frame
            self._pending.append(frame)  # keep records for the caller, in order

    def close(self) -> None:
        self.ws.close()


def make_topic(client: httpx.Client, name: str, partitions: int = 4) -> None:
    assert (
        client.post("/v1/topics", json={"name": name, "partitions": partitions}).status_code == 201
    )


def produce_spread(
    client: httpx.Client, topic: str, per_partition: int, partitions: int = 4, start: int = 0
) -> None:
    records = [
        {"value": start + i * partitions + p, "partition": p}
        for i in range(per_partition)
        for p in range(partitions)
    ]
    assert client.post(f"/v1/topics/{topic}/records", json={"records": records}).status_code == 200


def check_balanced(members: list[Member], partitions: int) -> None:
    owned = [p for m in members for p in m.assignment]
    assert sorted(owned) == list(range(partitions)), [m.assignment for m in members]
    counts = [len(m.assignment) for m in members]
    assert max(counts) - min(counts) <= 1


def test_two_then_three_members_share_four_partitions(
    client: httpx.Client, gserver: RunningServer
) -> None:
    make_topic(client, "orders")
    a = Member(gserver, "orders", "billing")
    assert a.until("assignment")["partitions"] == {str(p): {"offset": 0} for p in range(4)}
    b = Member(gserver, "orders", "billing")
    b.until("assignment")
    a.until("assignment")
    check_balanced([a, b], 4)
    c = Member(gserver, "orders", "billing")
    c.until("assignment")
    a.until("assignment")
    b.until("assignment")
    check_balanced([a, b, c], 4)
    assert len({a.member_id, b.member_id, c.member_id}) == 3
    # records go to the owner of their partition only
    produce_spread(client, "orders", 5)
    for m in (a, b, c):
        m.settle()
        assert {r["partition"] for r in m.records} == set(m.assignment)
    assert sorted(r["value"] for m in (a, b, c) for r in m.records) == list(range(20))
    described = client.get("/v1/groups/billing").json()
    assert {x["member_id"]: sorted(x["partitions"]) for x in described["members"]} == {
        m.member_id: sorted(m.assignment) for m in (a, b, c)
    }
    # a member leaves: the others take its partitions
    c.close()
    a.until("assignment")
    b.until("assignment")
    check_balanced([a, b], 4)
    a.close()
    b.close()


def test_member_that_vanishes_without_close_is_removed(
    client: httpx.Client, gserver: RunningServer
) -> None:
    make_topic(client, "drop")
    ghost = stalled_websocket(gserver, "/v1/topics/drop/ws?group=g")  # never answers pings
    wait_until(lambda: client.get("/v1/groups/g").status_code == 200)
    live = Member(gserver, "drop", "g")
    live.until("assignment")
    assert len(live.assignment) == 2
    started = time.monotonic()
    frame = live.until("assignment", timeout=15)
    assert len(frame["partitions"]) == 4
    assert time.monotonic() - started < 10  # ping 0.3 s + timeout 0.5 s, with slack
    assert len(client.get("/v1/groups/g").json()["members"]) == 1
    ghost.close()
    live.close()


def test_uncommitted_records_are_redelivered_to_the_next_owner(
    client: httpx.Client, gserver: RunningServer
) -> None:
    make_topic(client, "emails", 2)
    produce_spread(client, "emails", 5, partitions=2)
    first = Member(gserver, "emails", "mailer", "&from=earliest")
    first.until("assignment")
    while len(first.records) < 10:
        first.next_frame()
    assert first.commit({0: 3, 1: 5})["type"] == "committed"  # p1 fully, p0 up to offset 3
    first.close()
    second = Member(gserver, "emails", "mailer", "&from=earliest")
    frame = second.until("assignment")
    assert frame["partitions"] == {"0": {"offset": 3}, "1": {"offset": 5}}
    second.settle()
    assert [(r["partition"], r["offset"]) for r in second.records] == [(0, 3), (0, 4)]
    second.close()


def test_new_member_without_committed_offsets_starts_at_from(
    client: httpx.Client, gserver: RunningServer
) -> None:
    make_topic(client, "fresh", 1)
    produce_spread(client, "fresh", 3, partitions=1)
    latest = Member(gserver, "fresh", "late")
    assert latest.until("assignment")["partitions"] == {"0": {"offset": 3}}
    latest.close()
    earliest = Member(gserver, "fresh", "early", "&from=earliest")
    assert earliest.until("assignment")["partitions"] == {"0": {"offset": 0}}
    earliest.close()


def test_commits_survive_reconnect_and_server_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_in_thread(data, **FAST_PING) as server, server.client() as client:
        make_topic(client, "jobs", 2)
        produce_spread(client, "jobs", 4, partitions=2)
        m = Member(server, "jobs", "workers", "&from=earliest")
        m.until("assignment")
        assert m.commit({0: 2, 1: 4})["offsets"] == {"0": 2, "1": 4}
        m.close()
        again = Member(server, "jobs", "workers")
        assert again.until("assignment")["partitions"] == {"0": {"offset": 2}, "1": {"offset": 4}}
        again.close()
    with serve_in_thread(data, **FAST_PING) as server, server.client() as client:
        described = client.get("/v1/groups/workers").json()
        assert {
            (o["partition"], o["committed_offset"], o["lag"]) for o in described["offsets"]
        } == {(0, 2, 2), (1, 4, 0)}
        m = Member(server, "jobs", "workers")
        assert m.until("assignment")["partitions"] == {"0": {"offset": 2}, "1": {"offset": 4}}
        m.close()


def test_stale_commit_is_rejected_and_changes_nothing(
    client: httpx.Client, gserver: RunningServer
) -> None:
    make_topic(client, "stale", 2)
    produce_spread(client, "stale", 3, partitions=2)
    a = Member(gserver, "stale", "grp", "&from=earliest")
    a.until("assignment")
    b = Member(gserver, "stale", "grp", "&from=earliest")
    b.until("assignment")
    a.until("assignment")
    [lost] = set(range(2)) - set(a.assignment)
    assert b.commit({lost: 3})["type"] == "committed"
    error = a.commit({lost: 1})
    assert error["code"] == "not_assigned" and error["details"]["partitions"] == [lost]
    offsets = {
        o["partition"]: o["committed_offset"]
        for o in client.get("/v1/groups/grp").json()["offsets"]
    }
    assert offsets[lost] == 3
    # a commit mixing an owned and a foreign partition is rejected whole
    [kept] = a.assignment
    assert a.commit({kept: 2, lost: 0})["code"] == "not_assigned"
    assert {
        o["partition"]: o["committed_offset"]
        for o in client.get("/v1/groups/grp").json()["offsets"]
    }[kept] is None
    # malformed commits get error frames and the connection stays usable
    for bad in (
        {"type": "commit"},
        {"type": "commit", "offsets": {"x": 1}},
        {"type": "commit", "offsets": {str(kept): 99}},
        {"type": "nope"},
    ):
        a.ws.send(json.dumps(bad))
        assert a.until("error")["type"] == "error"
    assert a.commit({kept: 1})["type"] == "committed"
    a.close()
    b.close()


def test_auto_commit_commits_what_was_sent(client: httpx.Client, gserver: RunningServer) -> None:
    make_topic(client, "auto", 1)
    m = Member(gserver, "auto", "ac", "&from=earliest&auto_commit=true")
    m.until("assignment")
    produce_spread(client, "auto", 5, partitions=1)
    while len(m.records) < 5:
        m.next_frame()
    wait_until(lambda: client.get("/v1/groups/ac").json()["offsets"][0]["committed_offset"] == 5)
    produce_spread(client, "auto", 2, partitions=1, start=5)
    while len(m.records) < 7:
        m.next_frame()
    m.close()  # leaving commits the rest at once
    wait_until(lambda: not client.get("/v1/groups/ac").json()["members"])
    assert client.get("/v1/groups/ac").json()["offsets"][0]["committed_offset"] == 7


def test_rest_endpoints(client: httpx.Client, gserver: RunningServer) -> None:
    make_topic(client, "orders", 2)
    produce_spread(client, "orders", 5, partitions=2)
    assert client.get("/v1/groups").json() == {"groups": []}
    assert client.get("/v1/groups/none").status_code == 404
    assert client.get("/v1/groups/none").json()["error"]["code"] == "group_not_found"
    ok = client.post("/v1/groups/rest/offsets", json={"topic": "orders", "offsets": {"0": 2}})
    assert ok.status_code == 200, ok.text
    assert client.get("/v1/groups").json() == {
        "groups": [{"group": "rest", "topics": ["orders"], "members": 0}]
    }
    described = client.get("/v1/groups/rest").json()
    assert described["members"] == []
    assert described["offsets"] == [
        {
            "topic": "orders",
            "partition": 0,
            "committed_offset": 2,
            "metadata": "",
            "high_watermark": 5,
            "lag": 3,
            "member_id": None,
        },
        {
            "topic": "orders",
            "partition": 1,
            "committed_offset": None,
            "metadata": None,
            "high_watermark": 5,
            "lag": None,
            "member_id": None,
        },
    ]
    for body, status, code in [
        ({"topic": "orders", "offsets": {"0": 99}}, 416, "offset_out_of_range"),
        ({"topic": "orders", "offsets": {"5": 1}}, 404, "partition_not_found"),
        ({"topic": "nope", "offsets": {"0": 1}}, 404, "topic_not_found"),
        ({"topic": "orders", "offsets": {}}, 422, "invalid_request"),
        ({"topic": "orders"}, 422, "invalid_request"),
    ]:
        response = client.post("/v1/groups/rest/offsets", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    reset = client.post("/v1/groups/rest/reset", json={"topic": "orders", "to": "latest"})
    assert reset.json()["offsets"] == {"0": 5, "1": 5}
    reset = client.post("/v1/groups/rest/reset", json={"topic": "orders", "to": "earliest"})
    assert reset.json()["offsets"] == {"0": 0, "1": 0}
    records = client.get("/v1/topics/orders/partitions/1/records?offset=3").json()["records"]
    by_time = client.post(
        "/v1/groups/rest/reset",
        json={"topic": "orders", "to": {"timestamp": records[0]["timestamp"]}},
    )
    assert by_time.status_code == 200 and by_time.json()["offsets"]["1"] <= 3
    assert (
        client.post("/v1/groups/rest/reset", json={"topic": "orders", "to": "never"}).status_code
        == 422
    )
    # with a member connected: reset, delete and REST commits on its topic get 409
    m = Member(gserver, "orders", "rest")
    m.until("assignment")
    for response in (
        client.post("/v1/groups/rest/reset", json={"topic": "orders", "to": "earliest"}),
        client.delete("/v1/groups/rest"),
        client.post("/v1/groups/rest/offsets", json={"topic": "orders", "offsets": {"0": 1}}),
    ):
        assert response.status_code == 409 and response.json()["error"]["code"] == "group_active"
    m.close()
    wait_until(lambda: client.get("/v1/groups/rest").json()["members"] == [])
    assert client.delete("/v1/groups/rest").status_code == 204
    assert client.get("/v1/groups/rest").status_code == 404
    assert client.delete("/v1/groups/rest").status_code == 404
    assert client.get("/v1/groups/bad%20name").status_code == 422


def test_rest_only_worker_pattern(client: httpx.Client, gserver: RunningServer) -> None:
    """Worker i of n reads partitions p with p % n == i, committing after processing."""
    make_topic(client, "tasks", 4)
    produce_spread(client, "tasks", 6)

    def run_worker(index: int, workers: int, stop_after: int | None = None) -> list[int]:
        processed: list[int] = []
        offsets = {
            o["partition"]: o["committed_offset"]
            for o in client.get("/v1/groups/rest-workers").json().get("offsets", [])
        }
        for p in range(4):
            if p % workers != index:
                continue
            position = offsets.get(p) or 0
            while True:
                body = client.get(
                    f"/v1/topics/tasks/partitions/{p}/records",
                    params={"offset": position, "limit": 2},
                ).json()
                if not body["records"]:
                    break
                for record in body["records"]:
                    processed.append(record["value"])
                    if stop_after is not None and len(processed) >= stop_after:
                        return processed  # "crash" before committing this batch
                position = body["next_offset"]
                committed = client.post(
                    "/v1/groups/rest-workers/offsets",
                    json={"topic": "tasks", "offsets": {str(p): position}},
                )
                assert committed.status_code == 200
        return processed

    client.post("/v1/groups/rest-workers/offsets", json={"topic": "tasks", "offsets": {"0": 0}})
    crashed = run_worker(0, 2, stop_after=3)
    done = run_worker(0, 2) + run_worker(1, 2)
    assert set(done) | set(crashed) == set(range(24))
    assert set(done) == set(range(24)) - set(crashed[:2])  # only the uncommitted one repeats
    assert all(o["lag"] == 0 for o in client.get("/v1/groups/rest-workers").json()["offsets"])


def test_group_metrics(client: httpx.Client, gserver: RunningServer) -> None:
    make_topic(client, "metered", 1)
    produce_spread(client, "metered", 4, partitions=1)
    client.post("/v1/groups/mg/offsets", json={"topic": "metered", "offsets": {"0": 1}})
    m = Member(gserver, "metered", "mg")
    m.until("assignment")
    text = client.get("/metrics").text
    assert 'eddy_group_committed_offset{group="mg",partition="0",topic="metered"} 1.0' in text
    assert 'eddy_group_lag{group="mg",partition="0",topic="metered"} 3.0' in text
    assert 'eddy_group_rebalances_total{group="mg",topic="metered"} 1.0' in text
    m.close()


def test_no_record_lost_while_members_come_and_go(
    client: httpx.Client, gserver: RunningServer
) -> None:
    """Members join and leave while records flow; each commits after processing. Every record
    is processed at least once."""
    make_topic(client, "flow", 4)
    total = 400
    processed: list[int] = []
    lock = threading.Lock()
    producing_done = threading.Event()

    def producer() -> None:
        with gserver.client() as c:
            for i in range(total):
                r = c.post("/v1/topics/flow/records", json={"key": f"k{i % 13}", "value": i})
                assert r.status_code == 200
                if i % 50 == 0:
                    time.sleep(0.05)
        producing_done.set()

    def member_life(seed: int) -> None:
        rng = random.Random(seed)
        m = Member(gserver, "flow", "flow-group", "&from=earliest")
        deadline = time.monotonic() + rng.uniform(0.3, 1.5)
        try:
            while time.monotonic() < deadline:
                try:
                    frame = m.next_frame(0.2)
                except TimeoutError:
                    continue
                if frame["type"] == "record":
                    with lock:
                        processed.append(frame["value"])
                    reply = m.commit({frame["partition"]: frame["offset"] + 1})
                    assert reply["type"] in ("committed", "error")
        except ConnectionClosed:
            pass
        finally:
            m.close()

    producer_thread = threading.Thread(target=producer)
    producer_thread.start()
    seed = 0
    while not producing_done.is_set():
        lives = [threading.Thread(target=member_life, args=(seed + i,)) for i in range(3)]
        seed += 3
        for t in lives:
            t.start()
        for t in lives:
            t.join()
    producer_thread.join()
    # a last member drains whatever is left, committing as it goes
    final = Member(gserver, "flow", "flow-group", "&from=earliest")
    final.until("assignment")

    def caught_up() -> bool:
        offsets = client.get("/v1/groups/flow-group").json()["offsets"]
        return all((o["committed_offset"] or 0) == o["high_watermark"] for o in offsets)

    deadline = time.monotonic() + 30
    while not caught_up() and time.monotonic() < deadline:
        try:
            frame = final.next_frame(0.5)
        except TimeoutError:
            continue
        if frame["type"] == "record":
            processed.append(frame["value"])
            final.commit({frame["partition"]: frame["offset"] + 1})
    final.close()
    assert caught_up(), client.get("/v1/groups/flow-group").json()
    assert set(processed) == set(range(total))  # at least once: none lost


def test_auto_commit_with_a_keys_filter_commits_past_filtered_records(
    client: httpx.Client, gserver: RunningServer
) -> None:
    make_topic(client, "filtered", 1)
    m = Member(gserver, "filtered", "fk", "&from=earliest&auto_commit=true&keys=wanted")
    m.until("assignment")
    produce = [{"key": "wanted" if i % 3 == 0 else "other", "value": i} for i in range(9)]
    client.post("/v1/topics/filtered/records", json={"records": produce})
    while len(m.records) < 3:
        m.next_frame()
    assert [r["value"] for r in m.records] == [0, 3, 6]
    wait_until(lambda: client.get("/v1/groups/fk").json()["offsets"][0]["committed_offset"] == 9)
    m.close()

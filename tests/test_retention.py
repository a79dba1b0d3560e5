"""Retention, compaction, size limits and live topic configuration, against a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import RunningServer, fetch_all, serve_in_thread, wait_until

DAY_MS = 86_400_000


@pytest.fixture
def rserver(tmp_path: Path) -> Iterator[RunningServer]:
    """A server whose cleaner runs every 0.1 s."""
    with serve_in_thread(tmp_path / "data", retention_check_interval=0.1) as running:
        yield running


@pytest.fixture
def client(rserver: RunningServer) -> Iterator[httpx.Client]:
    with rserver.client() as c:
        yield c


def now_ms() -> int:
    return int(time.time() * 1000)


def create(client: httpx.Client, name: str, partitions: int = 1, /, **config: Any) -> None:
    response = client.post(
        "/v1/topics", json={"name": name, "partitions": partitions, "config": config}
    )
    assert response.status_code == 201, response.text


def produce(
    client: httpx.Client, topic: str, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    response = client.post(f"/v1/topics/{topic}/records", json={"records": records})
    assert response.status_code == 200, response.text
    offsets: list[dict[str, Any]] = response.json()["offsets"]
    return offsets


def partition(client: httpx.Client, topic: str, p: int = 0) -> dict[str, Any]:
    info: dict[str, Any] = client.get(f"/v1/topics/{topic}").json()["partitions"][p]
    return info


def test_retention_ms_removes_the_old_head_of_the_log(
    client: httpx.Client, rserver: RunningServer
) -> None:
    create(client, "aging", **{"retention.ms": DAY_MS})
    old = now_ms() - 2 * DAY_MS
    produce(client, "aging", [{"value": i, "timestamp": old + i} for i in range(5)])
    produce(client, "aging", [{"value": "fresh"}])
    wait_until(lambda: partition(client, "aging")["log_start_offset"] == 5)
    info = partition(client, "aging")
    assert info["high_watermark"] == 6
    assert [r["value"] for r in fetch_all(client, "aging", offset=5)] == ["fresh"]
    below = client.get("/v1/topics/aging/partitions/0/records", params={"offset": 2})
    assert below.status_code == 416
    assert below.json()["error"]["details"]["log_start_offset"] == 5
    earliest = client.get("/v1/topics/aging/partitions/0/records?offset=earliest").json()
    assert earliest["records"][0]["offset"] == 5
    with connect(f"{rserver.ws_url}/v1/topics/aging/ws?from=earliest") as ws:
        assert json.loads(ws.recv(timeout=10))["partitions"] == {"0": {"offset": 5}}
        assert json.loads(ws.recv(timeout=10))["value"] == "fresh"
    with connect(f"{rserver.ws_url}/v1/topics/aging/ws?offsets=0:1") as ws:  # removed: reset
        assert json.loads(ws.recv(timeout=10))["partitions"] == {"0": {"offset": 5, "reset": True}}


def test_retention_only_removes_a_prefix(client: httpx.Client) -> None:
    create(client, "mixed", **{"retention.ms": DAY_MS})
    old = now_ms() - 2 * DAY_MS
    produce(
        client,
        "mixed",
        [{"value": 0, "timestamp": old}, {"value": 1}, {"value": 2, "timestamp": old}],
    )
    wait_until(lambda: partition(client, "mixed")["log_start_offset"] == 1)
    time.sleep(0.5)  # several more cleaner passes: the old record behind a young one stays
    assert [r["value"] for r in fetch_all(client, "mixed", offset=1)] == [1, 2]


def test_retention_bytes_caps_each_partition(client: httpx.Client) -> None:
    create(client, "capped", 2, **{"retention.bytes": 10_000})
    for p in range(2):
        produce(client, "capped", [{"value": "x" * 1000, "partition": p} for _ in range(50)])
    for p in range(2):
        wait_until(lambda p=p: partition(client, "capped", p)["size_bytes"] <= 10_000)
        info = partition(client, "capped", p)
        assert info["size_bytes"] > 10_000 - 1100  # removed no more than needed
        records = fetch_all(client, "capped", p, offset=info["log_start_offset"])
        assert len(records) == 50 - info["log_start_offset"]
        assert info["high_watermark"] == 50


def test_deleted_space_goes_back_to_the_filesystem(
    client: httpx.Client, rserver: RunningServer
) -> None:
    create(client, "big", **{"retention.ms": -1})
    for _ in range(10):
        produce(client, "big", [{"value": "y" * 5000} for _ in range(100)])
    topic_dir = rserver.data_dir / "topics" / "big"

    def disk() -> int:
        return sum(f.stat().st_size for f in topic_dir.iterdir())

    full = disk()
    assert full > 5_000_000
    patched = client.patch("/v1/topics/big", json={"config": {"retention.ms": 0}})
    assert patched.status_code == 200
    assert patched.json()["config_sources"]["retention.ms"] == "topic"
    wait_until(lambda: partition(client, "big")["log_start_offset"] == 1000)
    assert partition(client, "big")["size_bytes"] == 0
    wait_until(lambda: disk() < full / 10, timeout=20)
    # offsets are not reused once everything is gone
    assert produce(client, "big", [{"value": "after"}])[0]["offset"] == 1000


def test_compaction_keeps_the_newest_record_per_key(
    client: httpx.Client, rserver: RunningServer
) -> None:
    create(client, "quotes", **{"cleanup.policy": "compact", "delete.retention.ms": DAY_MS})
    updates = [("AAPL", 1), ("MSFT", 2), ("AAPL", 3), ("GOOG", 4), ("MSFT", 5), ("AAPL", 6)]
    produce(client, "quotes", [{"key": k, "value": v} for k, v in updates])
    wait_until(lambda: len(fetch_all(client, "quotes")) == 3)
    survivors = fetch_all(client, "quotes")
    assert [(r["offset"], r["key"], r["value"]) for r in survivors] == [
        (3, "GOOG", 4),
        (4, "MSFT", 5),
        (5, "AAPL", 6),
    ]
    info = partition(client, "quotes")
    assert info["log_start_offset"] == 0 and info["high_watermark"] == 6
    # a fetch inside a gap returns the next survivor; a fetch past the end steps to the end
    body = client.get("/v1/topics/quotes/partitions/0/records?offset=1").json()
    assert body["records"][0]["offset"] == 3
    # a subscriber from earliest gets the current state, then live updates
    with connect(f"{rserver.ws_url}/v1/topics/quotes/ws?from=earliest") as ws:
        json.loads(ws.recv(timeout=10))
        snapshot = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
        assert {r["key"]: r["value"] for r in snapshot} == {"GOOG": 4, "MSFT": 5, "AAPL": 6}
        produce(client, "quotes", [{"key": "GOOG", "value": 7}])
        assert json.loads(ws.recv(timeout=10))["offset"] == 6
    # resuming by offset across a gap works
    with connect(f"{rserver.ws_url}/v1/topics/quotes/ws?offsets=0:1") as ws:
        assert json.loads(ws.recv(timeout=10))["partitions"] == {"0": {"offset": 1}}
        assert json.loads(ws.recv(timeout=10))["offset"] >= 3


def test_long_poll_in_a_compacted_gap_at_the_end(client: httpx.Client) -> None:
    create(client, "gap", **{"cleanup.policy": "compact", "delete.retention.ms": 0})
    produce(client, "gap", [{"key": "a", "value": 1}, {"key": "a", "value": None}])
    wait_until(lambda: partition(client, "gap")["size_bytes"] == 0)
    started = time.monotonic()
    body = client.get(
        "/v1/topics/gap/partitions/0/records", params={"offset": 0, "timeout_ms": 300}
    ).json()
    assert body["records"] == [] and body["next_offset"] == 2  # steps over the gap
    assert time.monotonic() - started < 5


def test_tombstones_remove_a_key_after_delete_retention(client: httpx.Client) -> None:
    create(client, "users", **{"cleanup.policy": "compact", "delete.retention.ms": 0})
    produce(
        client,
        "users",
        [
            {"key": "u1", "value": {"name": "Ann"}},
            {"key": "u2", "value": {"name": "Bob"}},
            {"key": "u1", "value": None},
        ],
    )
    wait_until(lambda: [r["key"] for r in fetch_all(client, "users")] == ["u2"])


def test_tombstones_stay_until_delete_retention_passes(client: httpx.Client) -> None:
    create(client, "keep", **{"cleanup.policy": "compact", "delete.retention.ms": DAY_MS})
    produce(client, "keep", [{"key": "u1", "value": 1}, {"key": "u1", "value": None}])
    wait_until(lambda: len(fetch_all(client, "keep")) == 1)
    [tombstone] = fetch_all(client, "keep")
    assert tombstone["value"] is None and tombstone["offset"] == 1


def test_compacted_topics_refuse_keyless_records(client: httpx.Client) -> None:
    create(client, "needs-keys", **{"cleanup.policy": "compact"})
    response = client.post(
        "/v1/topics/needs-keys/records", json={"records": [{"key": "a", "value": 1}, {"value": 2}]}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"]["index"] == 1
    assert partition(client, "needs-keys")["high_watermark"] == 0


def from_start(client: httpx.Client, topic: str) -> list[dict[str, Any]]:
    """Partition 0's records from its log start, while the cleaner may be moving that start:
    a read that a pass overtook (416: the start moved past it) is read again from the new one."""
    records: list[dict[str, Any]] = []
    offset = partition(client, topic)["log_start_offset"]
    while True:
        response = client.get(
            f"/v1/topics/{topic}/partitions/0/records", params={"offset": offset, "limit": 1000}
        )
        if response.status_code == 416:
            records, offset = [], response.json()["error"]["details"]["log_start_offset"]
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        records += body["records"]
        if body["next_offset"] >= body["high_watermark"]:
            return records
        offset = body["next_offset"]


def test_compact_and_delete_together(client: httpx.Client) -> None:
    create(
        client,
        "both",
        **{
            "cleanup.policy": "compact,delete",
            "retention.ms": DAY_MS,
            "delete.retention.ms": DAY_MS,
        },
    )
    old = now_ms() - 2 * DAY_MS
    produce(
        client,
        "both",
        [
            {"key": "a", "value": 1, "timestamp": old},
            {"key": "b", "value": 2},
            {"key": "b", "value": 3},
        ],
    )
    wait_until(lambda: [(r["offset"], r["value"]) for r in from_start(client, "both")] == [(2, 3)])
    # the first record still stored (a later pass moves the start over the compacted gap)
    wait_until(lambda: partition(client, "both")["log_start_offset"] == 2)


def test_max_message_bytes_changes_live(client: httpx.Client) -> None:
    create(client, "sized")
    assert client.post("/v1/topics/sized/records", json={"value": "z" * 2000}).status_code == 200
    client.patch("/v1/topics/sized", json={"config": {"max.message.bytes": 1000}})
    too_big = client.post("/v1/topics/sized/records", json={"value": "z" * 2000})
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "record_too_large"


def test_config_shows_effective_values_and_sources(tmp_path: Path) -> None:
    with (
        serve_in_thread(
            tmp_path / "d", default_retention_ms=3_600_000, default_max_message_bytes=5000
        ) as server,
        server.client() as c,
    ):
        c.post("/v1/topics", json={"name": "t", "config": {"retention.bytes": 1_000_000}})
        body = c.get("/v1/topics/t").json()
        assert body["config"]["retention.ms"] == 3_600_000
        assert body["config"]["max.message.bytes"] == 5000
        assert body["config"]["retention.bytes"] == 1_000_000
        assert body["config_sources"] == {
            "retention.ms": "default",
            "retention.bytes": "topic",
            "cleanup.policy": "default",
            "max.message.bytes": "default",
            "delete.retention.ms": "default",
        }
        assert c.post("/v1/topics/t/records", json={"value": "z" * 6000}).status_code == 413


def test_partition_increase_reaches_live_subscribers_and_groups(
    client: httpx.Client, rserver: RunningServer
) -> None:
    create(client, "growing", 2)
    with (
        connect(f"{rserver.ws_url}/v1/topics/growing/ws") as plain,
        connect(f"{rserver.ws_url}/v1/topics/growing/ws?group=g") as member,
        connect(f"{rserver.ws_url}/v1/topics/growing/ws?partitions=0") as filtered,
    ):
        json.loads(plain.recv(timeout=10))
        first = json.loads(member.recv(timeout=10))
        assert sorted(first["partitions"]) == ["0", "1"]
        json.loads(filtered.recv(timeout=10))
        assert client.patch("/v1/topics/growing", json={"partitions": 3}).status_code == 200
        second = json.loads(member.recv(timeout=10))
        assert second["type"] == "assignment"
        assert second["partitions"]["2"] == {"offset": 0}
        produce(
            client, "growing", [{"value": "new", "partition": 2}, {"value": "old", "partition": 0}]
        )
        got = [json.loads(plain.recv(timeout=10)) for _ in range(2)]
        assert {(r["partition"], r["value"]) for r in got} == {(2, "new"), (0, "old")}
        got = [json.loads(member.recv(timeout=10)) for _ in range(2)]
        assert {(r["partition"], r["value"]) for r in got} == {(2, "new"), (0, "old")}
        only = json.loads(filtered.recv(timeout=10))
        assert (only["partition"], only["value"]) == (0, "old")

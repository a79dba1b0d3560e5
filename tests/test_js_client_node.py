"""The JavaScript client (static/eddy.js) in Node 20 with the ws package, against real servers:
scripts under tests/js/ print what the client delivered, and these tests assert on it."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eddy.models.errors import InvalidRequest
from eddy.routers.ws.params import parse_subscribe_params
from tests.conftest import (
    ServerProcess,
    fetch_all,
    free_port,
    serve_in_thread,
    start_server_process,
    wait_until,
)
from tests.jsrun import NodeScript
from tests.relay import relay_to


def _server_knows(query: dict[str, str]) -> bool:
    try:
        parse_subscribe_params(query)
    except InvalidRequest:
        return False
    return True


needs_delivery = pytest.mark.skipif(
    not _server_knows({"since": "0", "on_slow": "conflate", "max_rate": "5"}),
    reason="needs since=, on_slow= and max_rate= on the server (delivery branch)",
)


@pytest.fixture
def same_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Every server of the test listens on one port, so that a restart is one to the client."""
    port = free_port()
    monkeypatch.setattr("tests.conftest.free_port", lambda: port)
    yield port


def produce(base_url: str, topic: str, values: range, partitions: int = 3) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as rest:
        records = [{"value": v, "partition": v % partitions, "key": f"k{v}"} for v in values]
        response = rest.post(f"/v1/topics/{topic}/records", json={"records": records})
        assert response.status_code == 200, response.text


def create(base_url: str, topic: str, partitions: int = 3) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as rest:
        response = rest.post("/v1/topics", json={"name": topic, "partitions": partitions})
        assert response.status_code == 201, response.text


def test_subscriber_resumes_across_server_restart_nothing_lost_or_repeated(
    tmp_path: Path, same_port: int
) -> None:
    data = tmp_path / "data"
    server: ServerProcess = start_server_process(data)
    script: NodeScript | None = None
    try:
        create(server.base_url, "ticks")
        produce(server.base_url, "ticks", range(0, 60))
        script = NodeScript(
            "subscribe", url=server.base_url, topic="ticks", count=150, options={"from": "earliest"}
        )
        script.wait_for("record", 60)
        produce(server.base_url, "ticks", range(60, 90))  # live, while it streams
        script.wait_for("record", 90)
        server.stop(signal.SIGTERM)  # a restart: close 1001/1012 to the client
        script.wait_for("disconnect")
        server = start_server_process(data)
        produce(server.base_url, "ticks", range(90, 150))
        assert script.finish() == 0, script.stderr
    finally:
        if script is not None:
            script.kill()
        server.stop()
    records = script.of("record")
    assert Counter((r["partition"], r["offset"]) for r in records).most_common(1)[0][1] == 1
    assert sorted(r["value"] for r in records) == list(range(150))
    for partition in range(3):  # in offset order per partition, no gaps
        offsets = [r["offset"] for r in records if r["partition"] == partition]
        assert offsets == list(range(50))
    assert {d["code"] for d in script.of("disconnect")} <= {1001, 1006, 1012}
    assert script.of("done")[0]["positions"] == {"0": 50, "1": 50, "2": 50}
    assert len(script.of("subscribed")) >= 2  # it did reconnect


def test_permanent_error_stops_with_the_servers_message(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data", auto_create_topics=False) as server:
        bad = NodeScript("subscribe", url=server.base_url, topic="bad name", count=1, options={})
        missing = NodeScript("subscribe", url=server.base_url, topic="missing", count=1, options={})
        unknown_from = NodeScript(
            "subscribe", url=server.base_url, topic="x", count=1, options={"from": "middle"}
        )
        codes = [script.finish() for script in (bad, missing, unknown_from)]
    assert codes == [1, 1, 1]
    (bad_error,) = bad.of("error")
    assert bad_error["closeCode"] == 4400
    assert bad_error["code"] == "invalid_request"
    assert "topic name" in bad_error["message"]
    (missing_error,) = missing.of("error")
    assert missing_error["closeCode"] == 4404
    assert missing_error["code"] == "topic_not_found"
    assert "missing" in missing_error["message"]
    assert unknown_from.of("error")[0]["closeCode"] == 4400
    for script in (bad, missing, unknown_from):  # it stopped: no reconnect attempt
        assert script.of("disconnect") == []
        assert script.of("state")[-1]["state"] == "failed"


def test_deleted_topic_stops_the_subscriber_and_is_not_recreated(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data") as server, server.client() as rest:
        create(server.base_url, "doomed", partitions=1)
        produce(server.base_url, "doomed", range(3), partitions=1)
        script = NodeScript(
            "subscribe",
            url=server.base_url,
            topic="doomed",
            count=100,
            options={"from": "earliest"},
        )
        script.wait_for("record", 3)
        assert rest.delete("/v1/topics/doomed").status_code == 204
        assert script.finish() == 1
        (error,) = script.of("error")
        assert (error["closeCode"], error["code"]) == (4404, "topic_not_found")
        assert rest.get("/v1/topics/doomed").status_code == 404


def test_group_member_commits_what_it_processed_and_the_next_run_resumes_there(
    tmp_path: Path,
) -> None:
    with serve_in_thread(tmp_path / "data") as server, server.client() as rest:
        create(server.base_url, "orders", partitions=2)
        produce(server.base_url, "orders", range(40), partitions=2)
        first = NodeScript(
            "group", url=server.base_url, topic="orders", group="mailer", count=40, commitEvery=7
        )
        assert first.finish() == 0, first.stderr
        assert first.of("commit_failed") == []
        assert _committed(rest) == {0: 20, 1: 20}

        produce(server.base_url, "orders", range(40, 50), partitions=2)
        second = NodeScript(
            "group", url=server.base_url, topic="orders", group="mailer", count=10, commitEvery=3
        )
        assert second.finish() == 0, second.stderr
        assert _committed(rest) == {0: 25, 1: 25}
    assert sorted(r["value"] for r in first.of("record")) == list(range(40))
    assert sorted(r["value"] for r in second.of("record")) == list(range(40, 50))  # no repeats


def _committed(rest: httpx.Client) -> dict[int, int]:
    offsets = rest.get("/v1/groups/mailer").json()["offsets"]
    return {o["partition"]: o["committed_offset"] for o in offsets}


def test_idempotent_publish_across_a_server_kill_stores_each_record_once(
    tmp_path: Path, same_port: int
) -> None:
    data = tmp_path / "data"
    server = start_server_process(data)
    script: NodeScript | None = None
    total = 400
    try:
        create(server.base_url, "feed", partitions=2)
        script = NodeScript(
            "publish", url=server.base_url, topic="feed", count=total, wave=25, idempotent=True
        )
        script.wait_for("ack", 100)
        # SIGKILL: records of the wave in flight may be committed with their acks never sent.
        server.stop(signal.SIGKILL)
        script.wait_for("disconnect")
        server = start_server_process(data)
        assert script.finish(timeout=60) == 0, script.stderr
        with httpx.Client(base_url=server.base_url) as rest:
            stored = [
                r["value"]
                for p in (0, 1)
                for r in rest.get(
                    f"/v1/topics/feed/partitions/{p}/records", params={"offset": 0, "limit": 1000}
                ).json()["records"]
            ]
    finally:
        if script is not None:
            script.kill()
        server.stop()
    assert sorted(stored) == list(range(total))  # each once: the resends were deduplicated
    acks = script.of("ack")
    assert sorted(a["value"] for a in acks) == list(range(total))  # each promise settled once
    assert len({(a["partition"], a["offset"]) for a in acks}) == total
    assert script.of("done")[0]["nextSequence"] == total


def test_idempotent_publish_acks_lost_then_connection_cut_no_duplicates(tmp_path: Path) -> None:
    """Deterministic version of the above: the server commits records whose acks never reach
    the client (a relay drops them), then the connection breaks. The client resends what is
    unacknowledged; the server recognises the sequences: each record is stored once and each
    promise gets the original ack."""
    total = 300
    with (
        serve_in_thread(tmp_path / "data") as server,
        server.client() as rest,
        relay_to(int(server.base_url.rsplit(":", 1)[1])) as relay,
    ):
        create(server.base_url, "feed", partitions=1)
        script = NodeScript(
            "publish", url=relay.url, topic="feed", count=total, wave=20, idempotent=True
        )
        script.wait_for("ack", 60)
        relay.hold_replies()

        def stored() -> int:
            hwm: int = rest.get("/v1/topics/feed").json()["partitions"][0]["high_watermark"]
            return hwm

        # Committed on the server, unknown to the client: the acks were lost. The server sends
        # an ack only after the commit, so once reply bytes were dropped, at least one stored
        # record has no ack at the client (counting the acks the client printed instead would
        # race with those still on their way through the relay).
        wait_until(lambda: relay.dropped_bytes > 0)
        stored_at_cut = stored()
        relay.cut()
        assert script.finish(timeout=60) == 0, script.stderr
        records = fetch_all(rest, "feed")
    before_cut = script.events[: script.events.index(script.of("disconnect")[0])]
    acked_before_cut = [e for e in before_cut if e["event"] == "ack"]
    assert len(acked_before_cut) < stored_at_cut  # some stored records were resent
    assert [r["value"] for r in records] == list(range(total))  # once each, in order
    acks = script.of("ack")
    assert sorted(a["offset"] for a in acks) == list(range(total))
    assert {a["value"]: a["offset"] for a in acks} == {n: n for n in range(total)}


@pytest.mark.parametrize("idempotent", [True, False])
def test_refused_record_rejects_only_its_promise(tmp_path: Path, idempotent: bool) -> None:
    """The server refuses record 13 (a header that is not a string): its promise rejects with
    the server's error and every other record is stored once, in order. With an idempotent
    producer the refused record does not use up its sequence, so the records sent after it are
    renumbered and sent again."""
    with serve_in_thread(tmp_path / "data") as server, server.client() as rest:
        create(server.base_url, "plain", partitions=1)
        script = NodeScript(
            "publish",
            url=server.base_url,
            topic="plain",
            count=40,
            wave=20,
            badAt=13,
            idempotent=idempotent,
        )
        assert script.finish() == 0, script.stderr
        stored = rest.get("/v1/topics/plain/partitions/0/records", params={"offset": 0}).json()
    (refused,) = script.of("refused")
    assert (refused["value"], refused["code"]) == (13, "invalid_request")
    assert [r["value"] for r in stored["records"]] == [n for n in range(40) if n != 13]
    acks = sorted(script.of("ack"), key=lambda a: a["value"])
    assert [a["offset"] for a in acks] == list(range(39))
    if idempotent:
        assert script.of("done")[0]["nextSequence"] == 39


def test_idempotent_publisher_against_a_model_of_the_sequence_rule() -> None:
    """The publisher's resend and renumbering bookkeeping over 300 seeded random schedules of
    dropped connections (frames or acks lost) and refused records, against a model of the
    server's sequence rule (tests/js/publisher_model.mjs checks the invariants: every accepted
    record stored once, in order; every promise settled with its offset or its refusal)."""
    script = NodeScript("publisher_model")
    assert script.finish(timeout=120) == 0, (script.events, script.stderr)
    (done,) = script.of("done")
    assert done["records"] > 1000 and done["refused"] > 100
    assert done["connections"] > done["trials"]  # connections did drop
    assert done["outOfOrder"] > 100  # refusals did make the client renumber


def test_pure_parts_backoff_urls_positions() -> None:
    """Without a server: the backoff's bounds, every subscribe parameter in the URL, the resume
    point after records and a transient close, a permanent close's error (tests/js/units.mjs)."""
    script = NodeScript("units")
    assert script.finish() == 0, script.stderr
    checks = script.of("check")
    assert len(checks) == 12
    assert [c for c in checks if not c["ok"]] == []


@needs_delivery
def test_since_on_slow_and_max_rate_reach_the_server(tmp_path: Path) -> None:
    """since= starts at the first record at or after that time; on_slow and max_rate are
    accepted as given (the server's delivery tests cover what they do)."""
    with serve_in_thread(tmp_path / "data") as server, server.client() as rest:
        create(server.base_url, "ticks", partitions=1)
        records = [{"value": n, "timestamp": 1_764_000_000_000 + n} for n in range(10)]
        response = rest.post("/v1/topics/ticks/records", json={"records": records})
        assert response.status_code == 200
        options = {"since": 1_764_000_000_005, "on_slow": "conflate", "max_rate": 1000}
        script = NodeScript(
            "subscribe", url=server.base_url, topic="ticks", count=5, options=options
        )
        assert script.finish() == 0, script.stderr
    assert [r["value"] for r in script.of("record")] == [5, 6, 7, 8, 9]
    assert script.of("subscribed")[0]["partitions"] == {"0": {"offset": 5}}

"""What only the Kafka engine has: several Eddy servers on one cluster, records and offsets shared
with plain Kafka clients, its refusals, and checks on librdkafka's mock cluster of what Tansu gets
wrong (the contract tests over Tansu: test_kafka_contract.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from websockets.sync.client import connect

from tests.conftest import RunningServer, serve_in_thread, start_server_process, wait_until
from tests.test_groups import Member, produce_spread
from tests.test_kafka_contract import kafka_settings
from tests.test_rest import assert_error, create, produce
from tests.test_websocket import records, recv, subscribe


def kafka_produce(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    partition: int = 0,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> None:
    """Records from a plain Kafka producer (not Eddy), as one record batch."""

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            batch = producer.create_batch()
            for value in values:
                batch.append(timestamp=None, key=None, value=value, headers=headers or [])
            await (await producer.send_batch(batch, topic, partition=partition))
        finally:
            await producer.stop()

    asyncio.run(run())


def kafka_committed(bootstrap: str, group: str, topic: str, partition: int) -> int | None:
    """The group's committed offset as a Kafka consumer of the group reads it."""

    async def run() -> int | None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            committed: int | None = await consumer.committed(TopicPartition(topic, partition))
            return committed
        finally:
            await consumer.stop()

    return asyncio.run(run())


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def two_servers(
    tmp_path: Path, tansu_bootstrap: str, namespace: str
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two Eddy servers over the same Tansu cluster and namespace."""
    settings = {**kafka_settings(tansu_bootstrap), "kafka_namespace": namespace}
    with ExitStack() as stack:
        first = stack.enter_context(serve_in_thread(tmp_path / "a", **settings))
        second = stack.enter_context(serve_in_thread(tmp_path / "b", **settings))
        yield first, second


def listed(server: RunningServer, topic: str) -> bool:
    with server.client() as c:
        return topic in [t["name"] for t in c.get("/v1/topics").json()["topics"]]


def test_a_record_produced_anywhere_reaches_subscribers_of_every_server(
    two_servers: tuple[RunningServer, RunningServer], tansu_bootstrap: str, namespace: str
) -> None:
    first, second = two_servers
    with first.client() as a, second.client() as b:
        create(a, "shared", 2)
        wait_until(lambda: listed(second, "shared"))
        with subscribe(first, "shared") as ws_a, subscribe(second, "shared") as ws_b:
            assert recv(ws_a)["type"] == "subscribed" and recv(ws_b)["type"] == "subscribed"
            produce(a, "shared", {"key": "k", "value": "from a"})
            produce(b, "shared", {"key": "k", "value": "from b"})
            # and from a Kafka producer that knows nothing of Eddy (value: UTF-8 JSON bytes)
            partition = produce(a, "shared", {"key": "k", "value": "probe"})[0]["partition"]
            kafka_produce(tansu_bootstrap, f"{namespace}shared", [b'"from kafka"'], partition)
            for ws in (ws_a, ws_b):
                got = records(ws, 4)
                assert [r["value"] for r in got] == ["from a", "from b", "probe", "from kafka"]
                assert [r["offset"] for r in got] == [0, 1, 2, 3]
        # the second server reads what the first produced, by offset, over REST
        body = b.get(f"/v1/topics/shared/partitions/{partition}/records?offset=0").json()
        assert [r["value"] for r in body["records"]] == ["from a", "from b", "probe", "from kafka"]


def test_a_long_poll_on_one_server_wakes_for_a_produce_on_the_other(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, second = two_servers
    with first.client() as a:
        create(a, "lp", 1)
        wait_until(lambda: listed(second, "lp"))
        result: dict[str, Any] = {}

        def poll() -> None:
            with second.client() as c:
                result["body"] = c.get(
                    "/v1/topics/lp/partitions/0/records", params={"offset": 0, "timeout_ms": 8000}
                ).json()

        thread = threading.Thread(target=poll)
        thread.start()
        # (either order works: a poll that comes late finds the record; one that waits is
        # woken by its server's follower, which reads what the other server produced)
        produce(a, "lp", {"value": 1})
        thread.join(timeout=15)
        assert [r["value"] for r in result["body"]["records"]] == [1]


def test_topics_created_on_one_server_appear_on_the_other_and_auto_create_races_are_fine(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, second = two_servers
    with first.client() as a, second.client() as b:
        produce(a, "auto", {"value": 1})  # auto-created by the first server
        # the second server auto-creates too, before or after its refresh: either way it ends
        # up producing to the one Kafka topic
        produce(b, "auto", {"value": 2})
        wait_until(lambda: b.get("/v1/topics/auto").status_code == 200)
        assert_error(b.post("/v1/topics", json={"name": "auto"}), 409, "topic_exists")
        wait_until(lambda: a.get("/v1/topics/auto").json()["partitions"][0]["high_watermark"] == 2)
        assert b.delete("/v1/topics/auto").status_code == 204
        wait_until(lambda: a.get("/v1/topics/auto").status_code == 404)


def test_group_offsets_live_in_kafka(
    two_servers: tuple[RunningServer, RunningServer], tansu_bootstrap: str, namespace: str
) -> None:
    first, second = two_servers
    with first.client() as a, second.client() as b:
        create(a, "orders", 1)
        for i in range(5):
            produce(a, "orders", {"value": i})
        committed = a.post(
            "/v1/groups/billing/offsets", json={"topic": "orders", "offsets": {"0": 3}}
        )
        assert committed.status_code == 200, committed.text
        # a Kafka consumer of the group reads Eddy's commit...
        assert kafka_committed(tansu_bootstrap, f"{namespace}billing", f"{namespace}orders", 0) == 3

        # ...and the other Eddy server describes it, with the lag from Kafka
        def offsets() -> list[dict[str, Any]]:
            response = b.get("/v1/groups/billing")
            return response.json()["offsets"] if response.status_code == 200 else []

        wait_until(lambda: [o["committed_offset"] for o in offsets()] == [3])
        assert offsets()[0]["lag"] == 2
        reset = b.post("/v1/groups/billing/reset", json={"topic": "orders", "to": "earliest"})
        assert reset.status_code == 200, reset.text
        assert kafka_committed(tansu_bootstrap, f"{namespace}billing", f"{namespace}orders", 0) == 0
        assert b.delete("/v1/groups/billing").status_code == 204
        wait_until(lambda: a.get("/v1/groups/billing").status_code == 404)


def test_group_admin_on_one_server_while_members_are_on_another_is_group_active(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, second = two_servers
    with first.client() as a, second.client() as b:
        create(a, "orders", 1)
        produce(a, "orders", {"value": 1})
        member = Member(first, "orders", "billing")
        try:
            member.until("assignment", timeout=30)  # a member of the Kafka group, on server A
            assert_error(b.delete("/v1/groups/billing"), 409, "group_active")
            reset = b.post("/v1/groups/billing/reset", json={"topic": "orders", "to": "earliest"})
            assert_error(reset, 409, "group_active")
        finally:
            member.ws.close()


def test_the_rest_idempotent_producer_is_refused_clearly(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, _ = two_servers
    with first.client() as a:
        create(a, "idem", 1)
        response = a.post(
            "/v1/topics/idem/records",
            json={"records": [{"value": 1}], "producer": {"id": "phone-1", "sequence": 0}},
        )
        details = assert_error(response, 422, "invalid_request")
        assert details == {"reason": "idempotent_producer_unsupported", "engine": "kafka"}
        assert a.get("/v1/topics/idem").json()["partitions"][0]["high_watermark"] == 0


def test_the_websocket_idempotent_publisher_is_refused_clearly(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, _ = two_servers
    with first.client() as a:
        create(a, "idem-ws", 1)
    url = f"{first.ws_url}/v1/topics/idem-ws/publish?producer_id=phone-1"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"id": "r1", "value": 1, "sequence": 0}))
        answer = recv(ws)
    assert answer["type"] == "error" and answer["code"] == "invalid_request", answer
    assert answer["details"]["reason"] == "idempotent_producer_unsupported"


def batch_high_watermark(bootstrap: str, tmp_path: Path, idempotence: bool) -> tuple[int, int]:
    """A 5-record batch through one Eddy server; the high watermark as that server and as a
    fresh one (which knows only what the cluster's ListOffsets says) report it."""
    settings = {
        **kafka_settings(bootstrap),
        "kafka_idempotence": idempotence,
        "kafka_namespace": f"m{uuid.uuid4().hex[:10]}.",
    }
    topic = "batch"
    with serve_in_thread(tmp_path / "a", **settings) as first:
        with first.client() as a:
            if not listed(first, topic):
                response = a.post("/v1/topics", json={"name": topic, "partitions": 1})
                if response.status_code != 201:  # the mock cluster: made by its first produce
                    kafka_produce(bootstrap, f"{settings['kafka_namespace']}{topic}", [b"0"])
                    wait_until(lambda: listed(first, topic))
                    wait_until(
                        lambda: (
                            a.get(f"/v1/topics/{topic}").json()["partitions"][0]["high_watermark"]
                            == 1
                        )
                    )
            before = a.get(f"/v1/topics/{topic}").json()["partitions"][0]["high_watermark"]
            produce(a, topic, {"records": [{"value": i, "partition": 0} for i in range(5)]})
            own = a.get(f"/v1/topics/{topic}").json()["partitions"][0]["high_watermark"] - before
        with serve_in_thread(tmp_path / "b", **settings) as fresh, fresh.client() as b:
            seen = b.get(f"/v1/topics/{topic}").json()["partitions"][0]["high_watermark"] - before
    return own, seen


def test_high_watermark_after_a_multi_record_batch_on_the_mock_cluster(
    mock_kafka_bootstrap: str, tmp_path: Path
) -> None:
    """librdkafka's mock cluster reports high watermarks right (and has InitProducerId, so
    Kafka's idempotent producer is on here)."""
    assert batch_high_watermark(mock_kafka_bootstrap, tmp_path, idempotence=True) == (5, 5)


def test_high_watermark_after_a_multi_record_batch_on_tansu(
    tansu_bootstrap: str, tmp_path: Path
) -> None:
    """Tansu 0.6 reports the first offset of the last batch plus one: a server that produced
    the batch knows better (it only moves high watermarks forward), a fresh one cannot."""
    own, seen = batch_high_watermark(tansu_bootstrap, tmp_path, idempotence=False)
    assert own == 5
    assert seen == 1  # Tansu's answer; the mock cluster test above checks the right one


def test_the_kafka_engine_needs_bootstrap_servers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from eddy.app.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--engine", "kafka", "--port", "0"])
    assert result.exit_code == 2
    assert "--kafka-bootstrap-servers" in result.output
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            "--engine",
            "kafka",
            "--kafka-bootstrap-servers",
            "127.0.0.1:1",
            "--kafka-config",
            "no-equals-sign",
        ],
    )
    assert result.exit_code == 2
    assert "name=value" in result.output


def test_client_config_pairs_are_typed() -> None:
    from eddy.storage.kafka_client import parse_client_config

    assert parse_client_config(["request_timeout_ms=30000", "check_crcs=false", "x=a=b"]) == {
        "request_timeout_ms": 30000,
        "check_crcs": False,
        "x": "a=b",
    }
    with pytest.raises(ValueError):
        parse_client_config(["=1"])


def test_an_unreachable_cluster_fails_start_up_clearly(tmp_path: Path) -> None:
    from tests.conftest import start_server_process
    from tests.kafka_brokers import free_port

    with pytest.raises(RuntimeError, match="cannot use the Kafka cluster"):
        start_server_process(
            tmp_path,
            "--engine",
            "kafka",
            "--kafka-bootstrap-servers",
            f"127.0.0.1:{free_port()}",
            "--kafka-config",
            "request_timeout_ms=2000",
        )


def kafka_args(bootstrap: str, namespace: str) -> list[str]:
    return [
        "--engine",
        "kafka",
        "--kafka-bootstrap-servers",
        bootstrap,
        "--no-kafka-idempotence",
        "--kafka-fetch-max-wait-ms",
        "5",
        "--kafka-group-session-timeout-ms",
        "1000",
        "--kafka-namespace",
        namespace,
        "--kafka-refresh-interval",
        "0.5",
        "--ws-ping-interval",
        "0.5",
        "--ws-ping-timeout",
        "1",
    ]


def read_until(member: Member, done: Any, timeout: float = 30) -> None:
    """Read a member's frames until `done()` holds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, (member.assignment, len(member.records))
        with contextlib.suppress(TimeoutError):
            member.next_frame(0.2)


def test_a_group_with_members_on_two_servers_is_balanced_and_at_least_once_when_one_dies(
    tmp_path: Path, tansu_bootstrap: str, namespace: str
) -> None:
    args = kafka_args(tansu_bootstrap, namespace)
    first = start_server_process(tmp_path / "a", *args)
    try:
        with (
            serve_in_thread(
                tmp_path / "b",
                **{
                    **kafka_settings(tansu_bootstrap),
                    "kafka_namespace": namespace,
                    "ws_ping_interval": 0.5,
                    "ws_ping_timeout": 1,
                },
            ) as second,
            httpx.Client(base_url=first.base_url, timeout=10) as a,
        ):
            create(a, "jobs", 4)
            wait_until(lambda: listed(second, "jobs"))
            produce_spread(a, "jobs", 10)  # offsets 0-9 on each of 4 partitions
            on_a = Member(first, "jobs", "workers", "&from=earliest")  # type: ignore[arg-type]
            on_a.until("assignment", timeout=20)
            on_b = Member(second, "jobs", "workers", "&from=earliest")
            # Kafka splits the partitions between the two servers' group consumers
            read_until(on_a, lambda: len(on_a.assignment) == 2)
            read_until(on_b, lambda: len(on_b.assignment) == 2)
            assert sorted([*on_a.assignment, *on_b.assignment]) == [0, 1, 2, 3]
            taken_by_a = set(on_a.assignment)
            # the first server's member processes some records of its partitions and commits
            read_until(
                on_a,
                lambda: all(
                    sum(1 for r in on_a.records if r["partition"] == p) >= 4 for p in taken_by_a
                ),
            )
            assert on_a.commit({p: 4 for p in taken_by_a})["type"] == "committed"
            # the first server dies without a word: its group consumer stops heartbeating
            first.stop(signal.SIGKILL)
            read_until(on_b, lambda: len(on_b.assignment) == 4)
            for p in taken_by_a:
                assert on_b.assignment[p] == 4  # from the group's offset in Kafka
            read_until(
                on_b,
                lambda: all(
                    {r["offset"] for r in on_b.records if r["partition"] == p} >= set(range(4, 10))
                    for p in taken_by_a
                ),
            )
            # at least once: every record went to a member; the second server's own
            # partitions it delivered from the start
            delivered = {(r["partition"], r["offset"]) for r in on_a.records + on_b.records}
            assert delivered == {(p, o) for p in range(4) for o in range(10)}
            got_b = {(r["partition"], r["offset"]) for r in on_b.records}
            assert {(p, o) for p in range(4) if p not in taken_by_a for o in range(10)} <= got_b
            on_b.close()
            with contextlib.suppress(Exception):
                on_a.close()
    finally:
        first.stop(signal.SIGKILL)


def test_kafka_consumers_share_a_group_with_eddy_members(
    two_servers: tuple[RunningServer, RunningServer], tansu_bootstrap: str, namespace: str
) -> None:
    """A plain Kafka consumer joining the group takes its share from the Eddy server."""
    first, _ = two_servers
    with first.client() as a:
        create(a, "mixed", 4)
    member = Member(first, "mixed", "crew")
    read_until(member, lambda: len(member.assignment) == 4)
    joined = threading.Event()
    leave = threading.Event()
    kafka_share: set[int] = set()

    async def kafka_member() -> None:
        consumer = AIOKafkaConsumer(
            f"{namespace}mixed",
            bootstrap_servers=tansu_bootstrap,
            group_id=f"{namespace}crew",
            session_timeout_ms=1000,
            heartbeat_interval_ms=200,
            # Kafka needs one assignor in common (Eddy offers range and roundrobin); Tansu 0.6
            # refuses members whose lists differ (InconsistentGroupProtocol)
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
        )
        await consumer.start()
        try:
            while not leave.is_set():
                await consumer.getmany(timeout_ms=100)
                if consumer.assignment() and not joined.is_set():
                    kafka_share.update(tp.partition for tp in consumer.assignment())
                    joined.set()
        finally:
            await consumer.stop()

    thread = threading.Thread(target=lambda: asyncio.run(kafka_member()))
    thread.start()
    try:
        read_until(member, lambda: len(member.assignment) == 2)
        assert joined.wait(20)
        assert sorted([*member.assignment, *kafka_share]) == [0, 1, 2, 3]
    finally:
        leave.set()
        thread.join(timeout=20)
    read_until(member, lambda: len(member.assignment) == 4)  # it left: all back to Eddy
    member.close()


def kafka_headers_read(bootstrap: str, topic: str, count: int) -> list[list[Any]]:
    """The headers of the first `count` records of partition 0, as a plain Kafka consumer."""

    async def run() -> list[list[Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            got: list[list[Any]] = []
            while len(got) < count:
                batches = await consumer.getmany(partition, timeout_ms=30_000)
                assert batches, f"only {len(got)} of {count} records came"
                got.extend(list(m.headers) for m in batches[partition])
            return got
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_headers_are_kept_exactly_between_kafka_clients_and_eddy(
    two_servers: tuple[RunningServer, RunningServer], tansu_bootstrap: str, namespace: str
) -> None:
    """Repeated names, null values and bytes that are not UTF-8, from a plain Kafka producer,
    reach Eddy's JSON as `header_list`; a list produced over REST reaches Kafka consumers as
    written."""
    first, _ = two_servers
    written: list[tuple[str, bytes | None]] = [
        ("trace", b"a1"),
        ("retry", None),
        ("trace", b"b2"),
        ("bin", b"\xff\x00"),
    ]
    with first.client() as client:
        create(client, "hdr")
        kafka_produce(tansu_bootstrap, f"{namespace}hdr", [b"1"], headers=written)
        produce(
            client,
            "hdr",
            {"value": 2, "headers": [["trace", "c3"], ["retry", None], ["trace", "d4"]]},
        )
        wait_until(
            lambda: client.get("/v1/topics/hdr").json()["partitions"][0]["high_watermark"] == 2
        )
        got = client.get("/v1/topics/hdr/partitions/0/records?offset=earliest").json()["records"]
    assert [(r["headers"], r["header_list"]) for r in got] == [
        (
            {"trace": "b2", "bin": "\ufffd\x00"},
            [["trace", "a1"], ["retry", None], ["trace", "b2"], ["bin", "\ufffd\x00"]],
        ),
        ({"trace": "d4"}, [["trace", "c3"], ["retry", None], ["trace", "d4"]]),
    ]
    assert kafka_headers_read(tansu_bootstrap, f"{namespace}hdr", 2) == [
        written,
        [("trace", b"c3"), ("retry", None), ("trace", b"d4")],
    ]

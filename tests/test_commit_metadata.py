"""Commit metadata (the string a consumer stores beside each committed offset, Kafka's
OffsetCommit `committed_metadata`): kept in groups.db (migrated from the version without it),
returned by OffsetFetch to Kafka clients, taken by the REST commit and shown by the group's
describe. Real clients (kafka-python, confluent-kafka) on a real `eddy serve --kafka-listener`."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpPartition
from kafka.structs import OffsetAndMetadata

from tests.conftest import ServerProcess, free_port, start_server_process
from tests.test_storage import append, open_engine, rec


@pytest.fixture(scope="module")
def eddy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    server = start_server_process(
        tmp_path_factory.mktemp("metadata") / "data", "--kafka-listener", f"127.0.0.1:{port}"
    )
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop()
        print(server.output[-5000:])  # shown with a failure: what the server said


def new_topic(server: ServerProcess, partitions: int = 2, records: int = 5) -> str:
    name = f"m-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=server.base_url) as rest:
        assert rest.post("/v1/topics", json={"name": name, "partitions": partitions}).is_success
        for p in range(partitions):
            body = {"records": [{"partition": p, "value": i} for i in range(records)]}
            assert rest.post(f"/v1/topics/{name}/records", json=body).is_success
    return name


def described(server: ServerProcess, group: str) -> dict[tuple[str, int], tuple[int, str]]:
    with httpx.Client(base_url=server.base_url) as rest:
        detail = rest.get(f"/v1/groups/{group}")
    assert detail.status_code == 200, detail.text
    return {
        (o["topic"], o["partition"]): (o["committed_offset"], o["metadata"])
        for o in detail.json()["offsets"]
        if o["committed_offset"] is not None
    }


def confluent_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )


def test_kafka_python_commit_metadata_round_trip(eddy: tuple[ServerProcess, str]) -> None:
    server, bootstrap = eddy
    topic, group = new_topic(server), f"g-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [KpPartition(topic, 0), KpPartition(topic, 1)]
        consumer.assign(tps)
        consumer.commit(
            {
                tps[0]: OffsetAndMetadata(3, "kafka-python: ünïcode", -1),
                tps[1]: OffsetAndMetadata(5, "", -1),
            }
        )
        first = consumer.committed(tps[0], metadata=True)
        second = consumer.committed(tps[1], metadata=True)
        assert (first.offset, first.metadata) == (3, "kafka-python: ünïcode")
        assert (second.offset, second.metadata) == (5, "")
    finally:
        consumer.close()
    assert described(server, group) == {
        (topic, 0): (3, "kafka-python: ünïcode"),
        (topic, 1): (5, ""),
    }


def test_confluent_commit_metadata_and_the_size_limit(eddy: tuple[ServerProcess, str]) -> None:
    server, bootstrap = eddy
    topic, group = new_topic(server), f"g-{uuid.uuid4().hex[:8]}"
    consumer = confluent_consumer(bootstrap, group)
    try:
        consumer.commit(
            offsets=[KafkaPartition(topic, 0, 4, metadata="librdkafka was here")],
            asynchronous=False,
        )
        (got,) = consumer.committed([KafkaPartition(topic, 0)], timeout=20)
        assert (got.offset, got.metadata) == (4, "librdkafka was here")
        # longer than Kafka's offset.metadata.max.bytes: that partition is refused alone
        with pytest.raises(KafkaException) as refused:
            consumer.commit(
                offsets=[
                    KafkaPartition(topic, 0, 5, metadata="x" * 4097),
                    KafkaPartition(topic, 1, 2, metadata="fits"),
                ],
                asynchronous=False,
            )
        assert refused.value.args[0].code() == KafkaError.OFFSET_METADATA_TOO_LARGE
        committed = consumer.committed(
            [KafkaPartition(topic, 0), KafkaPartition(topic, 1)], timeout=20
        )
        assert [(tp.offset, tp.metadata) for tp in committed] == [
            (4, "librdkafka was here"),
            (2, "fits"),
        ]
    finally:
        consumer.close()


def test_rest_commit_metadata_reaches_kafka_clients(eddy: tuple[ServerProcess, str]) -> None:
    server, bootstrap = eddy
    topic, group = new_topic(server), f"g-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.base_url) as rest:
        answer = rest.post(
            f"/v1/groups/{group}/offsets",
            json={"topic": topic, "offsets": {"0": 2, "1": 1}, "metadata": "rest worker 7"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["metadata"] == "rest worker 7"
        # without a metadata string: ""
        plain = rest.post(f"/v1/groups/{group}/offsets", json={"topic": topic, "offsets": {"1": 3}})
        assert plain.status_code == 200 and plain.json()["metadata"] == ""
        too_long = rest.post(
            f"/v1/groups/{group}/offsets",
            json={"topic": topic, "offsets": {"0": 1}, "metadata": "y" * 4097},
        )
        assert too_long.status_code == 422, too_long.text
        assert too_long.json()["error"]["code"] == "invalid_request"
    assert described(server, group) == {(topic, 0): (2, "rest worker 7"), (topic, 1): (3, "")}
    consumer = confluent_consumer(bootstrap, group)
    try:
        committed = consumer.committed(
            [KafkaPartition(topic, 0), KafkaPartition(topic, 1)], timeout=20
        )
        # (confluent-kafka shows an empty string as None)
        assert [(tp.offset, tp.metadata) for tp in committed] == [(2, "rest worker 7"), (3, None)]
    finally:
        consumer.close()


async def test_metadata_survives_a_restart_and_old_groups_db_is_migrated(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 2, {})
    await append(engine, "t", [rec(0, b"1"), rec(1, b"2")])
    await engine.commit_offsets("g", "t", {0: 1, 1: 1}, {0: "kept"})
    await engine.close()
    engine = await open_engine(tmp_path)
    assert {(c.partition, c.offset, c.metadata) for c in engine.committed_offsets("g")} == {
        (0, 1, "kept"),
        (1, 1, ""),
    }
    await engine.close()
    # groups.db as Eddy left it before commit metadata: no column, user_version 0
    with sqlite3.connect(tmp_path / "groups.db") as conn:
        conn.execute("DROP TABLE group_offsets")
        conn.execute(
            "CREATE TABLE group_offsets (group_name TEXT NOT NULL, topic TEXT NOT NULL, "
            "partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, committed_at INTEGER "
            "NOT NULL, PRIMARY KEY (group_name, topic, partition))"
        )
        conn.execute("INSERT INTO group_offsets VALUES ('old', 't', 0, 1, 1000)")
        conn.execute("PRAGMA user_version=0")
    engine = await open_engine(tmp_path)
    assert [(c.group, c.offset, c.metadata) for c in engine.committed_offsets()] == [("old", 1, "")]
    await engine.commit_offsets("old", "t", {1: 1}, {1: "new"})
    await engine.close()
    with sqlite3.connect(tmp_path / "groups.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        rows = conn.execute(
            "SELECT partition, next_offset, metadata FROM group_offsets ORDER BY partition"
        ).fetchall()
    assert rows == [(0, 1, ""), (1, 1, "new")]

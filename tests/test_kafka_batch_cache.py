"""Kafka fetches answered with the batches producers sent (routers/kafka/batch_cache.py): what
a librdkafka consumer reads from them equals what it reads from batches built from storage,
and what REST reads; compacted topics and a topic deleted and created again are never answered
from kept batches."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import RunningServer, fetch_all, free_port, serve_in_thread

Record = tuple[Any, ...]  # offset, key, value, headers, timestamp


@pytest.fixture
def eddy(tmp_path: Path) -> Iterator[tuple[RunningServer, str]]:
    port = free_port()
    with serve_in_thread(tmp_path / "data", kafka_listener=f"127.0.0.1:{port}") as server:
        yield server, f"127.0.0.1:{port}"


def cache(server: RunningServer) -> Any:
    return server.app.state.kafka.batches


def produce(
    bootstrap: str,
    topic: str,
    count: int,
    dup: bool = False,
    keyed: bool = False,
    compression: str = "none",
) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": compression}
    )
    failures: list[Any] = []
    for i in range(count):
        value = b'{"n": %d}' % i if i % 3 else bytes([0xFF, i % 256])  # JSON and binary
        headers: list[tuple[str, str | bytes | None]] = [("h", b"%d" % i)]
        if dup:
            headers += [("dup", b"1"), ("dup", b"2")]
        producer.produce(
            topic,
            value,
            None if i % 5 == 0 and not keyed else b"key-%d" % (i % 7),
            partition=0,
            headers=headers,
            on_delivery=lambda err, _msg: failures.append(err) if err else None,
        )
    assert producer.flush(30) == 0
    assert failures == []


def consume(bootstrap: str, topic: str, count: int) -> list[Record]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[Record] = []
    try:
        for _ in range(200):
            if len(out) >= count:
                break
            for m in consumer.consume(1000, 0.2):
                assert m.error() is None, m.error()
                out.append((m.offset(), m.key(), m.value(), m.headers() or [], m.timestamp()[1]))
    finally:
        consumer.close()
    return out


def create(client: httpx.Client, topic: str, **config: Any) -> None:
    body: dict[str, Any] = {"name": topic, "partitions": 1}
    if config:
        body["config"] = config
    assert client.post("/v1/topics", json=body).status_code in (200, 201)


@pytest.mark.parametrize(("compression", "dup"), [("none", False), ("lz4", False), ("none", True)])
def test_kept_batches_read_as_batches_built_from_storage(
    eddy: tuple[RunningServer, str], compression: str, dup: bool
) -> None:
    server, bootstrap = eddy
    topic = f"t-{compression}-{dup}"
    with server.client() as c:
        create(c, topic)
        produce(bootstrap, topic, 600, dup=dup, compression=compression)
        kept = cache(server)
        hits = kept.hits
        from_kept = consume(bootstrap, topic, 600)
        assert kept.hits > hits  # answered from the kept batches
        kept.clear()
        built = consume(bootstrap, topic, 600)
        assert [r[0] for r in from_kept] == list(range(600))
        assert from_kept == built
        rest = fetch_all(c, topic, 0)
        assert [r["offset"] for r in rest] == [r[0] for r in built]
        assert [r["timestamp"] for r in rest] == [r[4] for r in built]
        if not dup:  # (repeated names: REST shows them as pairs)
            assert [r["headers"] for r in rest] == [{k: v.decode() for k, v in r[3]} for r in built]
        else:
            assert all([n for n, _ in r[3]] == ["h", "dup", "dup"] for r in from_kept)


def test_compacted_topics_are_not_answered_from_kept_batches(
    eddy: tuple[RunningServer, str],
) -> None:
    server, bootstrap = eddy
    with server.client() as c:
        create(c, "compacted", **{"cleanup.policy": "compact"})
        produce(bootstrap, "compacted", 50, keyed=True)
        hits = cache(server).hits
        assert len(consume(bootstrap, "compacted", 50)) == 50
        assert cache(server).hits == hits


def test_a_topic_created_again_is_not_answered_from_its_old_batches(
    eddy: tuple[RunningServer, str],
) -> None:
    server, bootstrap = eddy
    with server.client() as c:
        create(c, "again")
        produce(bootstrap, "again", 20)
        assert c.delete("/v1/topics/again").status_code in (200, 204)
        create(c, "again")
        answer = c.post("/v1/topics/again/records", json={"records": [{"value": "new"}] * 20})
        assert answer.status_code == 200
        hits = cache(server).hits
        records = consume(bootstrap, "again", 20)
        assert [r[2] for r in records] == [b'"new"'] * 20
        assert cache(server).hits == hits

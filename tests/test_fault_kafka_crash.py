"""Fault injection on the Kafka listener: SIGKILL of `eddy serve --kafka-listener` under Kafka
clients, then a restart on the same ports and data dir, with the clients carrying on by
themselves (they reconnect to the same bootstrap address).

- Idempotent producers, librdkafka (confluent-kafka) and aiokafka: every record is delivered
  (the producers retry until the restarted server takes it), none is stored twice (the retried
  batches of the killed server's last moments are recognised by their producer id and
  sequence, which the listener stores with the records), and each key's records are in the
  order they were produced.
- Consumer-group commits (OffsetCommit from aiokafka consumers, several groups at once): after
  the restart, each partition's committed offset is the last commit that was acknowledged, or
  the one in flight at the kill (sent, unanswered: either outcome is right).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, fetch_all, start_server_process, wait_until
from tests.faults import STARTUP, trials
from tests.kafka_brokers import free_port

PARTITIONS = 3
RECORDS = 4_000  # per trial
KEYS = 16
DELIVERY = 300.0  # seconds a producer may take to deliver everything (restart included)


@dataclass
class Restartable:
    """One `eddy serve --kafka-listener` that keeps its ports and data dir across restarts."""

    data: Path
    kafka_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: ServerProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def start(self) -> ServerProcess:
        self.process = start_server_process(
            self.data,
            "--kafka-listener",
            self.bootstrap,
            port=self.http_port,
            startup_timeout=STARTUP,
        )
        return self.process

    def kill(self) -> None:
        assert self.process is not None
        self.process.stop(signal.SIGKILL)

    def client(self) -> httpx.Client:
        assert self.process is not None
        return httpx.Client(base_url=self.process.base_url, timeout=30)


@contextmanager
def restartable(tmp_path: Path) -> Iterator[Restartable]:
    server = Restartable(tmp_path / "data")
    server.start()
    try:
        yield server
    finally:
        assert server.process is not None
        assert server.process.stop() == 0, server.process.output[-3000:]
        assert "Traceback" not in server.process.output, server.process.output[-5000:]


@dataclass
class Deliveries:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # value -> (partition, offset)
    failed: list[str] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)

    def ack(self, value: str, partition: int, offset: int) -> None:
        with self.lock:
            self.acked[value] = (partition, offset)

    def fail(self, value: str, error: object) -> None:
        with self.lock:
            self.failed.append(f"{value}: {error}")


def values() -> list[tuple[str, str]]:
    """(key, value) in production order; each value unique and numbered per key."""
    return [(f"k{i % KEYS}", f"k{i % KEYS}-{i // KEYS}") for i in range(RECORDS)]


def librdkafka_producer(bootstrap: str, topic: str, deliveries: Deliveries) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": int(DELIVERY * 1000),
            "reconnect.backoff.max.ms": 200,
            "log_level": 2,  # (its reconnect warnings are expected here)
        }
    )

    def report(error: Any, message: Any) -> None:
        value = message.value().decode()
        if error is None:
            deliveries.ack(value, message.partition(), message.offset())
        else:
            deliveries.fail(value, error)

    for n, (key, value) in enumerate(values()):
        while True:
            try:
                producer.produce(topic, value.encode(), key.encode(), on_delivery=report)
                break
            except BufferError:  # its queue is full while the server is down
                producer.poll(0.1)
        producer.poll(0)
        if n % 40 == 0:
            time.sleep(0.01)  # spread over a few seconds, so the kill lands mid-stream
    if producer.flush(DELIVERY) != 0:
        deliveries.fail("(flush)", "records left undelivered")
    deliveries.finished.set()


def aiokafka_producer(bootstrap: str, topic: str, deliveries: Deliveries) -> None:
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=int(DELIVERY * 1000),
            retry_backoff_ms=100,
        )
        await producer.start()
        try:
            pending = []
            for n, (key, value) in enumerate(values()):
                sent = await producer.send(topic, value.encode(), key=key.encode())
                sent.add_done_callback(lambda done, value=value: report(done, value))
                pending.append(sent)
                if n % 40 == 0:
                    await asyncio.sleep(0.01)
            await asyncio.wait(pending, timeout=DELIVERY)
        finally:
            await producer.stop()

    def report(done: asyncio.Future[Any], value: str) -> None:
        if done.exception() is None:
            deliveries.ack(value, done.result().partition, done.result().offset)
        else:
            deliveries.fail(value, done.exception())

    try:
        asyncio.run(run())
    except Exception as exc:  # reported as a failure of the trial, not lost in the thread
        deliveries.fail("(producer)", repr(exc))
    deliveries.finished.set()


PRODUCERS: dict[str, Callable[[str, str, Deliveries], None]] = {
    "librdkafka": librdkafka_producer,
    "aiokafka": aiokafka_producer,
}


@pytest.mark.parametrize("trial", trials(1))
@pytest.mark.parametrize("client", list(PRODUCERS))
def test_sigkill_under_an_idempotent_kafka_producer(
    tmp_path: Path, client: str, trial: int
) -> None:
    rng = random.Random(f"{client}-{trial}")
    topic = "idem"
    with restartable(tmp_path) as server:
        with server.client() as rest:
            created = rest.post("/v1/topics", json={"name": topic, "partitions": PARTITIONS})
            assert created.status_code == 201, created.text
        deliveries = Deliveries()
        thread = threading.Thread(
            target=PRODUCERS[client], args=(server.bootstrap, topic, deliveries)
        )
        thread.start()
        try:
            kill_after = rng.randrange(RECORDS // 10, RECORDS * 3 // 4)
            wait_until(lambda: len(deliveries.acked) >= kill_after, 120)
            server.kill()
            at_kill = len(deliveries.acked)
            server.start()
            assert deliveries.finished.wait(DELIVERY + 30)
        finally:
            thread.join(timeout=DELIVERY + 60)
        with server.client() as rest:
            stored = [
                (partition, record)
                for partition in range(PARTITIONS)
                for record in fetch_all(rest, topic, partition)
            ]

    assert deliveries.failed == []
    places: dict[str, list[tuple[int, int]]] = defaultdict(list)
    per_key: dict[str, list[int]] = defaultdict(list)
    for partition, record in stored:
        value = base64.b64decode(record["value_base64"]).decode()
        places[value].append((partition, record["offset"]))
        key, number = value.rsplit("-", 1)
        per_key[key].append(int(number))
    duplicated = {v: p for v, p in places.items() if len(p) > 1}
    lost = [v for v in deliveries.acked if v not in places]
    assert duplicated == {} and lost == []
    assert {v: p[0] for v, p in places.items()} == deliveries.acked  # at the offsets acked
    assert sorted(places) == sorted(v for _, v in values())  # every record sent, delivered
    for key, numbers in per_key.items():
        assert numbers == sorted(numbers), key  # the producer's order, per key
    print(
        f"{client} trial {trial}: {RECORDS} records, {at_kill} acknowledged at the kill, "
        f"{len(deliveries.acked)} in the end; lost {len(lost)}, duplicated {len(duplicated)}"
    )


# --- consumer-group commits ------------------------------------------------------------------
GROUPS = 4


@dataclass
class Commits:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[tuple[str, int], int] = field(default_factory=dict)  # (group, partition) ->
    in_flight: dict[tuple[str, int], int] = field(default_factory=dict)
    count: int = 0
    errors: list[str] = field(default_factory=list)


def committer(
    bootstrap: str, topic: str, group: str, commits: Commits, stop: threading.Event
) -> None:
    """OffsetCommit after OffsetCommit (aiokafka, partitions assigned: no group membership,
    as a tool or a consumer that manages its own partitions commits) until the server is gone."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError
    from aiokafka.structs import OffsetAndMetadata

    rng = random.Random(group)

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.pause(*tps)  # it only commits: nothing to fetch
        try:
            while not stop.is_set():
                partition, offset = rng.randrange(PARTITIONS), rng.randrange(COMMITTABLE + 1)
                key = (group, partition)
                with commits.lock:
                    commits.in_flight[key] = offset
                commit = consumer.commit({tps[partition]: OffsetAndMetadata(offset, "")})
                try:
                    # (aiokafka looks for a coordinator until it finds one: bounded here)
                    await asyncio.wait_for(commit, COMMIT_WAIT)
                except (KafkaError, TimeoutError):
                    return  # the server is gone: what was acknowledged is the record
                with commits.lock:
                    commits.acked[key] = offset
                    del commits.in_flight[key]
                    commits.count += 1
        finally:
            # (its stop, cut short with the server gone, may end in a CancelledError)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(consumer.stop(), 10)

    try:
        asyncio.run(run())
    except Exception as exc:
        with commits.lock:
            commits.errors.append(f"{group}: {exc!r}")


COMMITTABLE = 500  # records per partition: commits name offsets 0..COMMITTABLE
COMMIT_WAIT = 5.0  # seconds a committer waits for an answer before it counts the server gone


@pytest.mark.parametrize("trial", trials(1))
def test_sigkill_while_kafka_consumer_groups_commit(tmp_path: Path, trial: int) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    rng = random.Random(trial)
    topic = "commits"
    commits = Commits()
    stop = threading.Event()
    with restartable(tmp_path) as server:
        with server.client() as rest:
            created = rest.post("/v1/topics", json={"name": topic, "partitions": PARTITIONS})
            assert created.status_code == 201, created.text
            for partition in range(PARTITIONS):
                records = [{"value": i, "partition": partition} for i in range(COMMITTABLE)]
                produced = rest.post(f"/v1/topics/{topic}/records", json={"records": records})
                assert produced.status_code == 200, produced.text
        groups = [f"g{i}" for i in range(GROUPS)]
        threads = [
            threading.Thread(target=committer, args=(server.bootstrap, topic, g, commits, stop))
            for g in groups
        ]
        for thread in threads:
            thread.start()
        try:
            kill_after = rng.randrange(200, 1200)
            wait_until(lambda: commits.count >= kill_after, 120)
            server.kill()
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        with commits.lock:
            acked, in_flight, count = dict(commits.acked), dict(commits.in_flight), commits.count
        server.start()

        async def committed() -> dict[tuple[str, int], int | None]:
            found: dict[tuple[str, int], int | None] = {}
            for group in groups:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=server.bootstrap, group_id=group, enable_auto_commit=False
                )
                await consumer.start()
                try:
                    for p in range(PARTITIONS):
                        found[(group, p)] = await consumer.committed(TopicPartition(topic, p))
                finally:
                    await consumer.stop()
            return found

        stored = asyncio.run(committed())

    assert commits.errors == [] and not any(t.is_alive() for t in threads)
    wrong = {
        key: (offset, acked.get(key), in_flight.get(key))
        for key, offset in stored.items()
        if offset != acked.get(key) and (key not in in_flight or offset != in_flight[key])
    }
    assert wrong == {}  # (group, partition): (stored, last acknowledged, in flight)
    took = [k for k, o in stored.items() if k in in_flight and o == in_flight[k] != acked.get(k)]
    print(
        f"commits trial {trial}: {count} commits acknowledged before the kill, "
        f"{len(in_flight)} in flight ({len(took)} of them stored); 0 acknowledged commits lost"
    )

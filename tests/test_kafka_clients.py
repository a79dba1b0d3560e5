"""The Kafka protocol listener against Kafka clients nobody on the team wrote: kafka-python,
aiokafka, confluent-kafka (librdkafka) and kcat, on a real `eddy serve --kafka-listener`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported names
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
)
from confluent_kafka.admin import NewTopic as ConfluentNewTopic  # type: ignore[attr-defined]
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KafkaConfigResource
from kafka.admin import ConfigResourceType, NewTopic
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.api_versions.v3.response import ApiVersionsResponse
from kio.schema.errors import ErrorCode

from tests.conftest import (
    ServerProcess,
    fetch_all,
    free_port,
    start_server_process,
    wait_until,
)


@pytest.fixture(scope="module")
def eddy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    server = start_server_process(
        tmp_path_factory.mktemp("kafka") / "data", "--kafka-listener", f"127.0.0.1:{port}"
    )
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop()
        print(server.output[-5000:])  # shown with a failure: what the server said


def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def produce_all(bootstrap: str, topic: str, records: list[dict[str, Any]], **config: Any) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    failures: list[Any] = []
    for r in records:
        producer.produce(
            topic,
            r.get("value"),
            r.get("key"),
            partition=r.get("partition", -1),
            timestamp=r.get("timestamp", 0),
            headers=r.get("headers"),
            on_delivery=lambda err, _msg: failures.append(err) if err else None,
        )
    assert producer.flush(20) == 0
    assert failures == []


def consume(bootstrap: str, topic: str, count: int, partitions: int = 1) -> list[Any]:
    """`count` records from the start of the topic's partitions (assigned, no group)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "assigned", "enable.auto.commit": False}
    )
    consumer.assign([KafkaPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got: list[Any] = []
    try:
        for _ in range(200):
            if len(got) >= count:
                break
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                got.append(message)
    finally:
        consumer.close()
    return got


# --- raw protocol (messages encoded with kio) ----------------------------------------------------
def raw_call(bootstrap: str, frames: list[bytes]) -> list[bytes]:
    host, port = bootstrap.split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        stream = sock.makefile("rb")
        for frame in frames:
            sock.sendall(len(frame).to_bytes(4, "big") + frame)
            size = int.from_bytes(stream.read(4), "big")
            answers.append(stream.read(size))
    return answers


def header(api_key: int, version: int, correlation_id: int) -> bytes:
    client = b"raw"
    return (
        api_key.to_bytes(2, "big")
        + version.to_bytes(2, "big")
        + correlation_id.to_bytes(4, "big")
        + len(client).to_bytes(2, "big")
        + client
    )


def test_api_versions_negotiation(eddy: tuple[ServerProcess, str]) -> None:
    from kio.serial import entity_reader, entity_writer

    _, bootstrap = eddy
    import io

    body = io.BytesIO()
    entity_writer(ApiVersionsRequest)(
        body, ApiVersionsRequest(client_software_name="raw", client_software_version="1")
    )
    v3 = header(18, 3, 1) + b"\0" + body.getvalue()  # v2 header: tagged fields after client id
    unknown_version = header(18, 99, 2)
    answers = raw_call(bootstrap, [v3, unknown_version, v3])
    # v3: response header v0 (correlation id only), then the body
    assert answers[0][:4] == (1).to_bytes(4, "big")
    response, _ = entity_reader(ApiVersionsResponse)(answers[0], 4)
    assert response.error_code == ErrorCode.none
    keys = {int(k.api_key): (k.min_version, k.max_version) for k in response.api_keys}
    assert keys[0][0] <= 9 <= keys[0][1] and 1 in keys and 3 in keys
    # an unknown ApiVersions version: v0 answer with UNSUPPORTED_VERSION and the list
    assert answers[1][:4] == (2).to_bytes(4, "big")
    assert int.from_bytes(answers[1][4:6], "big", signed=True) == ErrorCode.unsupported_version
    # the connection stays usable (other APIs Eddy does not speak: tests/test_kafka_wire.py)
    assert answers[2][:4] == (1).to_bytes(4, "big")


def test_admin_create_list_describe_delete(eddy: tuple[ServerProcess, str]) -> None:
    server, bootstrap = eddy
    name = topic_name()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(name, 3, 1, topic_configs={"retention.ms": "60000"})])
        assert name in admin.list_topics()
        described = admin.describe_topics([name])[0]
        assert described["error_code"] == 0 and len(described["partitions"]) == 3
        with httpx.Client(base_url=server.base_url) as rest:
            detail = rest.get(f"/v1/topics/{name}").json()
            assert len(detail["partitions"]) == 3 and detail["config"]["retention.ms"] == 60000
        admin.delete_topics([name])
        assert name not in admin.list_topics()
    finally:
        admin.close()
    # kcat lists the one broker at the listener's address
    listing = subprocess.run(
        ["kcat", "-b", bootstrap, "-L"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert f"broker 1 at {bootstrap}" in listing


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_keys_headers_timestamps_with_each_codec(
    eddy: tuple[ServerProcess, str], codec: str
) -> None:
    server, bootstrap = eddy
    name = topic_name()
    records = [
        {
            "key": f"k{i}".encode(),
            "value": json.dumps({"n": i}).encode() if i % 2 else f"plain {i}".encode(),
            "headers": [("trace", f"id-{i}".encode())],
            "timestamp": 1_700_000_000_000 + i,
        }
        for i in range(20)
    ]
    produce_all(bootstrap, name, records, **{"compression.type": codec})
    got = consume(bootstrap, name, 20)
    assert [(m.key(), m.value(), m.headers(), m.timestamp()[1]) for m in got] == [
        (r["key"], r["value"], r["headers"], r["timestamp"]) for r in records
    ]
    with httpx.Client(base_url=server.base_url) as rest:
        body = rest.get(f"/v1/topics/{name}/partitions/0/records?offset=0&limit=2").json()
    assert body["records"][0]["key"] == "k0"
    assert body["records"][0]["value_base64"] == base64.b64encode(b"plain 0").decode()
    assert body["records"][1]["value"] == {"n": 1}
    assert body["records"][1]["headers"] == {"trace": "id-1"}
    assert body["records"][1]["timestamp"] == 1_700_000_000_001


def test_consume_from_earliest_latest_offset_and_timestamp(
    eddy: tuple[ServerProcess, str],
) -> None:
    _, bootstrap = eddy
    name = topic_name()
    base = 1_700_000_000_000
    produce_all(
        bootstrap,
        name,
        [{"key": b"k", "value": f"v{i}".encode(), "timestamp": base + 1000 * i} for i in range(10)],
    )

    async def run() -> dict[str, Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(name, 0)
            consumer.assign([tp])
            out: dict[str, Any] = {}
            out["earliest"] = (await consumer.beginning_offsets([tp]))[tp]
            out["latest"] = (await consumer.end_offsets([tp]))[tp]
            out["by_time"] = (await consumer.offsets_for_times({tp: base + 4500}))[tp]
            out["after_all"] = (await consumer.offsets_for_times({tp: base + 99_000}))[tp]
            consumer.seek(tp, 7)
            batch = await consumer.getmany(tp, timeout_ms=5000)
            out["from_7"] = [m.value for m in batch.get(tp, [])]
            return out
        finally:
            await consumer.stop()

    out = asyncio.run(run())
    assert out["earliest"] == 0 and out["latest"] == 10
    assert out["by_time"].offset == 5 and out["by_time"].timestamp == base + 5000
    assert out["after_all"] is None
    assert out["from_7"] == [b"v7", b"v8", b"v9"]

    def kcat(*args: str) -> list[str]:
        result = subprocess.run(
            ["kcat", "-b", bootstrap, "-C", "-t", name, "-e", "-f", "%o:%s\n", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.split()

    assert kcat("-o", "beginning", "-c", "2") == ["0:v0", "1:v1"]
    assert kcat("-o", "8") == ["8:v8", "9:v9"]
    assert kcat("-o", "-1") == ["9:v9"]
    assert kcat("-o", f"s@{base + 8000}") == ["8:v8", "9:v9"]


def test_offset_out_of_range_and_long_poll(eddy: tuple[ServerProcess, str]) -> None:
    server, bootstrap = eddy
    name = topic_name()
    produce_all(bootstrap, name, [{"value": b"one"}])

    async def run() -> tuple[Any, list[bytes]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="none",
            fetch_max_wait_ms=10_000,
        )
        await consumer.start()
        tp = TopicPartition(name, 0)
        consumer.assign([tp])
        try:
            consumer.seek(tp, 50)
            try:
                await consumer.getone()
                error: Any = None
            except Exception as exc:  # aiokafka raises OffsetOutOfRangeError
                error = exc
            consumer.seek(tp, 1)  # the end: the fetch long-polls until a record comes
            waiting = asyncio.ensure_future(consumer.getone())
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(base_url=server.base_url) as rest:
                response = await rest.post(
                    f"/v1/topics/{name}/records", json={"key": "r", "value": {"from": "rest"}}
                )
                assert response.status_code in (200, 201), response.text
            message = await asyncio.wait_for(waiting, 20)
            return error, [message.value, message.key]
        finally:
            await consumer.stop()

    error, got = asyncio.run(run())
    assert type(error).__name__ == "OffsetOutOfRangeError"
    assert got == [b'{"from":"rest"}', b"r"]


def test_rest_records_reach_kafka_clients_and_kafka_records_reach_websockets(
    eddy: tuple[ServerProcess, str],
) -> None:
    server, bootstrap = eddy
    name = topic_name()
    with httpx.Client(base_url=server.base_url) as rest:
        rest.post(f"/v1/topics/{name}/records", json={"key": "a", "value": {"x": [1, 2]}})
        rest.post(
            f"/v1/topics/{name}/records?key=b",
            content=b"\x00\xffbin",
            headers={"content-type": "application/octet-stream"},
        )
        rest.post(
            f"/v1/topics/{name}/records?key=c",
            content="héllo".encode(),
            headers={"content-type": "text/plain"},
        )
        assert (
            rest.get(f"/v1/topics/{name}/partitions/0/records?offset=2").json()["records"][0][
                "value"
            ]
            == "héllo"
        )
    got = consume(bootstrap, name, 3)
    assert [(m.key(), m.value()) for m in got] == [
        (b"a", b'{"x":[1,2]}'),
        (b"b", b"\x00\xffbin"),
        (b"c", "héllo".encode()),
    ]

    async def subscribe() -> list[dict[str, Any]]:
        url = f"{server.ws_url}/v1/topics/{name}/ws?from=latest"
        async with websockets.connect(url) as ws:
            frames: list[dict[str, Any]] = []
            while not any(f.get("type") == "subscribed" for f in frames):
                frames.append(json.loads(await ws.recv()))
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(name, b'{"k": "json"}', key=b"j", partition=0)
                await producer.send_and_wait(name, b"not json", key=b"n", partition=0)
                await producer.send_and_wait(name, None, key=b"tomb", partition=0)
            finally:
                await producer.stop()
            records: list[dict[str, Any]] = []
            while len(records) < 3:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if frame.get("type") == "record":
                    records.append(frame)
            return records

    records = asyncio.run(subscribe())
    assert records[0]["key"] == "j" and records[0]["value"] == {"k": "json"}
    assert records[1]["key"] == "n"
    assert records[1]["value_base64"] == base64.b64encode(b"not json").decode()
    assert records[2]["key"] == "tomb" and records[2]["value"] is None


def test_kafka_error_codes_reach_clients(eddy: tuple[ServerProcess, str]) -> None:
    _, bootstrap = eddy
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 5000})
    errors: list[Any] = []
    producer.produce("bad name!", b"x", on_delivery=lambda err, _m: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None
    assert errors[0].code() in (KafkaError.TOPIC_EXCEPTION, KafkaError._UNKNOWN_TOPIC)


GROUP_MEMBER = """
import sys
from confluent_kafka import Consumer
consumer = Consumer({
    "bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "auto.offset.reset": "earliest",
    "enable.auto.commit": False, "session.timeout.ms": 3000, "heartbeat.interval.ms": 300,
})
consumer.subscribe([sys.argv[3]], on_assign=lambda c, parts: print(
    "assigned", ",".join(str(p.partition) for p in parts), flush=True))
while True:
    message = consumer.poll(0.2)
    if message is not None and message.error() is None:
        consumer.commit(message, asynchronous=False)
        print("record", message.partition(), message.offset(), flush=True)
"""


def group_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 3000,
            "heartbeat.interval.ms": 300,
        }
    )


def test_group_of_two_librdkafka_consumers_shares_commits_and_takes_over(
    eddy: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    server, bootstrap = eddy
    name, group = topic_name(), f"g-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.base_url) as rest:
        assert rest.post("/v1/topics", json={"name": name, "partitions": 4}).status_code == 201
    output = tmp_path / "member.out"
    with output.open("w") as out:
        other = subprocess.Popen(
            [sys.executable, "-c", GROUP_MEMBER, bootstrap, group, name], stdout=out, text=True
        )
    me = group_consumer(bootstrap, group)
    mine: set[int] = set()
    me.subscribe(
        [name],
        on_assign=lambda c, parts: mine.update(p.partition for p in parts),
        on_revoke=lambda c, parts: mine.difference_update(p.partition for p in parts),
    )
    seen: list[tuple[int | None, int | None]] = []

    def poll_until(condition: Any) -> None:
        for _ in range(300):
            if condition():
                return
            message = me.poll(0.1)
            if message is not None and message.error() is None:
                me.commit(message=message, asynchronous=False)
                seen.append((message.partition(), message.offset()))
        raise AssertionError("condition not reached")

    def their_lines() -> list[list[str]]:
        # Only complete lines: the other process may be in the middle of writing the last one.
        text = output.read_text()
        return [line.split() for line in text[: text.rfind("\n") + 1].splitlines()]

    def theirs() -> set[int]:
        assigned = [line for line in their_lines() if line and line[0] == "assigned"]
        if not assigned or len(assigned[-1]) < 2:  # none yet, or an empty assignment
            return set()
        return {int(p) for p in assigned[-1][1].split(",") if p}

    def their_records() -> list[tuple[int | None, int | None]]:
        return [(int(line[1]), int(line[2])) for line in their_lines() if line[:1] == ["record"]]

    try:
        # both members share the partitions, disjointly
        poll_until(lambda: mine and theirs() and mine | theirs() == {0, 1, 2, 3})
        assert not mine & theirs()
        produce_all(
            bootstrap, name, [{"value": f"a{i}".encode(), "partition": i % 4} for i in range(40)]
        )
        poll_until(lambda: len(seen) + len(their_records()) >= 40)
        everything = sorted((p or 0, o or 0) for p, o in seen + their_records())
        assert everything == sorted((p, o) for p in range(4) for o in range(10))
        # REST sees the Kafka group's committed offsets
        with httpx.Client(base_url=server.base_url) as rest:
            detail = rest.get(f"/v1/groups/{group}").json()
            assert {o["partition"]: o["committed_offset"] for o in detail["offsets"]} == {
                p: 10 for p in range(4)
            }
            # one group name, one kind of member: a WebSocket member is refused while Kafka
            # members are in the group, and REST may not reset it
            reset = rest.post(f"/v1/groups/{group}/reset", json={"topic": name, "to": "earliest"})
            assert reset.status_code == 409 and reset.json()["error"]["code"] == "group_active"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:  # ListGroups and DescribeGroups, as kafka-python's admin reads them
            listed = admin.list_groups()
            described = admin.describe_groups([group])
        finally:
            admin.close()
        assert {"group_id": group, "protocol_type": "consumer", "group_state": "Stable"} in listed
        members = described[group]["members"]
        assert described[group]["protocol_data"] == "range" and len(members) == 2
        assigned = [
            p
            for m in members
            for a in m["member_assignment"]["assigned_partitions"]
            for p in a["partitions"]
        ]
        assert sorted(assigned) == [0, 1, 2, 3]
        # the other member is killed: after its session timeout this one owns every partition
        other.kill()
        other.wait()
        produce_all(
            bootstrap, name, [{"value": f"b{i}".encode(), "partition": i % 4} for i in range(8)]
        )
        poll_until(lambda: mine == {0, 1, 2, 3} and len(seen) + len(their_records()) >= 48)
        later = [(p or 0, o or 0) for p, o in seen if (o or 0) >= 10]
        assert sorted(later) == sorted((p, o) for p in range(4) for o in (10, 11))
        me.close()  # leaves the group: now empty, it can be deleted (DeleteGroups)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            admin.delete_groups([group])
        finally:
            admin.close()
        with httpx.Client(base_url=server.base_url) as rest:
            assert rest.get(f"/v1/groups/{group}").status_code == 404
    finally:
        me.close()
        if other.poll() is None:
            other.kill()
            other.wait()


class CuttingProxy:
    """A loopback TCP proxy in front of the Kafka listener that, every `every`th Produce
    request, forwards the request and then cuts the connection before the answer gets back:
    the record is committed, the producer does not know, and retries."""

    def __init__(self, target: str, every: int = 5, cuts: int = 3) -> None:
        self.target = target
        self.every, self.cuts_left, self.cuts = every, cuts, 0
        self.produces = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.target.split(":")
            upstream = socket.create_connection((host, int(port)))
            cut = threading.Event()  # set: answers are no longer passed on
            threading.Thread(
                target=self._requests, args=(client, upstream, cut), daemon=True
            ).start()
            threading.Thread(
                target=self._answers, args=(upstream, client, cut), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, upstream: socket.socket, cut: threading.Event
    ) -> None:
        stream = client.makefile("rb")
        try:
            while True:
                size = stream.read(4)
                if len(size) < 4:
                    break
                frame = stream.read(int.from_bytes(size, "big"))
                if int.from_bytes(frame[:2], "big") == 0:  # a Produce
                    with self.lock:
                        self.produces += 1
                        if self.cuts_left > 0 and self.produces % self.every == 0:
                            self.cuts_left -= 1
                            self.cuts += 1
                            cut.set()
                upstream.sendall(size + frame)
                if cut.is_set():
                    time.sleep(0.3)  # let it commit (the test holds either way)
                    break
        except OSError:
            pass
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _answers(
        self, upstream: socket.socket, client: socket.socket, cut: threading.Event
    ) -> None:
        try:
            while data := upstream.recv(65536):
                if cut.is_set():
                    return
                client.sendall(data)
        except OSError:
            pass


def test_idempotent_producer_cut_mid_stream_writes_no_duplicates(tmp_path: Path) -> None:
    kafka_port = free_port()
    proxy = CuttingProxy(f"127.0.0.1:{kafka_port}")
    server = start_server_process(
        tmp_path / "data",
        "--kafka-listener",
        f"127.0.0.1:{kafka_port}",
        "--kafka-advertised-listener",
        proxy.address,
    )
    try:
        name = topic_name()
        produce_all(
            proxy.address,
            name,
            [{"value": f"m{i}".encode(), "partition": 0} for i in range(600)],
            **{"enable.idempotence": True, "linger.ms": 2, "batch.num.messages": 20},
        )
        assert proxy.cuts >= 1
        with httpx.Client(base_url=server.base_url) as rest:
            records = fetch_all(rest, name)
        values = [base64.b64decode(r["value_base64"]).decode() for r in records]
        assert values == [f"m{i}" for i in range(600)]
    finally:
        proxy.close()
        server.stop()


def test_admin_partitions_and_configs(eddy: tuple[ServerProcess, str]) -> None:
    server, bootstrap = eddy
    name = topic_name()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([ConfluentNewTopic(name, 1, 1)])[name].result(20)
    admin.create_partitions([NewPartitions(name, 3)])[name].result(20)
    with pytest.raises(KafkaException) as shrink:
        admin.create_partitions([NewPartitions(name, 2)])[name].result(20)
    assert shrink.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    resource = ConfigResource("topic", name)
    admin.incremental_alter_configs(
        [
            ConfigResource(
                "topic",
                name,
                incremental_configs=[
                    ConfigEntry(
                        "retention.ms", "120000", incremental_operation=AlterConfigOpType.SET
                    )
                ],
            )
        ]
    )[resource].result(20)
    configs = admin.describe_configs([resource])[resource].result(20)
    assert configs["retention.ms"].value == "120000" and not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "delete" and configs["cleanup.policy"].is_default
    legacy = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:  # AlterConfigs (not incremental), with kafka-python
        kept = KafkaConfigResource(ConfigResourceType.TOPIC, name, {"retention.ms": "120000"})
        bad = KafkaConfigResource(ConfigResourceType.TOPIC, name, {"retention.ms": "forever"})
        answers = [legacy.alter_configs([r]) for r in (kept, bad)]
    finally:
        legacy.close()
    outcomes = [a["topic"][name] for a in answers]
    assert outcomes[0] == "OK" and "InvalidConfigurationError" in outcomes[1]
    with httpx.Client(base_url=server.base_url) as rest:
        detail = rest.get(f"/v1/topics/{name}").json()
    assert len(detail["partitions"]) == 3 and detail["config"]["retention.ms"] == 120000


AUTH_KEYS = {"app": "key-app", "reader": "key-reader"}


def test_sasl_plain_with_api_keys_and_topic_group_permissions(tmp_path: Path) -> None:
    sha = {n: hashlib.sha256(k.encode()).hexdigest() for n, k in AUTH_KEYS.items()}
    auth = tmp_path / "auth.toml"
    auth.write_text(
        f"""
[[principals]]
name = "app"
key_sha256 = "{sha["app"]}"
read = ["orders*"]
write = ["orders*"]
admin = ["orders*"]
groups = ["app-*"]

[[principals]]
name = "reader"
key_sha256 = "{sha["reader"]}"
read = ["orders*"]
"""
    )
    port = free_port()
    server = start_server_process(
        tmp_path / "data", "--kafka-listener", f"127.0.0.1:{port}", "--auth-file", str(auth)
    )
    bootstrap = f"127.0.0.1:{port}"

    def sasl(user: str, key: str) -> dict[str, Any]:
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": user,
            "sasl.password": key,
        }

    try:
        produce_all(bootstrap, "orders", [{"value": b'{"id":1}'}], **sasl("app", "key-app"))
        # a topic outside the grants: TOPIC_AUTHORIZATION_FAILED
        producer = Producer(
            {"bootstrap.servers": bootstrap, "message.timeout.ms": 5000, **sasl("app", "key-app")}
        )
        denied: list[Any] = []
        producer.produce("payments", b"x", on_delivery=lambda err, _m: denied.append(err))
        producer.flush(10)
        assert denied[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # the reader may read but not write
        producer = Producer(
            {"bootstrap.servers": bootstrap, "message.timeout.ms": 5000, **sasl("r", "key-reader")}
        )
        denied.clear()
        producer.produce("orders", b"x", on_delivery=lambda err, _m: denied.append(err))
        producer.flush(10)
        assert denied[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # a wrong key: SASL_AUTHENTICATION_FAILED
        errors: list[Any] = []
        bad = Producer(
            {
                "bootstrap.servers": bootstrap,
                "error_cb": errors.append,
                **sasl("app", "not-a-key"),
            }
        )
        wait_until(lambda: bad.poll(0.1) is not None or errors)
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors)

        # a consumer group outside the grants: GROUP_AUTHORIZATION_FAILED
        async def consume_in_group(group: str, key: str) -> Any:
            consumer = AIOKafkaConsumer(
                "orders",
                bootstrap_servers=bootstrap,
                group_id=group,
                auto_offset_reset="earliest",
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN",
                sasl_plain_username="u",
                sasl_plain_password=key,
            )
            try:
                await consumer.start()
                return (await asyncio.wait_for(consumer.getone(), 20)).value
            except Exception as exc:  # the refusal, as aiokafka raises it
                return exc
            finally:
                await consumer.stop()

        assert asyncio.run(consume_in_group("app-1", "key-app")) == b'{"id":1}'
        refused = asyncio.run(consume_in_group("other", "key-app"))
        assert type(refused).__name__ == "GroupAuthorizationFailedError"
    finally:
        server.stop()


def test_one_group_name_one_kind_of_member(eddy: tuple[ServerProcess, str]) -> None:
    server, bootstrap = eddy
    name, group = topic_name(), f"g-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[Any, dict[str, Any]]:
        url = f"{server.ws_url}/v1/topics/{name}/ws?group={group}"
        async with websockets.connect(url) as ws:
            await asyncio.wait_for(ws.recv(), 10)  # a WebSocket member is in the group
            kafka_member = AIOKafkaConsumer(
                name, bootstrap_servers=bootstrap, group_id=group, retry_backoff_ms=100
            )
            try:
                await kafka_member.start()
                await asyncio.wait_for(kafka_member.getone(), 10)
                refused: Any = None
            except Exception as exc:
                refused = exc
            finally:
                await kafka_member.stop()
        # and the other way round: a Kafka member in the group refuses a WebSocket member
        consumer = group_consumer(bootstrap, group + "-k")
        consumer.subscribe([name])
        try:
            for _ in range(100):
                consumer.poll(0.1)
                if consumer.assignment():
                    break
            async with websockets.connect(
                f"{server.ws_url}/v1/topics/{name}/ws?group={group}-k"
            ) as ws:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        finally:
            consumer.close()
        return refused, frame

    refused, frame = asyncio.run(run())
    assert type(refused).__name__ == "InconsistentGroupProtocolError"
    assert frame["type"] == "error" and frame["code"] == "group_active"


def test_acks_zero_and_acks_one_produce(eddy: tuple[ServerProcess, str]) -> None:
    _, bootstrap = eddy
    for acks in ("0", "1"):
        name = topic_name()
        produce_all(
            bootstrap, name, [{"value": f"{acks}-{i}".encode()} for i in range(5)], acks=acks
        )
        got = consume(bootstrap, name, 5)  # acks=0 gets no answer; the records are there
        assert [m.value() for m in got] == [f"{acks}-{i}".encode() for i in range(5)]

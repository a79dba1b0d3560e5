"""The Kafka listener's wire-level rules, on a real `eddy serve --kafka-listener`: tagged fields a
version's schema does not know are skipped (Kafka's rule, KIP-482), and a request that cannot be
answered in its own API's schema closes the connection after the answers before it (as Apache
Kafka does) instead of getting bytes that are not that API's response.

Requests are written with kio's own writer. A newer client's request is a kio dataclass with the
fields of the version plus tagged fields Kafka has not defined (kio's writer takes any dataclass
of its shape, and writes each tag whose value is not its default), so the bytes are what a client
that knows more tags would send."""

# (no `from __future__ import annotations`: kio reads the dataclasses' field types at run time)

import dataclasses
import io
import socket
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported names
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.api_versions.v3.response import ApiVersionsResponse
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v9.request import MetadataRequest, MetadataRequestTopic
from kio.schema.metadata.v9.response import MetadataResponse
from kio.schema.request_header.v2.header import RequestHeader
from kio.serial import entity_reader, entity_writer

from tests.conftest import ServerProcess, free_port, start_server_process


@pytest.fixture(scope="module")
def eddy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    server = start_server_process(
        tmp_path_factory.mktemp("wire") / "data",
        "--kafka-listener",
        f"127.0.0.1:{port}",
        "--default-partitions",
        "4",
    )
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop()
        print(server.output[-5000:])  # shown with a failure: what the server said


# --- a newer client's Metadata v9: the same fields, and tags Kafka has not defined -------------
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NewerHeader:
    __flexible__: ClassVar[bool] = True
    request_api_key: int = dataclasses.field(metadata={"kafka_type": "int16"})
    request_api_version: int = dataclasses.field(metadata={"kafka_type": "int16"})
    correlation_id: int = dataclasses.field(metadata={"kafka_type": "int32"})
    client_id: str | None = dataclasses.field(metadata={"kafka_type": "string"})
    future_header_tag: str = dataclasses.field(
        metadata={"kafka_type": "string", "tag": 7}, default=""
    )


NewerHeader.__name__ = "RequestHeader"  # kio writes a request header's client id the legacy way


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NewerTopic:
    __flexible__: ClassVar[bool] = True
    name: str = dataclasses.field(metadata={"kafka_type": "string"})
    future_topic_tag: int = dataclasses.field(metadata={"kafka_type": "int64", "tag": 5}, default=0)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NewerMetadataRequest:
    __flexible__: ClassVar[bool] = True
    topics: tuple[NewerTopic, ...] | None
    allow_auto_topic_creation: bool = dataclasses.field(metadata={"kafka_type": "bool"})
    include_cluster_authorized_operations: bool = dataclasses.field(metadata={"kafka_type": "bool"})
    include_topic_authorized_operations: bool = dataclasses.field(metadata={"kafka_type": "bool"})
    future_tag_0: bytes = dataclasses.field(metadata={"kafka_type": "bytes", "tag": 0}, default=b"")
    future_tag_3: str = dataclasses.field(metadata={"kafka_type": "string", "tag": 3}, default="")


def encode(writer_type: type[Any], value: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(writer_type)(buffer, value)
    return buffer.getvalue()


def request_header(api_key: int, version: int, correlation_id: int) -> bytes:
    return encode(
        RequestHeader,
        RequestHeader(
            request_api_key=api_key,  # type: ignore[arg-type]
            request_api_version=version,  # type: ignore[arg-type]
            correlation_id=correlation_id,  # type: ignore[arg-type]
            client_id="wire-test",
        ),
    )


def api_versions(correlation_id: int) -> bytes:
    body = ApiVersionsRequest(client_software_name="wire", client_software_version="1")
    return request_header(18, 3, correlation_id) + encode(ApiVersionsRequest, body)


def exchange(bootstrap: str, frames: list[bytes]) -> tuple[list[bytes], bool]:
    """Send all frames at once (pipelined, as clients do); read answers until the broker has
    answered each or closes the connection: (answers, whether the broker closed it first)."""
    host, port = bootstrap.split(":")
    answers: list[bytes] = []
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"".join(len(f).to_bytes(4, "big") + f for f in frames))
        stream = sock.makefile("rb")
        while len(answers) < len(frames):
            size = stream.read(4)
            if len(size) < 4:
                assert size == b"", "the broker closed in the middle of an answer"
                return answers, True
            answers.append(stream.read(int.from_bytes(size, "big")))
        return answers, False


def metadata_answer(answer: bytes, correlation_id: int) -> Any:
    assert answer[:4] == correlation_id.to_bytes(4, "big")
    # response header v1: correlation id, then an empty tagged-field section
    response, size = entity_reader(MetadataResponse)(answer, 5)
    assert 5 + size == len(answer)  # the whole answer is one Metadata v9 response
    return response


def test_newest_librdkafka_lists_metadata(eddy: tuple[ServerProcess, str]) -> None:
    """confluent-kafka's librdkafka (2.16 sends Metadata v9 with a tag 0 in the body)."""
    _, bootstrap = eddy
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics([NewTopic("wire-listed", 2)])
    created["wire-listed"].result(20)
    listing = admin.list_topics(timeout=20)
    assert listing.brokers[1].port == int(bootstrap.split(":")[1])
    assert len(listing.topics["wire-listed"].partitions) == 2
    # and by name, the request librdkafka pipelines beside the full listing
    assert len(admin.list_topics("wire-listed", timeout=20).topics["wire-listed"].partitions) == 2


def test_unknown_tagged_fields_are_skipped(eddy: tuple[ServerProcess, str]) -> None:
    _, bootstrap = eddy
    newer_header = encode(
        NewerHeader,
        NewerHeader(
            request_api_key=3,
            request_api_version=9,
            correlation_id=7,
            client_id="new",
            future_header_tag="header extra",
        ),
    )
    newer = NewerMetadataRequest(
        topics=(
            NewerTopic(name="wire-tagged", future_topic_tag=2**40),
            NewerTopic(name="wire-tagged-2"),
        ),
        allow_auto_topic_creation=True,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
        future_tag_0=b"\x01\x02\x03",
        future_tag_3="more",
    )
    # the same request as the current schema has it, for comparison
    known = MetadataRequest(
        topics=(MetadataRequestTopic(name="wire-tagged"),),  # type: ignore[arg-type]
        allow_auto_topic_creation=True,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )
    frames = [
        newer_header + encode(NewerMetadataRequest, newer),
        request_header(3, 9, 8) + encode(MetadataRequest, known),
        api_versions(9),
    ]
    assert b"more" in frames[0] and b"header extra" in frames[0]  # the tags are on the wire
    answers, _ = exchange(bootstrap, frames)
    assert len(answers) == 3
    first = metadata_answer(answers[0], 7)
    assert [t.name for t in first.topics] == ["wire-tagged", "wire-tagged-2"]
    assert all(t.error_code == ErrorCode.none and len(t.partitions) == 4 for t in first.topics)
    second = metadata_answer(answers[1], 8)
    assert [t.name for t in second.topics] == ["wire-tagged"]
    assert answers[2][:4] == (9).to_bytes(4, "big")  # the connection is still in step


def test_a_request_that_does_not_decode_closes_after_the_answers_before_it(
    eddy: tuple[ServerProcess, str],
) -> None:
    _, bootstrap = eddy
    full = request_header(3, 9, 2) + encode(
        MetadataRequest,
        MetadataRequest(
            topics=None,
            allow_auto_topic_creation=False,
            include_cluster_authorized_operations=False,
            include_topic_authorized_operations=False,
        ),
    )
    truncated = full[:-3]
    answers, closed = exchange(bootstrap, [api_versions(1), truncated, api_versions(3)])
    assert closed
    assert len(answers) == 1 and answers[0][:4] == (1).to_bytes(4, "big")
    response, _ = entity_reader(ApiVersionsResponse)(answers[0], 4)
    assert response.error_code == ErrorCode.none
    # a frame too short to hold a header
    answers, closed = exchange(bootstrap, [api_versions(1), b"\x00\x03"])
    assert closed and len(answers) == 1


def test_apis_and_versions_eddy_does_not_speak(eddy: tuple[ServerProcess, str]) -> None:
    _, bootstrap = eddy
    # ApiVersions of a version Eddy does not speak: the v0 answer with the versions it does
    # (how clients negotiate), and the connection stays open
    answers, closed = exchange(bootstrap, [request_header(18, 99, 2), api_versions(3)])
    assert not closed and len(answers) == 2
    assert answers[0][:4] == (2).to_bytes(4, "big")
    assert int.from_bytes(answers[0][4:6], "big", signed=True) == ErrorCode.unsupported_version
    assert int.from_bytes(answers[0][6:10], "big") > 10  # the supported APIs follow
    # any other API or version Eddy does not speak: closed, as Apache Kafka does
    # (UpdateFeatures; Metadata v13)
    for frame in (request_header(57, 0, 4), request_header(3, 13, 4)):
        answers, closed = exchange(bootstrap, [api_versions(1), frame])
        assert closed and len(answers) == 1 and answers[0][:4] == (1).to_bytes(4, "big")


def test_refusals_are_logged_once_per_api_version_and_client(tmp_path: Any) -> None:
    port = free_port()
    server = start_server_process(tmp_path / "data", "--kafka-listener", f"127.0.0.1:{port}")
    try:
        for _ in range(3):
            assert exchange(f"127.0.0.1:{port}", [request_header(57, 0, 4)]) == ([], True)
        assert exchange(f"127.0.0.1:{port}", [request_header(3, 13, 4)]) == ([], True)
    finally:
        server.stop()
    lines = [line for line in server.output.splitlines() if "connection closed" in line]
    assert len(lines) == 2, server.output[-3000:]
    assert "key 57" in lines[0] and "v0" in lines[0] and "'wire-test'" in lines[0]
    assert "Metadata (key 3) v13" in lines[1]


def test_compacted_topic_refuses_keyless_records_by_index(eddy: tuple[ServerProcess, str]) -> None:
    """cleanup.policy is a list config (IncrementalAlterConfigs APPEND/SUBTRACT), and a batch
    with keyless records on a compacted topic is refused naming each of them (record_errors),
    which librdkafka reports as INVALID_RECORD, its other records as _INVALID_DIFFERENT_RECORD."""
    server, bootstrap = eddy
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("wire-compacted", 1)])["wire-compacted"].result(20)

    def alter(operation: AlterConfigOpType) -> None:
        entry = ConfigEntry("cleanup.policy", "compact", incremental_operation=operation)
        resource = ConfigResource(ResourceType.TOPIC, "wire-compacted", incremental_configs=[entry])
        for done in admin.incremental_alter_configs([resource]).values():
            done.result(20)

    def policy() -> str:
        with httpx.Client(base_url=server.base_url) as rest:
            return str(rest.get("/v1/topics/wire-compacted").json()["config"]["cleanup.policy"])

    alter(AlterConfigOpType.APPEND)
    assert policy() == "compact,delete"
    outcomes: list[str | None] = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 100})
    for i in range(6):
        producer.produce(
            "wire-compacted",
            b"v",
            key=None if i % 3 == 0 else b"k",
            partition=0,
            on_delivery=lambda err, _msg: outcomes.append(err.name() if err else None),
        )
    assert producer.flush(20) == 0
    assert sorted(outcomes, key=str) == sorted(
        ["INVALID_RECORD"] * 2 + ["_INVALID_DIFFERENT_RECORD"] * 4, key=str
    )
    alter(AlterConfigOpType.SUBTRACT)
    assert policy() == "delete"

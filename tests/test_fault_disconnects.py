"""Fault injection: clients that vanish at a random byte of their request (head, body, WebSocket
handshake or frame), by closing or by resetting. The server must count no 500, log no error,
hold no descriptor for them afterwards, and keep serving."""

from __future__ import annotations

import json
import random
import re
import socket
import struct
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess, start_server_process, wait_until
from tests.faults import STARTUP, open_fds, trials
from tests.rawhttp import WEBSOCKET_UPGRADE, connect, json_post, request_head

CUTS_PER_TRIAL = 150


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start_server_process(
        tmp_path_factory.mktemp("cuts") / "data", startup_timeout=STARTUP
    )
    yield running
    assert running.stop() == 0
    for bad in ("Traceback", "unhandled error", "ERROR"):
        assert bad not in running.output, running.output


def masked_text_frame(text: str, rng: random.Random) -> bytes:
    payload = text.encode()
    mask = rng.randbytes(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if len(payload) < 126:
        length = bytes([0x80 | len(payload)])
    else:
        length = bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return b"\x81" + length + mask + masked


def produce_request(rng: random.Random) -> bytes:
    records = [{"key": f"k{i}", "value": "v" * rng.randrange(1, 400)} for i in range(5)]
    return json_post("/v1/topics/cuts/records", {"records": records})


def create_request(rng: random.Random) -> bytes:
    return json_post("/v1/topics", {"name": f"cut-{rng.randrange(10**6)}", "partitions": 2})


def publish_session(rng: random.Random) -> bytes:
    frames = b"".join(
        masked_text_frame(json.dumps({"id": i, "value": "x" * rng.randrange(300)}), rng)
        for i in range(3)
    )
    return request_head("GET", "/v1/topics/cuts/publish", WEBSOCKET_UPGRADE) + frames


def subscribe_session(rng: random.Random) -> bytes:
    return request_head("GET", "/v1/topics/cuts/ws?from=earliest", WEBSOCKET_UPGRADE)


KINDS = [produce_request, create_request, publish_session, subscribe_session]


def cut(server: ServerProcess, data: bytes, at: int, reset: bool) -> None:
    """Send `data[:at]` and vanish (FIN, or RST when `reset`)."""
    with connect(server.base_url) as sock:
        sock.sendall(data[:at])
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def server_errors(client: httpx.Client) -> list[str]:
    text = client.get("/metrics").text
    return re.findall(r'^eddy_http_request_duration_seconds_count\{.*status="5\d\d".*$', text, re.M)


@pytest.mark.parametrize("trial", trials(in_ci=1))
def test_clients_vanishing_mid_request_leave_nothing_behind(
    server: ServerProcess, trial: int
) -> None:
    rng = random.Random(trial)
    pid = server.process.pid
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.post("/v1/topics/cuts/records", json={"value": "first"}).is_success
        baseline = open_fds(pid)
        for _ in range(CUTS_PER_TRIAL):
            data = rng.choice(KINDS)(rng)
            cut(server, data, rng.randrange(1, len(data)), reset=rng.random() < 0.3)
        # Every connection is gone from the server once it noticed (WebSockets: at once, or
        # by the ping timeout for half-opened ones; at most the head deadline otherwise).
        wait_until(lambda: open_fds(pid) <= baseline + 5, timeout=30)
        assert server_errors(client) == []
        assert client.get("/readyz").status_code == 200
        after = client.post("/v1/topics/cuts/records", json={"value": "after"})
        assert after.status_code == 200, after.text

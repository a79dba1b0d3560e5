"""Every 44xx close is preceded by an `error` frame (code, message, details) and carries a short
human-readable reason (at most 123 bytes of UTF-8): bad parameters, missing or deleted topics
(plain subscribers, group members, publishers), unknown routes, missing, expired and
insufficient credentials, a disallowed origin, and slow consumers (also the keyless records
`on_slow=conflate` cannot conflate). Real server, real clients; the slow ones speak WebSocket
through websockets' sans-I/O protocol over a socket that is never read until the end."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin
from websockets.uri import parse_uri

from tests.conftest import RunningServer, serve_in_thread, wait_until
from tests.test_access import AUTH_FILE, KEYS, SECRET

MAX_REASON_BYTES = 123


def error_then_close(ws: ClientConnection, timeout: float = 15) -> tuple[dict[str, Any], int]:
    """Read to the close; the last frame must be an error, and the close must say why."""
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(json.loads(ws.recv(timeout=timeout)))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "no close frame"
        code, reason = closed.rcvd.code, closed.rcvd.reason
    return check_error_then_close(frames, code, reason)


def check_error_then_close(
    frames: list[dict[str, Any]], code: int, reason: str
) -> tuple[dict[str, Any], int]:
    assert 4400 <= code < 4500, code
    assert frames, f"close {code} without any frame before it"
    error = frames[-1]
    assert error["type"] == "error", f"close {code} right after {error}"
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert reason, f"close {code} without a reason"
    assert len(reason.encode()) <= MAX_REASON_BYTES
    return error, code


def subscribe(server: RunningServer, path: str, **kwargs: Any) -> ClientConnection:
    ws: ClientConnection = connect(f"{server.ws_url}{path}", open_timeout=15, **kwargs)
    return ws


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?max_rate=0", "invalid_request"),
        ("?max_rate=-3", "invalid_request"),
        ("?max_rate=fast", "invalid_request"),
        ("?max_rate=nan", "invalid_request"),
        ("?on_slow=drop", "invalid_request"),
        ("?since=yesterday", "invalid_request"),
        ("?since=-1", "invalid_request"),
        ("?offsets=0:99", "offset_out_of_range"),
        ("?partitions=7", "partition_not_found"),
        ("?" + "x" * 300 + "=1", "invalid_request"),  # a reason longer than a close frame holds
        ("?" + "é" * 200 + "=1", "invalid_request"),  # ...cut at a character boundary
    ],
)
def test_bad_parameters_close_4400_after_an_error_frame(
    server: RunningServer, query: str, code: str
) -> None:
    with subscribe(server, f"/v1/topics/params/ws{query}") as ws:
        error, close = error_then_close(ws)
    assert (error["code"], close) == (code, 4400)


def test_missing_deleted_and_unrouted_close_4404_after_an_error_frame(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "d", auto_create_topics=False) as server,
        server.client() as client,
    ):
        with subscribe(server, "/v1/topics/missing/ws") as ws:
            error, close = error_then_close(ws)
            assert (error["code"], close) == ("topic_not_found", 4404)
        with subscribe(server, "/v1/no/such/route") as ws:
            error, close = error_then_close(ws)
            assert (error["code"], close) == ("not_found", 4404)

        assert client.post("/v1/topics", json={"name": "doomed"}).status_code == 201
        with (
            subscribe(server, "/v1/topics/doomed/ws") as plain,
            subscribe(server, "/v1/topics/doomed/ws?group=g&on_slow=conflate") as member,
            subscribe(server, "/v1/topics/doomed/ws?max_rate=5") as paced,
            subscribe(server, "/v1/topics/doomed/publish") as publisher,
        ):
            assert json.loads(plain.recv(timeout=10))["type"] == "subscribed"
            assert json.loads(member.recv(timeout=10))["type"] == "assignment"
            assert json.loads(paced.recv(timeout=10))["type"] == "subscribed"
            assert client.delete("/v1/topics/doomed").status_code == 204
            for ws in (plain, member, paced, publisher):
                error, close = error_then_close(ws)
                assert (error["code"], close) == ("topic_not_found", 4404)


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[RunningServer]:
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH_FILE)
    with serve_in_thread(tmp_path / "data", auth_file=auth, auth_recheck_interval=0.2) as server:
        admin = {"Authorization": f"Bearer {KEYS['admin']}"}
        with httpx.Client(base_url=server.base_url, headers=admin) as client:
            for name in ("prices", "secret"):
                assert client.post("/v1/topics", json={"name": name}).status_code == 201
        yield server


def test_credentials_close_4401_and_4403_after_an_error_frame(auth_server: RunningServer) -> None:
    reader = f"token={KEYS['reader']}"
    cases = [
        ("/v1/topics/prices/ws", {}, "unauthorized", 4401),
        ("/v1/topics/prices/ws?token=not-a-key", {}, "unauthorized", 4401),
        (f"/v1/topics/secret/ws?{reader}", {}, "forbidden", 4403),
        (f"/v1/topics/prices/ws?group=not-mine&{reader}", {}, "forbidden", 4403),
        (f"/v1/topics/prices/publish?{reader}", {}, "forbidden", 4403),
        (
            f"/v1/topics/prices/ws?{reader}",
            {"origin": Origin("https://evil.example")},
            "forbidden",
            4403,
        ),
    ]
    for path, extra, code, close in cases:
        with subscribe(auth_server, path, **extra) as ws:
            error, got = error_then_close(ws)
        assert (error["code"], got) == (code, close), path


@pytest.mark.parametrize("query", ["", "?group=g1", "?max_rate=10&on_slow=conflate"])
def test_an_expiring_token_closes_4401_after_an_error_frame(
    auth_server: RunningServer, query: str
) -> None:
    token = jwt.encode(
        {
            "sub": "phone",
            "exp": int(time.time()) + 2,
            "eddy": {"read": ["prices"], "groups": ["g*"]},
        },
        SECRET,
    )
    sep = "&" if query else "?"
    with subscribe(auth_server, f"/v1/topics/prices/ws{query}{sep}token={token}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] in ("subscribed", "assignment")
        error, close = error_then_close(ws)
    assert (error["code"], close) == ("unauthorized", 4401)


# --- slow consumers: a client that does not read -------------------------------------------
@contextmanager
def unread_websocket(server: RunningServer, path: str) -> Iterator[tuple[socket.socket, Any]]:
    """A WebSocket client (websockets' sans-I/O protocol) over a socket with a tiny receive
    buffer that is not read until the test says so."""
    protocol = ClientProtocol(parse_uri(f"{server.ws_url}{path}"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    sock.settimeout(20)
    response = None
    while response is None:
        protocol.receive_data(sock.recv(1))  # byte by byte: leave the frames in the socket
        for event in protocol.events_received():
            assert isinstance(event, Response) and event.status_code == 101, event
            response = event
    try:
        yield sock, protocol
    finally:
        sock.close()


def read_to_close(sock: socket.socket, protocol: Any) -> tuple[list[dict[str, Any]], int, str]:
    """Read everything the server sent up to its close frame."""
    frames: list[dict[str, Any]] = []
    while True:
        data = sock.recv(65536)
        protocol.receive_data(data)
        for event in protocol.events_received():
            assert isinstance(event, Frame)
            payload = bytes(event.data)
            if event.opcode is Opcode.TEXT:
                frames.append(json.loads(payload))
            elif event.opcode is Opcode.CLOSE:
                return frames, int.from_bytes(payload[:2], "big"), payload[2:].decode()
        if not data:
            raise AssertionError("connection ended without a close frame")


@pytest.mark.parametrize(
    ("query", "records"),
    [
        ("", [{"key": "k", "value": "x" * 10_000} for _ in range(20)]),  # on_slow=close
        ("?on_slow=conflate", [{"value": "x" * 1000} for _ in range(20)]),  # keyless overflow
    ],
    ids=["close", "conflate-keyless"],
)
def test_slow_consumers_close_4408_after_an_error_frame(
    tmp_path: Path, query: str, records: list[dict[str, Any]]
) -> None:
    with (
        serve_in_thread(tmp_path / "d", ws_buffer_bytes=16 * 1024) as server,
        server.client() as client,
    ):
        client.post("/v1/topics", json={"name": "flood", "partitions": 1})
        with unread_websocket(server, f"/v1/topics/flood/ws{query}") as (sock, protocol):

            def closed() -> bool:
                response = client.post("/v1/topics/flood/records", json={"records": records})
                assert response.status_code == 200
                return "eddy_slow_consumer_closes_total 1.0" in client.get("/metrics").text

            assert wait_until(closed, timeout=60), "the slow consumer was never closed"
            frames, code, reason = read_to_close(sock, protocol)
        error, _ = check_error_then_close(frames, code, reason)
        assert (error["code"], code) == ("slow_consumer", 4408)
        assert error["details"] == {"limit_bytes": 16 * 1024}

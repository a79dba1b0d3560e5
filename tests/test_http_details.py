"""HEAD on every GET route (app/head.py), and the request id on every error the server sends,
the HTTP protocol layer's own 400/408/431 included, over raw sockets against a real server."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, serve_in_thread, wait_until
from tests.rawhttp import (
    WEBSOCKET_UPGRADE,
    RawResponse,
    connect,
    exchange,
    parse_response,
    read_until_closed,
    request_head,
)

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
# Not in the OpenAPI document, served too.
OTHER_GETS = [
    "/",
    "/docs",
    "/static/asyncapi.html",
    "/asyncapi.yaml",
    "/openapi.json",
    "/static/eddy.js",
]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(tmp_path / "data", head_timeout=1.0, max_headers=50) as server:
        with server.client() as rest:
            assert rest.post("/v1/topics", json={"name": "t", "partitions": 1}).status_code == 201
            assert rest.post("/v1/topics/t/records", json={"value": 1}).status_code == 200
            commit = {"topic": "t", "offsets": {"0": 1}}
            assert rest.post("/v1/groups/g/offsets", json=commit).status_code == 200
        yield server


def _read_head(sock: socket.socket) -> tuple[RawResponse, bytes]:
    """One response head from `sock`, and the bytes that came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return parse_response(head + b"\r\n\r\n", False), rest


def head_then_get(server: RunningServer, path: str) -> tuple[RawResponse, RawResponse]:
    """HEAD `path`, then GET /healthz on the same connection: the HEAD's answer, and the
    GET's (which would be garbled if the HEAD had sent body bytes)."""
    with connect(server.base_url) as sock:
        sock.sendall(request_head("HEAD", path, {"Accept-Encoding": "gzip"}))
        head, extra = _read_head(sock)
        sock.sendall(request_head("GET", "/healthz", {"Connection": "close"}))
        data, closed = read_until_closed(sock)
    return head, parse_response(extra + data, closed)


def get(server: RunningServer, path: str) -> RawResponse:
    """GET `path` (only its head is read: an event stream does not end)."""
    with connect(server.base_url) as sock:
        sock.sendall(request_head("GET", path, {"Accept-Encoding": "gzip"}))
        response, _ = _read_head(sock)
    return response


def test_every_get_route_answers_head_with_the_gets_headers_and_no_body(
    running: RunningServer,
) -> None:
    spec = running.app.openapi()
    paths = [p for p, operations in spec["paths"].items() if "get" in operations]
    assert len(paths) >= 10
    concrete = [
        p.replace("{topic}", "t").replace("{partition}", "0").replace("{group}", "g") for p in paths
    ]
    for path in concrete + OTHER_GETS:
        if path.endswith("/records"):
            path += "?offset=0"
        if path.endswith("/offsets"):
            path += "?timestamp=0"
        head, after = head_then_get(running, path)
        assert after.status == 200 and after.json() == {"status": "ok"}, path  # no body bytes
        full = get(running, path)
        assert head.status == full.status == 200, (path, head.status, full.status)
        for name in ("content-type", "content-encoding"):
            assert head.headers.get(name) == full.headers.get(name), (path, name)
        if path != "/metrics":  # its numbers move between the two requests
            assert head.headers.get("content-length") == full.headers.get("content-length"), path
        assert head.headers["x-request-id"] != full.headers["x-request-id"]


def test_head_of_an_event_stream_ends_at_once(running: RunningServer) -> None:
    head, after = head_then_get(running, "/v1/topics/t/events?from=earliest")
    assert head.status == 200 and head.headers["content-type"].startswith("text/event-stream")
    assert after.status == 200

    def streams_open() -> bool:
        with running.client() as rest:
            metrics = rest.get("/metrics").text
        match = re.search(r'eddy_websockets_open\{endpoint="sse"\} (\S+)', metrics)
        return match is None or float(match.group(1)) == 0

    wait_until(streams_open)  # the stream the HEAD started is gone


def test_head_on_a_path_without_get_is_405_and_allow_lists_head_beside_get(
    running: RunningServer,
) -> None:
    head, _ = head_then_get(running, "/v1/topics/t/records")
    assert head.status == 405 and head.headers["allow"] == "POST"
    refused = exchange(running.base_url, request_head("PUT", "/v1/topics", {"Connection": "close"}))
    assert refused.status == 405
    assert refused.headers["allow"] == "GET, HEAD, POST"
    assert refused.json()["error"]["details"]["allowed"] == ["GET", "HEAD", "POST"]


def test_the_protocol_layers_own_errors_carry_the_request_id(running: RunningServer) -> None:
    many = {f"X-H{i}": "1" for i in range(60)}
    given = exchange(
        running.base_url, request_head("GET", "/healthz", {"X-Request-ID": "trace-42", **many})
    )
    assert given.status == 431 and given.headers["x-request-id"] == "trace-42"
    insane = exchange(
        running.base_url, request_head("GET", "/healthz", {"X-Request-ID": "a b", **many})
    )
    assert insane.status == 431 and GENERATED_ID.fullmatch(insane.headers["x-request-id"])

    garbage = exchange(running.base_url, b"NOT HTTP AT ALL\r\n\r\n")
    assert garbage.status == 400 and GENERATED_ID.fullmatch(garbage.headers["x-request-id"])

    with connect(running.base_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Request-ID: slow-1\r\nHo")
        data, closed = read_until_closed(sock)
    slow = parse_response(data, closed)
    assert slow.status == 408 and slow.headers["x-request-id"] == "slow-1"
    ids = {r.headers["x-request-id"] for r in (insane, garbage)}
    assert len(ids) == 2  # new ones, each its own


def test_a_websocket_upgrade_the_handshake_refuses_gets_a_json_400_with_the_id(
    running: RunningServer,
) -> None:
    for headers in (
        {**WEBSOCKET_UPGRADE, "Sec-WebSocket-Key": "not base64"},
        {"Upgrade": "websocket", "Connection": "Upgrade"},  # no key, no version
    ):
        request = request_head("GET", "/v1/topics/t/ws", {**headers, "X-Request-ID": "up-1"})
        refused = exchange(running.base_url, request)
        assert refused.status == 400 and refused.headers["x-request-id"] == "up-1"
        error = refused.json()["error"]
        assert error["code"] == "malformed_request" and "Sec-WebSocket-Key" in error["message"]
    unnamed = exchange(running.base_url, request_head("GET", "/v1/topics/t/ws", headers))
    assert GENERATED_ID.fullmatch(unnamed.headers["x-request-id"])


def test_app_errors_carry_the_request_id(running: RunningServer) -> None:
    for request in (
        request_head("GET", "/v1/topics/missing", {"X-Request-ID": "r-1", "Connection": "close"}),
        request_head("DELETE", "/healthz", {"X-Request-ID": "r-1", "Connection": "close"}),
    ):
        response = exchange(running.base_url, request)
        assert response.status in (404, 405) and response.headers["x-request-id"] == "r-1"

"""The bounded request head (app/http_protocol.py) against a real server, over raw sockets:
size and header-count limits (431), the head deadline (408 / close), WebSocket upgrades the
handshake parser would stall on (431), HTTP/1.0 with Transfer-Encoding (400)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eddy.app.http_protocol import head_size, websocket_head_problem
from tests.conftest import RunningServer, serve_in_thread, wait_until
from tests.rawhttp import (
    WEBSOCKET_UPGRADE,
    connect,
    exchange,
    parse_response,
    read_one_response,
    read_until_closed,
    request_head,
)

HEAD_TIMEOUT = 1.0


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(
        tmp_path / "data", head_timeout=HEAD_TIMEOUT, max_header_bytes=16_384, max_headers=50
    ) as running:
        yield running


def assert_error(response_status: int, body: dict[str, object], status: int, code: str) -> None:
    assert response_status == status
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["message"]


# --- pure helpers ----------------------------------------------------------------------------
def test_head_size_counts_request_line_and_header_lines() -> None:
    headers = [(b"host", b"x"), (b"accept", b"*/*")]
    raw = request_head("GET", "/healthz", {"accept": "*/*"})
    assert head_size(b"/healthz", headers) >= len(raw) - 4  # within the slack of the version


def test_websocket_head_problem_names_the_handshake_parsers_limits() -> None:
    fine = [(b"host", b"x"), (b"upgrade", b"websocket")]
    assert websocket_head_problem(b"GET", b"/ws", fine) is None
    assert "header line" in str(websocket_head_problem(b"GET", b"/ws", [(b"x", b"y" * 9000)]))
    assert "request line" in str(websocket_head_problem(b"GET", b"/" + b"a" * 9000, fine))
    many = [(b"x-%d" % i, b"1") for i in range(200)]
    assert "headers" in str(websocket_head_problem(b"GET", b"/ws", many))


# --- size and count --------------------------------------------------------------------------
def test_a_head_over_the_byte_limit_gets_431_and_close(limited: RunningServer) -> None:
    response = exchange(limited.base_url, request_head("GET", "/healthz", {"X-Big": "a" * 20_000}))
    assert_error(response.status, response.json(), 431, "headers_too_large")
    assert response.headers["connection"] == "close"
    assert response.closed


def test_too_many_headers_get_431(limited: RunningServer) -> None:
    headers = {f"X-H{i}": "1" for i in range(60)}
    response = exchange(limited.base_url, request_head("GET", "/healthz", headers))
    assert_error(response.status, response.json(), 431, "headers_too_large")
    assert response.json()["error"]["details"] == {"max_headers": 50}


def test_an_unterminated_header_line_is_refused_once_it_passes_the_limit(
    limited: RunningServer,
) -> None:
    """8 MiB of one header line that never ends: refused after the limit, not buffered."""
    request = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Endless: " + b"a" * (8 << 20)
    response = exchange(limited.base_url, request)
    assert_error(response.status, response.json(), 431, "headers_too_large")
    assert response.closed


def test_an_unfinished_head_over_the_limit_is_refused_without_waiting_for_more(
    limited: RunningServer,
) -> None:
    """20 KB of head in one write, then nothing: 431 (not the deadline's 408)."""
    with connect(limited.base_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 20_000)
        data, closed = read_until_closed(sock)
    assert parse_response(data, closed).status == 431
    assert closed


def test_heads_within_the_limits_are_served(limited: RunningServer) -> None:
    headers = {**{f"X-H{i}": "1" for i in range(40)}, "X-Big": "b" * 12_000, "Connection": "close"}
    response = exchange(limited.base_url, request_head("GET", "/healthz", headers))
    assert response.status == 200
    assert response.json() == {"status": "ok"}


def test_pipelined_requests_are_each_answered(limited: RunningServer) -> None:
    first = request_head("GET", "/healthz")
    last = request_head("GET", "/healthz", {"Connection": "close"})
    with connect(limited.base_url) as sock:
        sock.sendall(first + last)
        data, closed = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert closed


# --- deadline (slowloris) --------------------------------------------------------------------
def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed (EOF or reset), reading whatever it sent first."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_slowloris_connections_are_all_closed_while_others_are_served(
    limited: RunningServer,
) -> None:
    """200 connections that trickle a head and never finish it are closed after the deadline;
    a normal client is answered throughout."""
    loris = [connect(limited.base_url) for _ in range(200)]
    try:
        for sock in loris:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        with httpx.Client(base_url=limited.base_url, timeout=5) as client:
            assert client.get("/healthz").status_code == 200
        # Keep trickling: a byte now and then must not extend the deadline.
        open_ = list(loris)
        while open_:
            for sock in open_:
                with contextlib.suppress(OSError):
                    sock.sendall(b"a")
            open_ = [s for s in open_ if not _closed_by_server(s)]
            if open_:
                time.sleep(0.1)
            with httpx.Client(base_url=limited.base_url, timeout=5) as client:
                assert client.get("/healthz").status_code == 200
    finally:
        for sock in loris:
            sock.close()


def test_a_trickled_head_gets_408(limited: RunningServer) -> None:
    with connect(limited.base_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        data, closed = read_until_closed(sock)
    response = parse_response(data, closed)
    assert_error(response.status, response.json(), 408, "request_timeout")
    assert closed


def test_a_connection_that_sends_nothing_is_closed_silently(limited: RunningServer) -> None:
    with connect(limited.base_url) as sock:
        data, closed = read_until_closed(sock)
    assert (data, closed) == (b"", True)


def test_the_deadline_applies_to_later_requests_on_a_kept_alive_connection(
    limited: RunningServer,
) -> None:
    with connect(limited.base_url) as sock:
        sock.sendall(request_head("GET", "/healthz"))
        assert read_one_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next head starts and stalls
        data, closed = read_until_closed(sock)
    assert parse_response(data, closed).status == 408
    assert closed


def test_blank_lines_between_requests_do_not_keep_a_connection_open(
    limited: RunningServer,
) -> None:
    with connect(limited.base_url) as sock:
        sock.sendall(request_head("GET", "/healthz"))
        assert read_one_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"\r\n")  # cancels uvicorn's keep-alive timer, starts no head
        _, closed = read_until_closed(sock)
    assert closed


# --- WebSocket upgrades and framing ----------------------------------------------------------
def test_an_oversized_websocket_upgrade_gets_431_and_close(limited: RunningServer) -> None:
    headers = {**WEBSOCKET_UPGRADE, "X-Big": "b" * 9_000}
    response = exchange(limited.base_url, request_head("GET", "/v1/topics/t/ws", headers))
    assert_error(response.status, response.json(), 431, "headers_too_large")
    assert response.closed


def test_a_websocket_upgrade_within_the_limits_still_works(limited: RunningServer) -> None:
    with connect(limited.base_url) as sock:
        sock.sendall(request_head("GET", "/v1/topics/t/ws", WEBSOCKET_UPGRADE))
        answer = wait_until(lambda: sock.recv(65536))
    assert answer.startswith(b"HTTP/1.1 101")


def test_http_1_0_with_transfer_encoding_is_refused(limited: RunningServer) -> None:
    request = request_head(
        "POST",
        "/v1/topics/t/records",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        version="1.0",
    )
    response = exchange(limited.base_url, request + b"0\r\n\r\n")
    assert_error(response.status, response.json(), 400, "malformed_request")
    assert response.closed


def test_garbage_gets_a_json_400(limited: RunningServer) -> None:
    response = exchange(limited.base_url, b"NOT HTTP AT ALL\r\n\r\n")
    assert_error(response.status, response.json(), 400, "malformed_request")

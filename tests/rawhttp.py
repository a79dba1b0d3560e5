"""Raw-socket HTTP for tests that must send what no HTTP client library would (oversized or
unfinished heads, bad framing) and see exactly what the server answers and when it closes."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after the response

    def json(self) -> Any:
        return json.loads(self.body)


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def connect(base_url: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address(base_url), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> tuple[bytes, bool]:
    """Everything the server sends until it closes; (data, closed). A reset counts as closed."""
    data = b""
    try:
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except TimeoutError:
        return data, False
    return data, False


def read_one_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length body, however the server's writes were split
    into segments (a head and its body can arrive in separate reads)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole body: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def parse_response(data: bytes, closed: bool) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), f"not an HTTP response: {data[:200]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), headers, body, closed)


def exchange(base_url: str, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send `request` (while reading, so a server that answers early is heard) and return the
    server's answer once it closes the connection."""
    with connect(base_url, timeout) as sock:
        sender = threading.Thread(target=_send_quietly, args=(sock, request), daemon=True)
        sender.start()
        data, closed = read_until_closed(sock)
        sender.join(timeout)
        return parse_response(data, closed)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """sendall that stops when the server has closed (it may refuse before reading it all)."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


def request_head(
    method: str, path: str, headers: dict[str, str] | None = None, version: str = "1.1"
) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def json_post(path: str, body: object, **headers: str) -> bytes:
    """A complete POST request with a JSON body (to send whole, or cut short)."""
    data = json.dumps(body).encode()
    head = request_head(
        "POST",
        path,
        {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers},
    )
    return head + data


WEBSOCKET_UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def websocket_refusal(url: str) -> tuple[dict[str, Any], int | None]:
    """Open a WebSocket the server refuses after accepting it: (its error frame, close code)."""
    with ws_connect(url) as ws:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=10))
        try:
            extra = ws.recv(timeout=10)
        except ConnectionClosed as closed:
            return frame, closed.rcvd.code if closed.rcvd is not None else None
    raise AssertionError(f"the connection stayed open and sent {extra!r}")

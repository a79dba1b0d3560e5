"""Clients that leave early are not server errors, and WebSockets to unknown paths get a close
code (4404) rather than an HTTP refusal."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from tests.conftest import RunningServer, wait_until
from tests.rawhttp import connect, request_head, websocket_refusal


def request_counts(client: httpx.Client, method: str, route: str) -> dict[str, float]:
    """status -> requests counted in eddy_http_request_duration_seconds for that route."""
    pattern = re.compile(
        r'^eddy_http_request_duration_seconds_count\{method="(\w+)",route="([^"]*)",'
        r'status="(\d+)"\} (\S+)$',
        re.MULTILINE,
    )
    return {
        status: float(count)
        for m, r, status, count in pattern.findall(client.get("/metrics").text)
        if (m, r) == (method, route)
    }


def leave_mid_body(server: RunningServer, path: str) -> None:
    head = request_head(
        "POST", path, {"Content-Type": "application/json", "Content-Length": "1000"}
    )
    with connect(server.base_url) as sock:
        sock.sendall(head + b'{"records": [{"value": ')


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/topics/t/records", "/v1/topics/{topic}/records"),  # Eddy reads the body itself
        ("/v1/topics", "/v1/topics"),  # FastAPI parses the JSON body
    ],
)
def test_a_client_leaving_mid_body_is_not_a_server_error(
    server: RunningServer,
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
    path: str,
    route: str,
) -> None:
    leave_mid_body(server, path)
    counts = wait_until(lambda: request_counts(client, "POST", route))
    assert counts == {"499": 1.0}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # and the server is fine
    produced = client.post("/v1/topics/t/records", json={"records": [{"value": 1}]})
    assert produced.status_code == 200


@pytest.mark.parametrize("path", ["/nowhere", "/healthz", "/v1/topics/t/ws/extra", "/static/x"])
def test_a_websocket_to_an_unmatched_path_is_closed_with_4404(
    server: RunningServer, path: str
) -> None:
    frame, code = websocket_refusal(server.ws_url + path)
    assert (frame["type"], frame["code"], code) == ("error", "not_found", 4404)


def test_a_client_vanishing_mid_websocket_leaves_no_error(
    server: RunningServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with connect(server.base_url) as sock:  # a publisher that drops its TCP connection
        sock.sendall(
            request_head(
                "GET",
                "/v1/topics/t/publish",
                {
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version": "13",
                },
            )
        )
        assert wait_until(lambda: sock.recv(65536)).startswith(b"HTTP/1.1 101")
        sock.sendall(b"\x81\xfe\x00\x40")  # the start of a masked 64-byte text frame, then gone
    wait_until(
        lambda: 'eddy_websockets_open{endpoint="publish"} 0.0' in client.get("/metrics").text
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert client.get("/readyz").status_code == 200

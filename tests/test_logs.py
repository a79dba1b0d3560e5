"""Logs of a real server process: JSON lines, request ids, the access log, and no token ever."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from eddy.app.logs import CallFilter, formatter, redact
from eddy.app.request_log import request_id_of
from eddy.models.context import Call, current_call
from tests.conftest import start_server_process
from tests.rawhttp import exchange

API_KEY = "sekrit-api-key-0123456789"
WRONG_KEY = "wrong-key-9876543210"
QUERY_TOKEN = "query-token-55555"


def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth.toml"
    path.write_text(
        f"""
[[principals]]
name = "pricing"
key_sha256 = "{hashlib.sha256(API_KEY.encode()).hexdigest()}"
read = ["*"]
write = ["*"]
admin = ["*"]
"""
    )
    return path


def test_json_logs_with_request_ids_and_an_access_log_never_show_tokens(tmp_path: Path) -> None:
    server = start_server_process(
        tmp_path / "d",
        "--log-format",
        "json",
        "--access-log",
        "--log-level",
        "debug",
        "--auth-file",
        str(auth_file(tmp_path)),
    )
    try:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            produced = c.post(
                f"/v1/topics/prices/records?token={QUERY_TOKEN}",
                json={"value": 1},
                headers={**auth, "X-Request-ID": "req-produce-1"},
            )
            assert produced.status_code == 200, produced.text
            assert produced.headers["x-request-id"] == "req-produce-1"
            listed = c.get("/v1/topics", headers=auth)
            generated = listed.headers["x-request-id"]
            assert len(generated) == 32
            insane = c.get("/v1/topics", headers={**auth, "X-Request-ID": "a b\tc"})
            assert insane.headers["x-request-id"] != "a b\tc"  # replaced, not echoed
            refused = c.get("/v1/topics", headers={"Authorization": f"Bearer {WRONG_KEY}"})
            assert refused.status_code == 401
            fetched = c.get(
                f"/v1/topics/prices/partitions/0/records?token={QUERY_TOKEN}", headers=auth
            )
            assert fetched.status_code == 200
        url = f"{server.ws_url}/v1/topics/prices/ws?token={API_KEY}"
        with connect(url, additional_headers={"X-Request-ID": "req-ws-1"}) as ws:
            assert ws.response is not None
            assert ws.response.headers["x-request-id"] == "req-ws-1"
            assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        # uvicorn's own warning for this goes through the same JSON formatter.
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
        upgrade_h2c = head + b"Connection: close, Upgrade\r\n\r\n"
        assert exchange(server.base_url, upgrade_h2c).status == 200
        with connect(f"{server.ws_url}/v1/topics/prices/ws?token={WRONG_KEY}") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "error"
            with contextlib.suppress(ConnectionClosed):
                ws.recv(timeout=10)  # the close (4401) follows the error frame
    finally:
        assert server.stop() == 0
    lines = [line for line in server.output.splitlines() if line.strip()]
    assert lines
    records: list[dict[str, Any]] = []
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        records.append(record)
    for secret in (API_KEY, WRONG_KEY, QUERY_TOKEN):
        assert secret not in server.output

    assert any(r["logger"] == "uvicorn.error" and r["level"] == "WARNING" for r in records)
    access = [r for r in records if r["logger"] == "eddy.access"]
    produce = next(r for r in access if r["request_id"] == "req-produce-1")
    assert produce["method"] == "POST" and produce["status"] == 200
    assert produce["path"] == "/v1/topics/prices/records"  # no query string
    assert produce["principal"] == "pricing" and produce["duration_ms"] >= 0
    assert any(r["request_id"] == generated and r["path"] == "/v1/topics" for r in access)
    assert any(r["status"] == 401 and r["principal"] is None for r in access)
    upgrade = next(r for r in access if r["request_id"] == "req-ws-1")
    assert upgrade["method"] == "WS" and upgrade["status"] == 101
    assert upgrade["path"] == "/v1/topics/prices/ws" and upgrade["principal"] == "pricing"
    # What is logged while serving a request carries its id (the auto-create, the audit).
    created = [r for r in records if r["message"].startswith("created topic prices")]
    assert created and created[0]["request_id"] == "req-produce-1"
    failures = [
        r for r in records if r["logger"] == "eddy.audit" and "auth failure" in r["message"]
    ]
    assert len(failures) == 2 and all(r.get("request_id") for r in failures)


def test_text_logs_are_the_default(tmp_path: Path) -> None:
    server = start_server_process(tmp_path / "d")
    try:
        assert httpx.get(f"{server.base_url}/v1/topics").status_code == 200
    finally:
        server.stop()
    listening = next(line for line in server.output.splitlines() if "listening on" in line)
    assert " INFO eddy: Eddy listening on http://127.0.0.1:" in listening
    assert "eddy.access" not in server.output  # the access log is off by default


def test_request_ids_from_clients_are_taken_only_when_sane() -> None:
    def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
        return {"headers": list(headers)}

    assert request_id_of(scope((b"x-request-id", b"abc-123_X.y:z/+=@"))) == "abc-123_X.y:z/+=@"
    for bad in (b"", b"a b", b"x" * 129, b"caf\xc3\xa9", b"a\nb"):
        generated = request_id_of(scope((b"x-request-id", bad)))
        assert len(generated) == 32 and int(generated, 16) >= 0
    assert request_id_of(scope()) != request_id_of(scope())


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-~+/=", min_size=8))
def test_redaction_blanks_every_token_form(secret: str) -> None:
    for text in (
        f"GET /v1/topics/t/ws?token={secret} HTTP/1.1",
        f"GET /v1/topics/t/ws?a=1&token={secret}&b=2",
        f"authorization: Bearer {secret}",
        f"header BEARER {secret}",
    ):
        assert secret not in redact(text)


def test_the_filter_adds_the_request_id_and_redacts() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.WARNING, __file__, 1, "%s", ("?token=abc",), None
    )
    reset = current_call.set(Call("rid-1"))
    try:
        assert CallFilter().filter(record)
    finally:
        current_call.reset(reset)
    line = json.loads(formatter("json").format(record))
    assert line["request_id"] == "rid-1" and line["message"] == "?token=[redacted]"
    assert line["level"] == "WARNING" and line["logger"] == "uvicorn.error" and "T" in line["time"]


def test_tracebacks_are_redacted_too() -> None:
    try:
        raise ValueError("GET /v1/topics/t/ws?token=abc123secret failed")
    except ValueError:
        record = logging.LogRecord(
            "eddy", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    for fmt in ("json", "text"):
        line = formatter(fmt).format(record)
        assert "abc123secret" not in line and "token=[redacted]" in line

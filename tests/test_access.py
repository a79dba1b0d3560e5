"""Access control end to end: principals x endpoints x permissions, over REST and WebSocket."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from eddy.app.factory import create_app
from eddy.app.settings import Settings
from tests.conftest import RunningServer, serve_in_thread, wait_until

SECRET = "test-secret-that-is-at-least-32-characters"
KEYS = {
    "reader": "key-reader",
    "writer": "key-writer",
    "admin": "key-admin",
    "nobody": "key-nobody",
    "creator": "key-creator",
    "writer2": "key-writer2",
}


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


AUTH_FILE = f"""
[[principals]]
name = "reader"
key_sha256 = "{sha(KEYS["reader"])}"
read = ["prices*"]
groups = ["g*"]

[[principals]]
name = "writer"
key_sha256 = "{sha(KEYS["writer"])}"
write = ["prices"]

[[principals]]
name = "admin"
key_sha256 = "{sha(KEYS["admin"])}"
admin = ["*"]

[[principals]]
name = "nobody"
key_sha256 = "{sha(KEYS["nobody"])}"

[[principals]]
name = "creator"
key_sha256 = "{sha(KEYS["creator"])}"
write = ["auto*"]
admin = ["auto*"]

[[principals]]
name = "writer2"
key_sha256 = "{sha(KEYS["writer2"])}"
write = ["auto*"]

[anonymous]
read = ["public*"]

[jwt]
hs256_secret = "{SECRET}"
"""


def headers(who: str) -> dict[str, str]:
    if who == "anonymous":
        return {}
    if who == "badkey":
        return {"Authorization": "Bearer not-a-key"}
    return {"Authorization": f"Bearer {KEYS[who]}"}


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[RunningServer]:
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH_FILE)
    with serve_in_thread(tmp_path / "data", auth_file=auth, auth_recheck_interval=0.2) as server:
        with httpx.Client(base_url=server.base_url, headers=headers("admin")) as admin:
            for name in ("prices", "public.news", "secret"):
                assert admin.post("/v1/topics", json={"name": name}).status_code == 201
        with httpx.Client(base_url=server.base_url, headers=headers("writer")) as writer:
            assert writer.post("/v1/topics/prices/records", json={"value": 1}).status_code == 200
        with httpx.Client(base_url=server.base_url, headers=headers("reader")) as reader:
            committed = reader.post(
                "/v1/groups/g1/offsets", json={"topic": "prices", "offsets": {"0": 1}}
            )
            assert committed.status_code == 200
        yield server


PRINCIPALS = ["anonymous", "badkey", "reader", "writer", "admin", "nobody"]

# (name, method, path, body, principals allowed)
MATRIX: list[tuple[str, str, str, Any, set[str]]] = [
    ("create topic", "POST", "/v1/topics", {"name": "made-by-{who}"}, {"admin"}),
    ("describe topic", "GET", "/v1/topics/prices", None, {"reader"}),
    ("patch topic", "PATCH", "/v1/topics/prices", {"config": {"retention.ms": 1000}}, {"admin"}),
    ("delete topic", "DELETE", "/v1/topics/doomed-{who}", None, {"admin"}),
    ("produce", "POST", "/v1/topics/prices/records", {"value": 1}, {"writer"}),
    ("fetch", "GET", "/v1/topics/prices/partitions/0/records?offset=0", None, {"reader"}),
    (
        "offset lookup",
        "GET",
        "/v1/topics/prices/partitions/0/offsets?timestamp=0",
        None,
        {"reader"},
    ),
    ("describe group", "GET", "/v1/groups/g1", None, {"reader"}),
    (
        "commit group",
        "POST",
        "/v1/groups/g1/offsets",
        {"topic": "prices", "offsets": {"0": 1}},
        {"reader"},
    ),
    (
        "reset group",
        "POST",
        "/v1/groups/g1/reset",
        {"topic": "prices", "to": "earliest"},
        {"admin"},
    ),
    ("delete group", "DELETE", "/v1/groups/gone-{who}", None, {"admin"}),
    (
        "read public topic",
        "GET",
        "/v1/topics/public.news",
        None,
        {"anonymous", "reader", "writer", "admin", "nobody"},
    ),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "allowed"), MATRIX, ids=[m[0] for m in MATRIX]
)
def test_rest_permission_matrix(
    auth_server: RunningServer, name: str, method: str, path: str, body: Any, allowed: set[str]
) -> None:
    with httpx.Client(base_url=auth_server.base_url, headers=headers("admin")) as admin:
        for who in PRINCIPALS:  # resources some calls need
            admin.post("/v1/topics", json={"name": f"doomed-{who}"})
    with httpx.Client(base_url=auth_server.base_url, headers=headers("reader")) as reader:
        for who in PRINCIPALS:
            reader.post(
                f"/v1/groups/gone-{who}/offsets", json={"topic": "prices", "offsets": {"0": 0}}
            )
    for who in PRINCIPALS:
        url = path.replace("{who}", who)
        payload = json.loads(json.dumps(body).replace("{who}", who)) if body else None
        with httpx.Client(base_url=auth_server.base_url, headers=headers(who)) as c:
            response = c.request(method, url, json=payload)
        if who in allowed:
            assert response.status_code < 400, (name, who, response.text)
        else:
            expected = 401 if who in ("anonymous", "badkey") else 403
            assert response.status_code == expected, (name, who, response.text)
            code = response.json()["error"]["code"]
            assert code == ("unauthorized" if expected == 401 else "forbidden")
        if who == "badkey" or (who == "anonymous" and who not in allowed):
            assert response.headers.get("www-authenticate", "").startswith("Bearer")


def test_listings_show_only_what_the_caller_may_see(auth_server: RunningServer) -> None:
    def names(who: str, path: str, key: str, field: str) -> list[str]:
        with httpx.Client(base_url=auth_server.base_url, headers=headers(who)) as c:
            response = c.get(path)
            assert response.status_code == 200, response.text
            return [item[field] for item in response.json()[key]]

    assert names("reader", "/v1/topics", "topics", "name") == ["prices", "public.news"]
    assert names("anonymous", "/v1/topics", "topics", "name") == ["public.news"]
    assert names("nobody", "/v1/topics", "topics", "name") == ["public.news"]
    assert names("reader", "/v1/groups", "groups", "group") == ["g1"]
    assert names("writer", "/v1/groups", "groups", "group") == []
    with httpx.Client(base_url=auth_server.base_url, headers=headers("badkey")) as c:
        assert c.get("/v1/topics").status_code == 401


def test_forbidden_answers_do_not_reveal_whether_a_topic_exists(
    auth_server: RunningServer,
) -> None:
    with httpx.Client(base_url=auth_server.base_url, headers=headers("reader")) as c:
        existing = c.get("/v1/topics/secret")
        missing = c.get("/v1/topics/no-such-topic")
        fetch_existing = c.get("/v1/topics/secret/partitions/0/records")
        fetch_missing = c.get("/v1/topics/no-such-topic/partitions/0/records")
    assert existing.status_code == missing.status_code == 403
    assert existing.text.replace("secret", "X") == missing.text.replace("no-such-topic", "X")
    assert fetch_existing.text.replace("secret", "X") == fetch_missing.text.replace(
        "no-such-topic", "X"
    )
    with httpx.Client(base_url=auth_server.base_url) as anonymous:
        assert (
            anonymous.get("/v1/topics/secret").text
            == anonymous.get("/v1/topics/no-such-topic").text
        )


def test_auto_create_needs_admin_on_the_name(auth_server: RunningServer) -> None:
    with httpx.Client(base_url=auth_server.base_url, headers=headers("creator")) as c:
        assert c.post("/v1/topics/auto-1/records", json={"value": 1}).status_code == 200
    with httpx.Client(base_url=auth_server.base_url, headers=headers("writer2")) as c:
        response = c.post("/v1/topics/auto-2/records", json={"value": 1})
        assert response.status_code == 404  # as if auto-create were off
        assert c.post("/v1/topics/auto-1/records", json={"value": 2}).status_code == 200
    token = f"?token={KEYS['writer2']}"
    with connect(f"{auth_server.ws_url}/v1/topics/auto-3/publish{token}") as ws:
        assert close_code(ws) == 4404


def close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def ws_outcome(server: RunningServer, path: str, who: str, via: str = "header") -> str:
    """'ok' if the subscription/publish connection is accepted, else the close code."""
    extra: dict[str, Any] = {}
    url = f"{server.ws_url}{path}"
    if who != "anonymous":
        key = "not-a-key" if who == "badkey" else KEYS[who]
        if via == "header":
            extra["additional_headers"] = {"Authorization": f"Bearer {key}"}
        else:
            url += ("&" if "?" in url else "?") + f"token={key}"
    with connect(url, **extra) as ws:
        try:
            if "/publish" in path:
                ws.send(json.dumps({"value": "ws"}))
            frame = json.loads(ws.recv(timeout=10))
        except ConnectionClosed as closed:
            return str(closed.rcvd.code if closed.rcvd else None)
        if frame["type"] in ("subscribed", "assignment", "ack"):
            return "ok"
        assert frame["type"] == "error"
        return str(close_code(ws))


WS_MATRIX = [
    ("/v1/topics/prices/ws", {"reader"}),
    ("/v1/topics/prices/ws?group=g1", {"reader"}),
    ("/v1/topics/prices/ws?group=other", set()),
    ("/v1/topics/public.news/ws", {"anonymous", "reader", "writer", "admin", "nobody"}),
    ("/v1/topics/prices/publish", {"writer"}),
]


@pytest.mark.parametrize(("path", "allowed"), WS_MATRIX, ids=[p for p, _ in WS_MATRIX])
@pytest.mark.parametrize("via", ["header", "query"])
def test_websocket_permission_matrix(
    auth_server: RunningServer, path: str, allowed: set[str], via: str
) -> None:
    for who in PRINCIPALS:
        outcome = ws_outcome(auth_server, path, who, via)
        if who in allowed:
            assert outcome == "ok", (path, who)
        else:
            assert outcome == ("4401" if who in ("anonymous", "badkey") else "4403"), (path, who)


def test_expired_jwt_ends_an_open_websocket(auth_server: RunningServer) -> None:
    token = jwt.encode(
        {"sub": "phone-1", "exp": int(time.time()) + 2, "eddy": {"read": ["prices"]}}, SECRET
    )
    with connect(f"{auth_server.ws_url}/v1/topics/prices/ws?token={token}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        started = time.monotonic()
        code = close_code(ws, timeout=10)
    assert code == 4401
    assert time.monotonic() - started < 6
    with connect(f"{auth_server.ws_url}/v1/topics/prices/ws?token={token}") as ws:
        assert close_code(ws) == 4401  # and it cannot be used again


def test_jwt_permissions_and_forgery(auth_server: RunningServer) -> None:
    good = jwt.encode(
        {
            "sub": "svc",
            "exp": int(time.time()) + 60,
            "eddy": {"write": ["prices"], "read": ["prices"]},
        },
        SECRET,
    )
    forged = jwt.encode(
        {"sub": "svc", "exp": int(time.time()) + 60, "eddy": {"admin": ["*"]}},
        "some-other-secret-of-32-characters!!",
    )
    with httpx.Client(base_url=auth_server.base_url) as c:
        ok = c.post(
            "/v1/topics/prices/records",
            json={"value": 1},
            headers={"Authorization": f"Bearer {good}"},
        )
        assert ok.status_code == 200
        denied = c.delete("/v1/topics/prices", headers={"Authorization": f"Bearer {good}"})
        assert denied.status_code == 403
        bad = c.delete("/v1/topics/prices", headers={"Authorization": f"Bearer {forged}"})
        assert bad.status_code == 401


def test_revoked_api_key_ends_an_open_websocket(auth_server: RunningServer, tmp_path: Path) -> None:
    with connect(f"{auth_server.ws_url}/v1/topics/prices/ws?token={KEYS['reader']}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        auth = tmp_path / "auth.toml"
        auth.write_text(AUTH_FILE.replace(sha(KEYS["reader"]), sha("a-new-key")))
        assert close_code(ws, timeout=10) == 4401
    with httpx.Client(base_url=auth_server.base_url, headers=headers("reader")) as c:
        assert c.get("/v1/topics/prices").status_code == 401


def test_cors_and_websocket_origin_checks(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "d", cors_origins="https://app.example") as server,
        httpx.Client(base_url=server.base_url) as c,
    ):
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        allowed = c.options("/v1/topics", headers={"Origin": "https://app.example", **preflight})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in allowed.headers
        evil = c.options("/v1/topics", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in evil.headers
        plain = c.get("/v1/topics", headers={"Origin": "https://app.example"})
        assert plain.headers["access-control-allow-origin"] == "https://app.example"

        def ws(origin: str | None) -> str:
            url = f"{server.ws_url}/v1/topics/t/ws"
            with connect(url, origin=Origin(origin) if origin else None) as sock:
                frame = json.loads(sock.recv(timeout=10))
                return "ok" if frame["type"] == "subscribed" else str(close_code(sock))

        assert ws("https://app.example") == "ok"
        assert ws(server.base_url) == "ok"  # the server's own pages (the console)
        assert ws(None) == "ok"  # not a browser
        assert ws("https://evil.example") == "4403"


def test_cors_star_allows_every_origin_for_rest_and_websockets(tmp_path: Path) -> None:
    """`--cors-origins '*'` means the same for both transports: any browser origin."""
    with (
        serve_in_thread(tmp_path / "d", cors_origins="*") as server,
        httpx.Client(base_url=server.base_url) as c,
    ):
        preflight = c.options(
            "/v1/topics",
            headers={"Origin": "https://any.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        plain = c.get("/v1/topics", headers={"Origin": "https://other.example"})
        assert plain.headers["access-control-allow-origin"] == "*"
        for path in ("ws", "publish"):
            url = f"{server.ws_url}/v1/topics/t/{path}"
            with connect(url, origin=Origin("https://any.example")) as sock:
                if path == "ws":
                    assert json.loads(sock.recv(timeout=10))["type"] == "subscribed"
                else:
                    sock.send(json.dumps({"id": 1, "value": "x"}))
                    assert json.loads(sock.recv(timeout=10))["type"] == "ack"


def test_produce_rate_limit_per_principal(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "d", produce_rate_limit=2, produce_rate_burst=2) as server,
        httpx.Client(base_url=server.base_url) as c,
    ):
        statuses = [c.post("/v1/topics/t/records", json={"value": i}).status_code for i in range(3)]
        assert statuses[:2] == [200, 200]
        limited = c.post("/v1/topics/t/records", json={"value": "x"})
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        time.sleep(1.1)
        assert c.post("/v1/topics/t/records", json={"value": "later"}).status_code == 200
        with connect(f"{server.ws_url}/v1/topics/t/publish") as ws:
            codes = []
            for i in range(6):
                ws.send(json.dumps({"id": i, "value": i}))
                answer = json.loads(ws.recv(timeout=10))
                codes.append(answer.get("code", answer["type"]))
            assert "rate_limited" in codes


def test_admin_actions_and_failures_are_audited(
    auth_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eddy.audit")
    with httpx.Client(base_url=auth_server.base_url, headers=headers("admin")) as c:
        c.post("/v1/topics", json={"name": "audited"})
    with httpx.Client(base_url=auth_server.base_url, headers=headers("writer")) as c:
        c.delete("/v1/topics/audited")
    with httpx.Client(base_url=auth_server.base_url, headers=headers("badkey")) as c:
        c.get("/v1/topics")
    wait_until(lambda: len(caplog.records) >= 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "eddy.audit"]
    assert any(
        "principal=admin action=create_topic resource=topic:audited outcome=ok" in line
        for line in lines
    )
    assert any(
        "principal=writer action=admin resource=topic:audited outcome=forbidden" in line
        for line in lines
    )
    assert any("action=authenticate outcome=invalid API key" in line for line in lines)
    assert not any(KEYS["admin"] in line or KEYS["writer"] in line for line in lines)


def test_warning_when_open_on_a_non_loopback_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="eddy")
    create_app(Settings(host="0.0.0.0", data_dir=tmp_path))
    assert any("ACCESS CONTROL IS OFF" in r.getMessage() for r in caplog.records)
    caplog.clear()
    create_app(Settings(host="127.0.0.1", data_dir=tmp_path))
    assert not any("ACCESS CONTROL IS OFF" in r.getMessage() for r in caplog.records)


def test_a_bad_auth_file_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    auth = tmp_path / "auth.toml"
    auth.write_text("[[principals]]\nname = 'x'\nkey_sha256 = 'abc'\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "eddy",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--auth-file",
            str(auth),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "key_sha256" in result.stderr

"""REST end to end against a real uvicorn on a loopback port."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka.partitioner.default import murmur2 as kafka_murmur2

from eddy.app.factory import create_app
from eddy.app.server import EddyServer, uvicorn_config
from eddy.app.settings import Settings
from eddy.routers import records
from tests.conftest import RunningServer, free_port, serve_in_thread, wait_until


def create(client: httpx.Client, name: str, partitions: int = 1, **config: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/topics", json={"name": name, "partitions": partitions, "config": config}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def produce(client: httpx.Client, topic: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(f"/v1/topics/{topic}/records", json=body)
    assert response.status_code == 200, response.text
    offsets: list[dict[str, Any]] = response.json()["offsets"]
    return offsets


def fetch(client: httpx.Client, topic: str, partition: int, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/topics/{topic}/partitions/{partition}/records", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    details: dict[str, Any] = body["error"]["details"]
    return details


def test_topic_lifecycle(client: httpx.Client) -> None:
    created = create(client, "prices", 3, **{"retention.ms": 3_600_000})
    assert created["name"] == "prices" and created["partitions"] == 3
    assert created["config"]["retention.ms"] == 3_600_000
    assert created["config"]["max.message.bytes"] == 1_048_576  # broker default
    assert_error(client.post("/v1/topics", json={"name": "prices"}), 409, "topic_exists")

    listed = client.get("/v1/topics").json()["topics"]
    assert [t["name"] for t in listed] == ["prices"]

    described = client.get("/v1/topics/prices").json()
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert described["partitions"][0] == {
        "partition": 0,
        "log_start_offset": 0,
        "high_watermark": 0,
        "size_bytes": 0,
    }

    patched = client.patch(
        "/v1/topics/prices", json={"partitions": 5, "config": {"cleanup.policy": "compact"}}
    )
    assert patched.status_code == 200, patched.text
    assert len(patched.json()["partitions"]) == 5
    assert patched.json()["config"]["cleanup.policy"] == "compact"
    assert patched.json()["config"]["retention.ms"] == 3_600_000  # partial update kept it
    assert_error(client.patch("/v1/topics/prices", json={"partitions": 2}), 422, "invalid_request")
    assert_error(
        client.patch("/v1/topics/prices", json={"config": {"retention.ms": "soon"}}),
        422,
        "invalid_request",
    )

    assert client.delete("/v1/topics/prices").status_code == 204
    assert_error(client.get("/v1/topics/prices"), 404, "topic_not_found")
    assert_error(client.delete("/v1/topics/prices"), 404, "topic_not_found")


@pytest.mark.parametrize("name", [".", "..", "", "a/b", "a b", "ü", "x" * 250, "a\x00b"])
def test_invalid_topic_names_are_rejected(client: httpx.Client, name: str) -> None:
    assert_error(client.post("/v1/topics", json={"name": name}), 422, "invalid_request")


def test_topic_names_are_case_sensitive_and_dot_underscore_distinct(client: httpx.Client) -> None:
    for name in ("a.b", "a_b", "A.b", "x" * 249, "..."):
        create(client, name)
    names = {t["name"] for t in client.get("/v1/topics").json()["topics"]}
    assert {"a.b", "a_b", "A.b", "x" * 249, "..."} <= names


def test_produce_and_fetch_values_exactly(client: httpx.Client) -> None:
    values: list[Any] = [
        {"price": 187.3, "nested": [1, {"a": None}], "big": 123456789012345678901234567890},
        "1/Electronics",
        0,
        -1.5e-7,
        True,
        None,
        [],
        "émoji 😀",
    ]
    offsets = produce(client, "t", {"records": [{"key": None, "value": v} for v in values]})
    assert [o["offset"] for o in offsets] == list(range(len(values)))
    assert all(o["partition"] == 0 for o in offsets)
    body = fetch(client, "t", 0, offset="earliest")
    assert [r["value"] for r in body["records"]] == values
    assert body["next_offset"] == len(values) and body["high_watermark"] == len(values)
    record = body["records"][0]
    assert set(record) == {"topic", "partition", "offset", "timestamp", "key", "value", "headers"}


def test_single_record_with_headers_timestamp_and_partition(client: httpx.Client) -> None:
    create(client, "t", 3)
    [meta] = produce(
        client,
        "t",
        {
            "key": "AAPL",
            "value": {"price": 1},
            "partition": 2,
            "timestamp": 1764000000000,
            "headers": {"source": "feed-1"},
        },
    )
    assert meta == {"partition": 2, "offset": 0, "timestamp": 1764000000000}
    [record] = fetch(client, "t", 2, offset=0)["records"]
    assert record["headers"] == {"source": "feed-1"} and record["key"] == "AAPL"
    assert record["timestamp"] == 1764000000000


def test_binary_values_round_trip(client: httpx.Client) -> None:
    blob = bytes(range(256))
    produce(client, "bin", {"value_base64": base64.b64encode(blob).decode()})
    [record] = fetch(client, "bin", 0, offset=0)["records"]
    assert "value" not in record
    assert base64.b64decode(record["value_base64"]) == blob
    bad = client.post("/v1/topics/bin/records", json={"value_base64": "***"})
    assert_error(bad, 422, "invalid_request")
    both = client.post("/v1/topics/bin/records", json={"value": 1, "value_base64": "AA=="})
    assert_error(both, 422, "invalid_request")


def test_raw_bodies(client: httpx.Client) -> None:
    create(client, "raw", 2)
    text = client.post(
        "/v1/topics/raw/records?key=k1&partition=1",
        content="hello wörld",
        headers={"content-type": "text/plain; charset=utf-8"},
    )
    assert text.status_code == 200, text.text
    binary = client.post(
        "/v1/topics/raw/records?partition=1",
        content=b"\x00\xff",
        headers={"content-type": "application/octet-stream"},
    )
    assert binary.status_code == 200
    records = fetch(client, "raw", 1, offset=0)["records"]
    assert records[0]["value"] == "hello wörld" and records[0]["key"] == "k1"
    assert base64.b64decode(records[1]["value_base64"]) == b"\x00\xff"
    bad_utf8 = client.post(
        "/v1/topics/raw/records", content=b"\xff\xfe", headers={"content-type": "text/plain"}
    )
    assert_error(bad_utf8, 422, "invalid_request")
    xml = client.post(
        "/v1/topics/raw/records", content=b"<a/>", headers={"content-type": "application/xml"}
    )
    assert_error(xml, 415, "unsupported_media_type")


def test_keys_land_where_kafka_puts_them(client: httpx.Client) -> None:
    create(client, "keyed", 6)
    keys = [f"user-{i}" for i in range(60)] + ["AAPL", "MSFT", "é", ""]
    offsets = produce(client, "keyed", {"records": [{"key": k, "value": 1} for k in keys]})
    for key, meta in zip(keys, offsets, strict=True):
        assert meta["partition"] == (kafka_murmur2(key.encode()) & 0x7FFFFFFF) % 6


def test_keyless_records_spread_over_all_partitions(client: httpx.Client) -> None:
    create(client, "spread", 4)
    for _ in range(8):
        produce(client, "spread", {"value": "x"})
    described = client.get("/v1/topics/spread").json()
    assert [p["high_watermark"] for p in described["partitions"]] == [2, 2, 2, 2]


def test_batches_are_atomic(client: httpx.Client) -> None:
    create(client, "atomic", 2, **{"max.message.bytes": 100})
    bad_partition = client.post(
        "/v1/topics/atomic/records",
        json={"records": [{"value": 1, "partition": 0}, {"value": 2, "partition": 7}]},
    )
    assert_error(bad_partition, 404, "partition_not_found")
    too_large = client.post(
        "/v1/topics/atomic/records", json={"records": [{"value": 1}, {"value": "x" * 200}]}
    )
    details = assert_error(too_large, 413, "record_too_large")
    assert details["index"] == 1
    invalid = client.post(
        "/v1/topics/atomic/records", json={"records": [{"value": 1}, {"value": 2, "partition": -1}]}
    )
    assert_error(invalid, 422, "invalid_request")
    described = client.get("/v1/topics/atomic").json()
    assert [p["high_watermark"] for p in described["partitions"]] == [0, 0]


def test_fetch_offsets_limits_and_range_errors(client: httpx.Client) -> None:
    produce(client, "f", {"records": [{"value": i} for i in range(10)]})
    assert [r["value"] for r in fetch(client, "f", 0, offset=7)["records"]] == [7, 8, 9]
    assert fetch(client, "f", 0, offset="latest")["records"] == []
    page = fetch(client, "f", 0, offset="earliest", limit=3)
    assert [r["offset"] for r in page["records"]] == [0, 1, 2] and page["next_offset"] == 3
    assert len(fetch(client, "f", 0, offset=0, max_bytes=1)["records"]) == 1
    details = assert_error(
        client.get("/v1/topics/f/partitions/0/records?offset=11"), 416, "offset_out_of_range"
    )
    assert details["log_start_offset"] == 0 and details["high_watermark"] == 10
    assert_error(
        client.get("/v1/topics/f/partitions/0/records?offset=-1"), 416, "offset_out_of_range"
    )
    assert_error(
        client.get("/v1/topics/f/partitions/0/records?offset=soon"), 422, "invalid_request"
    )
    assert_error(client.get("/v1/topics/f/partitions/3/records"), 404, "partition_not_found")
    assert_error(client.get("/v1/topics/nope/partitions/0/records"), 404, "topic_not_found")


def test_long_poll_returns_as_soon_as_a_record_arrives(
    client: httpx.Client, server: RunningServer
) -> None:
    create(client, "lp")
    started = time.monotonic()
    result: dict[str, Any] = {}

    def poll() -> None:
        with server.client() as other:
            result.update(fetch(other, "lp", 0, offset=0, timeout_ms=20_000))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)  # let the poll start waiting (the assertion below holds either way)
    produce(client, "lp", {"value": "wake"})
    poller.join(timeout=15)
    assert [r["value"] for r in result["records"]] == ["wake"]
    assert time.monotonic() - started < 10  # well before the 20 s timeout
    empty = fetch(client, "lp", 0, offset=1, timeout_ms=200)
    assert empty["records"] == [] and empty["next_offset"] == 1


def test_offset_lookup_by_timestamp(client: httpx.Client) -> None:
    produce(
        client, "ts", {"records": [{"value": i, "timestamp": 1000 * (i + 1)} for i in range(5)]}
    )
    lookup = client.get("/v1/topics/ts/partitions/0/offsets", params={"timestamp": 2500})
    assert lookup.json() == {"offset": 2}
    assert client.get("/v1/topics/ts/partitions/0/offsets?timestamp=0").json() == {"offset": 0}
    assert client.get("/v1/topics/ts/partitions/0/offsets?timestamp=99999").json() == {
        "offset": None
    }
    assert_error(client.get("/v1/topics/ts/partitions/0/offsets"), 422, "invalid_request")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{", "application/json"),
        (b"[1,2]", "application/json"),
        (b"null", "application/json"),
        (b'{"value": NaN}', "application/json"),
        (b'{"value": 1e999}', "application/json"),
        (b'{"valu": 1}', "application/json"),
        (b'{"key": 5, "value": 1}', "application/json"),
        (b'{"headers": {"a": 1}}', "application/json"),
        (b'{"records": []}', "application/json"),
        (b'{"records": "x"}', "application/json"),
        (b'{"timestamp": -5}', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"value":' + b"[" * 300 + b"]" * 300 + b"}", "application/json"),
        (b'{"key": "\\ud800", "value": 1}', "application/json"),
        (b'{"value": "\\udfff"}', "application/json"),
        (b'{"headers": {"h": "\\ud800"}}', "application/json"),
        (b'{"value": 1, "timestamp": 99999999999999999999999}', "application/json"),
        (b'{"value": 1, "partition": 99999999999999999999999}', "application/json"),
    ],
)
def test_malformed_produce_bodies_get_422(
    client: httpx.Client, body: bytes, content_type: str
) -> None:
    response = client.post(
        "/v1/topics/bad/records", content=body, headers={"content-type": content_type}
    )
    assert_error(response, 422, "invalid_request")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/topics/t/partitions/99999999999999999999999/records",
        "/v1/topics/t/partitions/0/records?offset=99999999999999999999999",
        "/v1/topics/t/partitions/0/records?limit=0",
        "/v1/topics/t/partitions/0/records?timeout_ms=-1",
        "/v1/topics/t/partitions/0/offsets?timestamp=99999999999999999999999",
        "/v1/topics/t/partitions/-1/offsets?timestamp=0",
    ],
)
def test_absurd_numbers_in_urls_get_422(client: httpx.Client, path: str) -> None:
    produce(client, "t", {"value": 1})
    assert_error(client.get(path), 422, "invalid_request")


def test_absurd_numbers_in_websocket_queries_are_clear_errors(server: RunningServer) -> None:
    from websockets.sync.client import connect

    for query in ("offsets=0:99999999999999999999999", "partitions=99999999999999999999999"):
        with connect(f"{server.ws_url}/v1/topics/w/ws?{query}") as ws:
            frame = ws.recv(timeout=10)
            assert '"type":"error"' in str(frame)


def test_curl_default_form_content_type_is_read_as_json(client: httpx.Client) -> None:
    response = client.post(
        "/v1/topics/curl/records",
        content=b'{"value": 1}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def test_error_shape_for_routing_and_validation(client: httpx.Client) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.put("/v1/topics"), 405, "method_not_allowed")
    assert_error(client.post("/v1/topics", content=b"{"), 422, "invalid_request")
    assert_error(
        client.post("/v1/topics", json={"name": "ok", "partitions": 0}), 422, "invalid_request"
    )
    assert_error(
        client.post("/v1/topics", json={"name": "ok", "partitions": 5000}), 422, "invalid_request"
    )
    assert_error(
        client.post("/v1/topics", json={"name": "ok", "config": {"bogus": 1}}),
        422,
        "invalid_request",
    )
    assert_error(client.get("/v1/topics/a/partitions/x/records"), 422, "invalid_request")
    assert_error(client.get("/v1/topics/bad%20name"), 422, "invalid_request")


def test_request_size_limit(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "d", max_request_bytes=4096) as server, server.client() as c:
        big = c.post("/v1/topics/t/records", json={"value": "x" * 10_000})
        assert_error(big, 413, "payload_too_large")
        ok = c.post("/v1/topics/t/records", json={"value": "x" * 100})
        assert ok.status_code == 200


def test_auto_create_can_be_turned_off(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "d", auto_create_topics=False) as server, server.client() as c:
        assert_error(c.post("/v1/topics/t/records", json={"value": 1}), 404, "topic_not_found")
        assert c.get("/v1/topics").json() == {"topics": []}


def test_concurrent_produce_requests_share_commits(
    client: httpx.Client, server: RunningServer
) -> None:
    create(client, "gc", 3)

    def send(i: int) -> list[dict[str, Any]]:
        with server.client() as c:
            return [produce(c, "gc", {"key": f"k{i}", "value": j})[0] for j in range(20)]

    with ThreadPoolExecutor(16) as pool:
        results = [meta for batch in pool.map(send, range(16)) for meta in batch]
    assert len(results) == 320
    described = client.get("/v1/topics/gc").json()
    assert sum(p["high_watermark"] for p in described["partitions"]) == 320
    # every offset handed out exactly once
    assert len({(m["partition"], m["offset"]) for m in results}) == 320
    metrics = client.get("/metrics").text
    commits = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("eddy_commit_batch_records_count")
    )
    assert commits < 320  # some commits carried several requests (group commit)


def test_operations_endpoints(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    produce(client, "m", {"value": 1})
    fetch(client, "m", 0, offset=0)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'eddy_records_in_total{topic="m"} 1.0' in text
    assert 'eddy_records_out_total{topic="m",via="http"} 1.0' in text
    assert "eddy_websockets_open" in text
    assert 'route="/v1/topics/{topic}/records"' in text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # works offline
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in docs.text
        assert client.get(f"/static-offline-docs/{asset}").status_code == 200
    assert client.get("/redoc").status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "Eddy"


@contextmanager
def serve_without_lean_produce(data_dir: Path, **settings: Any) -> Iterator[RunningServer]:
    """Eddy with its lean produce route taken out, so the documented FastAPI route answers."""
    port = free_port()
    config = Settings(host="127.0.0.1", port=port, data_dir=data_dir, **settings)
    app = create_app(config)
    app.router.routes.remove(records.produce_route)
    server = EddyServer(uvicorn_config(app, config), app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=15)
        assert server.started, "test server did not start"
        yield RunningServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", data_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


AUTH_TOKEN = "lean-route-test-key"
ProduceRequest = tuple[str, str, dict[str, str], bytes]  # topic, query, headers, body
PRODUCE_REQUESTS: list[ProduceRequest] = [
    ("t", "", {}, b'{"key": "k", "value": {"a": [1, 2.5, null]}, "timestamp": 5}'),
    ("t", "", {}, b'{"records": [{"value": 1, "timestamp": 1}, {"key": "x", "timestamp": 2}]}'),
    (
        "t",
        "",
        {},
        b'{"records": [{"value": 1, "timestamp": 1}], "producer": {"id": "p", "sequence": 0}}',
    ),
    (
        "t",
        "",
        {},
        b'{"records": [{"value": 1, "timestamp": 1}], "producer": {"id": "p", "sequence": 0}}',
    ),  # a retry: the original answer
    ("t", "", {}, b'{"records": [{"value": 1}], "producer": {"id": "p", "sequence": 7}}'),
    ("t", "", {}, b'{"records": [{"value": 1}], "producer": {"id": "", "sequence": 1}}'),
    ("t", "", {}, b'{"value": 12345678901234567890123456789, "timestamp": 3}'),
    ("t", "", {}, b'{"value": 1, "partition": 7}'),
    ("t", "", {}, b'{"value": 1, "partition": true}'),
    ("t", "", {}, b'{"value": 1, "timestamp": 1.0}'),
    ("t", "", {}, b'{"value": 1, "timestamp": "4"}'),
    ("t", "", {}, b'{"key": 1}'),
    ("t", "", {}, b'{"value": 1, "value_base64": "AA=="}'),
    ("t", "", {}, b'{"records": [{"value": 1, "value_base64": "AA=="}, {"key": 2}]}'),
    ("t", "", {}, b'{"records": [{"value": 1}, {"headers": {"h": 1}}]}'),
    ("t", "", {}, b'{"value": NaN}'),
    ("t", "", {}, b"\xff"),
    ("t", "", {}, b"[1]"),
    ("t", "", {"content-type": "text/plain"}, b"hello"),
    ("t", "key=k&partition=0", {"content-type": "text/plain"}, b"hello"),
    ("t", "partition=-1", {"content-type": "text/plain"}, b"hello"),
    ("t", "partition=x&key=k", {"content-type": "text/plain"}, b"hello"),
    ("t", "partition=", {"content-type": "application/octet-stream"}, b"\x00"),
    ("t", "partition=99999999999", {"content-type": "text/plain"}, b"x"),
    ("t", "key=k", {}, b'{"value": 1}'),
    ("t", "other=1", {}, b'{"value": 1, "timestamp": 9}'),
    ("t", "", {"content-type": "application/xml"}, b"<a/>"),
    ("t", "", {"content-type": ""}, b'{"value": 1, "timestamp": 9}'),
    ("t", "", {"content-type": "application/json; charset=utf-8"}, b'{"timestamp": 9}'),
    ("t", "", {}, b'{"value": "' + b"x" * 5000 + b'"}'),  # over max_request_bytes
    ("bad name", "", {}, b'{"value": 1}'),
    ("t", "", {"authorization": "Bearer wrong"}, b'{"value": 1}'),
    ("t", "partition=x", {"authorization": "Bearer wrong"}, b'{"value": 1}'),
    ("t", "", {"authorization": f"Bearer {AUTH_TOKEN}"}, b'{"value": 1, "timestamp": 9}'),
    ("t", "", {"authorization": f"Bearer {AUTH_TOKEN}"}, b'{"value": 1, "timestamp": 9}'),
    ("other", "", {"authorization": f"Bearer {AUTH_TOKEN}"}, b'{"value": 1}'),
]


def test_lean_produce_route_answers_as_the_documented_route(tmp_path: Path) -> None:
    """The same requests, one server with the lean route and one without: the same answers
    (status, body, the headers that matter), including errors, auth, limits and retries."""
    auth = tmp_path / "auth.toml"
    digest = hashlib.sha256(AUTH_TOKEN.encode()).hexdigest()
    auth.write_text(
        "[anonymous]\nwrite = ['t', 'bad name']\nadmin = ['t', 'bad name']\n\n"
        f"[[principals]]\nname = 'app'\nkey_sha256 = '{digest}'\nwrite = ['t']\n"
    )
    settings: dict[str, Any] = {
        "auth_file": auth,
        "max_request_bytes": 4096,
        "produce_rate_limit": 1000,
    }
    answers = []
    with serve_in_thread(tmp_path / "lean", **settings) as lean:
        answers.append(_answers(lean, PRODUCE_REQUESTS))
    with serve_without_lean_produce(tmp_path / "fastapi", **settings) as documented:
        answers.append(_answers(documented, PRODUCE_REQUESTS))
    assert answers[0] == answers[1]
    statuses = {status for status, *_ in answers[0]}
    assert statuses == {200, 401, 403, 404, 409, 413, 415, 422}


def test_lean_produce_route_is_rate_limited_as_the_documented_route(tmp_path: Path) -> None:
    requests: list[ProduceRequest] = [("t", "", {}, b'{"value": 1, "timestamp": 1}')] * 3
    limits: dict[str, Any] = {"produce_rate_limit": 0.01, "produce_rate_burst": 2}
    with serve_in_thread(tmp_path / "lean", **limits) as lean:
        lean_answers = _answers(lean, requests)
    with serve_without_lean_produce(tmp_path / "fastapi", **limits) as documented:
        assert _answers(documented, requests) == lean_answers
    assert [status for status, *_ in lean_answers] == [200, 200, 429]
    assert lean_answers[2][2]["retry-after"] is not None


def _answers(
    server: RunningServer, requests: list[ProduceRequest]
) -> list[tuple[int, Any, dict[str, str | None]]]:
    out = []
    with server.client() as c:
        for topic, query, headers, body in requests:
            headers = {"content-type": "application/json", **headers}
            request = c.build_request(
                "POST", f"/v1/topics/{topic}/records?{query}", content=body, headers=headers
            )
            response = c.send(request)
            answer = response.json()
            # Broker time differs between the servers.
            for meta in answer.get("offsets", []):
                meta["timestamp"] = "now" if meta["timestamp"] > 10**12 else meta["timestamp"]
            if "retry_after_seconds" in answer.get("error", {}).get("details", {}):
                answer["error"]["details"]["retry_after_seconds"] = "later"
            kept = ("content-type", "www-authenticate", "retry-after")
            out.append((response.status_code, answer, {h: response.headers.get(h) for h in kept}))
    return out


def test_lean_produce_route_is_labelled_in_request_metrics(client: httpx.Client) -> None:
    produce(client, "m", {"value": 1})
    metrics = client.get("/metrics").text
    assert (
        'eddy_http_request_duration_seconds_count{method="POST",'
        'route="/v1/topics/{topic}/records",status="200"} 1.0'
    ) in metrics


def test_produce_answered_before_the_middleware_keeps_request_ids_and_metrics(
    client: httpx.Client,
) -> None:
    """app/lean.py answers plain produce requests itself: successes and errors carry the
    request id and are counted under the route, as the middleware stack would."""
    ok = client.post(
        "/v1/topics/lean/records", json={"value": 1}, headers={"X-Request-ID": "lean-ok"}
    )
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "lean-ok"
    assert ok.headers["content-type"] == "application/json"
    refused = client.post(
        "/v1/topics/lean/records", json={"value": 1, "partition": 9}, headers={"X-Request-ID": "x1"}
    )
    assert_error(refused, 404, "partition_not_found")
    assert refused.headers["x-request-id"] == "x1"
    malformed = client.post("/v1/topics/lean/records", content=b"{", headers={"X-Request-ID": "x2"})
    assert_error(malformed, 422, "invalid_request")
    assert malformed.headers["x-request-id"] == "x2"
    metrics = client.get("/metrics").text
    for status in ("200", "404", "422"):
        assert (
            'eddy_http_request_duration_seconds_count{method="POST",'
            f'route="/v1/topics/{{topic}}/records",status="{status}"}} 1.0'
        ) in metrics


def test_chunked_produce_bodies_are_read_whole_and_limited(tmp_path: Path) -> None:
    def chunks(body: bytes) -> Iterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    batch = {"records": [{"key": f"k{i}", "value": {"n": i}} for i in range(50)]}
    with serve_in_thread(tmp_path / "d", max_request_bytes=4096) as server, server.client() as c:
        body = json.dumps(batch).encode()
        response = c.post("/v1/topics/t/records", content=chunks(body))
        assert response.status_code == 200, response.text
        assert len(response.json()["offsets"]) == 50
        assert [r["value"] for r in fetch(c, "t", 0, limit=100)["records"]] == [
            {"n": i} for i in range(50)
        ]
        big = c.post("/v1/topics/t/records", content=chunks(b'{"value": "' + b"x" * 5000 + b'"}'))
        assert_error(big, 413, "payload_too_large")

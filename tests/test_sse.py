"""Server-Sent Events subscriptions (`GET /v1/topics/{topic}/events`) against a real server, read
with httpx-sse; the resume ids' bookkeeping is tested directly (with hypothesis)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
from httpx_sse import EventSource, ServerSentEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from eddy.models.log import StoredRecord, ValueFormat
from eddy.routers.sse import SSE_EVENTS, resume_id, with_resume_ids
from tests.conftest import (
    REPO,
    RunningServer,
    fetch_all,
    free_port,
    serve_in_thread,
    start_server_process,
    wait_until,
)
from tests.test_access import AUTH_FILE, KEYS, SECRET, headers


# --- the resume ids (pure) -----------------------------------------------------------------------
def _record(partition: int, offset: int, key: str = "k") -> StoredRecord:
    return StoredRecord(
        partition=partition,
        offset=offset,
        timestamp=1_764_000_000_000,
        key=key,
        value=b'{"v":1}',
        value_format=ValueFormat.JSON,
        headers={},
    )


def _ids(data: bytes) -> list[str]:
    return [line[4:].decode() for line in data.split(b"\n") if line.startswith(b"id: ")]


@given(st.lists(st.integers(0, 3), max_size=40), st.integers(1, 4))
@settings(deadline=None)  # pure and quick, but the machine may be busy
def test_every_record_event_carries_the_position_after_it(
    partitions: list[int], count: int
) -> None:
    """Whatever the interleaving of partitions in one write, each event's id is the next offset
    of every partition, as if the records were delivered one by one; the data lines are kept."""
    count = max(count, max(partitions, default=0) + 1)
    start = {p: 10 * p for p in range(count)}
    positions = dict(start)
    expected: list[str] = []
    next_offset = dict(start)
    events = []
    for partition in partitions:
        record = _record(partition, next_offset[partition])
        next_offset[partition] += 1
        expected.append(resume_id(next_offset))
        events.append(SSE_EVENTS.record("t", record))
    out = with_resume_ids(b"".join(events), positions)
    assert _ids(out) == expected
    assert positions == next_offset
    data_lines = [line for line in out.split(b"\n") if line.startswith(b"data: ")]
    assert data_lines == [e.split(b"\n")[2] for e in events]


def test_one_partition_writes_the_cached_bytes_unchanged() -> None:
    events = b"".join(SSE_EVENTS.record("t", _record(2, o)) for o in range(5, 9))
    positions = {2: 5}
    assert with_resume_ids(events, positions) is events
    assert positions == {2: 9}


# --- helpers --------------------------------------------------------------------------------------
@contextmanager
def sse(
    base_url: str, topic: str, query: str = "", **kwargs: Any
) -> Iterator[Iterator[ServerSentEvent]]:
    with (
        httpx.Client(base_url=base_url, timeout=httpx.Timeout(20, read=20)) as client,
        client.stream(
            "GET",
            f"/v1/topics/{topic}/events{query}",
            headers={"Accept": "text/event-stream", **kwargs.pop("headers", {})},
            **kwargs,
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventSource(response).iter_sse()


def take(events: Iterator[ServerSentEvent], count: int) -> list[ServerSentEvent]:
    return [next(events) for _ in range(count)]


def produce(client: httpx.Client, topic: str, records: list[dict[str, Any]]) -> None:
    response = client.post(f"/v1/topics/{topic}/records", json={"records": records})
    assert response.status_code == 200, response.text


def offsets_of(events: list[ServerSentEvent]) -> list[tuple[int, int]]:
    return [(e.json()["partition"], e.json()["offset"]) for e in events]


def error_of(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# --- against a server ----------------------------------------------------------------------------
def test_replay_then_live_with_resume_ids(client: httpx.Client, server: RunningServer) -> None:
    client.post("/v1/topics", json={"name": "prices", "partitions": 3})
    produce(client, "prices", [{"key": f"k{i}", "value": i, "partition": i % 3} for i in range(9)])
    with (
        sse(server.base_url, "prices", "?from=earliest") as events,
        connect(f"{server.ws_url}/v1/topics/prices/ws?from=earliest") as ws,
    ):
        subscribed = next(events)
        assert subscribed.event == "subscribed"
        assert subscribed.json() == json.loads(ws.recv(timeout=10))
        assert subscribed.id == "0:0,1:0,2:0"
        replayed = take(events, 9)
        produce(client, "prices", [{"key": "live", "value": 9, "partition": 1}])
        live = next(events)
        ws_records = [json.loads(ws.recv(timeout=10)) for _ in range(10)]
    assert [e.event for e in [*replayed, live]] == ["record"] * 10
    # The same JSON objects as the WebSocket's record frames.
    assert sorted([e.json() for e in [*replayed, live]], key=str) == sorted(ws_records, key=str)
    # Each id is the next offset of every partition after that event.
    seen = {0: 0, 1: 0, 2: 0}
    for event in [*replayed, live]:
        record = event.json()
        seen[record["partition"]] = record["offset"] + 1
        assert event.id == resume_id(seen)
    assert live.json()["value"] == 9
    assert live.id == "0:3,1:4,2:3"
    # Delivery metrics say which transport delivered (the live record went to both).
    delivered = {
        sample.labels["via"]: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "eddy_records_out_total" and sample.labels.get("topic") == "prices"
    }
    assert delivered.get("sse", 0) >= 1 and delivered.get("websocket", 0) >= 1, delivered


def test_last_event_id_resumes_exactly_there(client: httpx.Client, server: RunningServer) -> None:
    client.post("/v1/topics", json={"name": "t", "partitions": 2})
    produce(client, "t", [{"value": i, "partition": i % 2} for i in range(10)])
    with sse(server.base_url, "t", "?from=earliest") as events:
        first = take(events, 1 + 4)[1:]
    produce(client, "t", [{"value": i, "partition": i % 2} for i in range(10, 14)])
    # Last-Event-ID wins over offsets= and from=.
    with sse(
        server.base_url, "t", "?from=latest&offsets=0:0", headers={"Last-Event-ID": first[-1].id}
    ) as events:
        assert next(events).id == first[-1].id  # subscribed: where it starts
        rest = take(events, 14 - 4)
    assert sorted(offsets_of(first) + offsets_of(rest)) == sorted(
        (p, o) for p in (0, 1) for o in range(7)
    )


def test_keys_and_partitions_filters(client: httpx.Client, server: RunningServer) -> None:
    client.post("/v1/topics", json={"name": "f", "partitions": 3})
    produce(
        client, "f", [{"key": k, "value": i, "partition": i % 3} for i, k in enumerate("ABCABCAB")]
    )
    with sse(server.base_url, "f", "?from=earliest&partitions=0,2&keys=A,C") as events:
        subscribed = next(events)
        assert set(subscribed.json()["partitions"]) == {"0", "2"}
        got = take(events, 5)
        # B, and partition 1, are left out: the next event is the next A or C of 0 or 2.
        produce(client, "f", [{"key": "B", "value": 8, "partition": 0}])
        produce(client, "f", [{"key": "C", "value": 9, "partition": 0}])
        got.append(next(events))
    assert [(e.json()["partition"], e.json()["key"], e.json()["value"]) for e in got] == [
        (0, "A", 0),
        (0, "A", 3),
        (0, "A", 6),
        (2, "C", 2),
        (2, "C", 5),
        (0, "C", 9),
    ]
    # Left-out records still move the position: a resume does not scan them again.
    assert got[-1].id == "0:5,2:2"


def test_refusals_before_the_stream_are_json_errors(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "d", auto_create_topics=False) as server,
        server.client() as client,
    ):
        client.post("/v1/topics", json={"name": "t", "partitions": 1})
        cases = [
            ("/v1/topics/t/events?from=middle", {}, 422, "invalid_request"),
            ("/v1/topics/t/events?group=g", {}, 422, "invalid_request"),
            ("/v1/topics/t/events?offsets=0:5", {}, 416, "offset_out_of_range"),
            ("/v1/topics/t/events", {"Last-Event-ID": "nonsense"}, 422, "invalid_request"),
            ("/v1/topics/t/events?partitions=3", {}, 404, "partition_not_found"),
            ("/v1/topics/missing/events", {}, 404, "topic_not_found"),
        ]
        for path, extra, status, code in cases:
            response = client.get(path, headers={"Accept": "text/event-stream", **extra})
            assert response.status_code == status, (path, response.text)
            assert error_of(response) == code


def test_a_client_that_leaves_frees_its_subscription(
    client: httpx.Client, server: RunningServer
) -> None:
    client.post("/v1/topics", json={"name": "h", "partitions": 1})
    for _ in range(3):
        with sse(server.base_url, "h") as events:
            assert next(events).event == "subscribed"
    broker = server.app.state.broker
    wait_until(lambda: broker.hub._topics.get("h") is None and broker.open_streams == 0)


def test_streams_count_against_the_connection_limit(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "d", max_websockets=1) as server, server.client() as client:
        with sse(server.base_url, "limited") as events:
            assert next(events).event == "subscribed"
            refused = client.get("/v1/topics/limited/events")
            assert refused.status_code == 503
            assert error_of(refused) == "unavailable"
        broker = server.app.state.broker
        wait_until(lambda: broker.open_streams == 0)
        with sse(server.base_url, "limited") as events:  # the slot was given back
            assert next(events).event == "subscribed"


def test_deleted_topic_ends_the_stream_with_an_error_event(
    client: httpx.Client, server: RunningServer
) -> None:
    client.post("/v1/topics", json={"name": "gone", "partitions": 1})
    with sse(server.base_url, "gone") as events:
        assert next(events).event == "subscribed"
        assert client.delete("/v1/topics/gone").status_code == 204
        error = next(events)
        assert error.event == "error"
        assert error.json()["code"] == "topic_not_found"
        assert next(events, None) is None  # the end of the stream


def test_access_control_with_header_or_token(tmp_path: Path) -> None:
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH_FILE)
    with serve_in_thread(tmp_path / "data", auth_file=auth) as server:
        with httpx.Client(base_url=server.base_url, headers=headers("admin")) as admin:
            assert admin.post("/v1/topics", json={"name": "prices"}).status_code == 201
        with httpx.Client(base_url=server.base_url) as c:
            assert error_of(c.get("/v1/topics/prices/events")) == "unauthorized"
            bad = c.get("/v1/topics/prices/events?token=wrong")
            assert bad.status_code == 401
            nobody = c.get("/v1/topics/prices/events", headers=headers("nobody"))
            assert nobody.status_code == 403
            assert error_of(nobody) == "forbidden"
        with sse(server.base_url, "prices", headers=headers("reader")) as events:
            assert next(events).event == "subscribed"
        with sse(server.base_url, "prices", f"?token={KEYS['reader']}") as events:
            assert next(events).event == "subscribed"


def test_expired_credentials_end_the_stream_with_an_error_event(tmp_path: Path) -> None:
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH_FILE)
    with serve_in_thread(tmp_path / "data", auth_file=auth, auth_recheck_interval=0.2) as server:
        with httpx.Client(base_url=server.base_url, headers=headers("admin")) as admin:
            assert admin.post("/v1/topics", json={"name": "prices"}).status_code == 201
        claims = {"sub": "phone-1", "exp": int(time.time()) + 2, "eddy": {"read": ["prices"]}}
        token = jwt.encode(claims, SECRET)
        with sse(server.base_url, "prices", f"?token={token}") as events:
            assert next(events).event == "subscribed"
            error = next(events)
            assert error.event == "error"
            assert error.json()["code"] == "unauthorized"
            assert next(events, None) is None
        with httpx.Client(base_url=server.base_url) as c:  # and it cannot be used again
            assert c.get(f"/v1/topics/prices/events?token={token}").status_code == 401


def test_keep_alive_comments_on_an_idle_stream(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "d", sse_keepalive_interval=0.2) as server,
        httpx.Client(base_url=server.base_url, timeout=20) as client,
        client.stream("GET", "/v1/topics/idle/events") as response,
    ):
        lines = response.iter_lines()
        comments = 0
        for line in lines:
            if line.startswith(":"):
                comments += 1
                if comments == 3:
                    break
        assert comments == 3


def stalled_stream(server: RunningServer, path: str) -> socket.socket:
    """An SSE client that sends its request and then reads only the response head (tiny
    receive buffer): a phone on a dead network."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_slow_consumer_gets_an_error_event_and_the_end(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "d", ws_buffer_bytes=64 * 1024) as server,
        server.client() as client,
    ):
        client.post("/v1/topics", json={"name": "fast", "partitions": 1})
        slow = stalled_stream(server, "/v1/topics/fast/events")
        with sse(server.base_url, "fast") as healthy:
            next(healthy)
            total = received = 0
            deadline = time.monotonic() + 60
            closed = False
            while not closed and time.monotonic() < deadline:
                produce(client, "fast", [{"value": "x" * 1_000} for _ in range(10)])
                total += 10
                received += len(take(healthy, 10))  # the healthy one keeps up
                if total % 200 == 0:
                    closed = "eddy_slow_consumer_closes_total 1.0" in client.get("/metrics").text
            assert closed, "slow subscriber was never ended"
            assert received == total
        # The stalled client finally reads: the records in flight, then the error event, then
        # the end of the chunked body.
        slow.settimeout(20)
        stream = b""
        while chunk := slow.recv(65536):
            stream += chunk
            if stream.endswith(b"\r\n0\r\n\r\n"):
                break
        slow.close()
    assert stream.endswith(b"\r\n0\r\n\r\n")
    start = stream.rindex(b"event: error\ndata: ") + len(b"event: error\ndata: ")
    error = json.loads(stream[start : stream.index(b"\n", start)])
    assert error["code"] == "slow_consumer"
    assert error["details"] == {"limit_bytes": 64 * 1024}


def test_a_stalled_client_is_dropped_after_the_send_timeout(tmp_path: Path) -> None:
    """A client that takes nothing at all: its subscription ends when its unsent data passes the
    limit, and the stream (with what is still queued) is dropped after --sse-send-timeout."""
    with (
        serve_in_thread(tmp_path / "d", ws_buffer_bytes=64 * 1024, sse_send_timeout=1) as server,
        server.client() as client,
    ):
        client.post("/v1/topics", json={"name": "stall", "partitions": 1})
        stalled = stalled_stream(server, "/v1/topics/stall/events")
        broker = server.app.state.broker
        with stalled:
            sent = 0
            while broker.open_streams and sent < 20_000:  # kernel buffers take some first
                produce(client, "stall", [{"value": "x" * 1_000} for _ in range(10)])
                sent += 10
            wait_until(lambda: broker.open_streams == 0, timeout=30)
            assert "eddy_slow_consumer_closes_total 1.0" in client.get("/metrics").text


class Reader(threading.Thread):
    """Reads an SSE stream until it ends, keeping every record event."""

    def __init__(self, base_url: str, topic: str, query: str, last_id: str | None) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/v1/topics/{topic}/events{query}"
        self.last_id = last_id
        self.events: list[ServerSentEvent] = []
        self.subscribed = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        extra = {"Last-Event-ID": self.last_id} if self.last_id else {}
        try:
            with httpx.stream("GET", self.url, headers=extra, timeout=30) as response:
                assert response.status_code == 200
                for event in EventSource(response).iter_sse():
                    if event.event == "subscribed":
                        self.subscribed.set()
                    elif event.event == "record":
                        self.events.append(event)
        except httpx.HTTPError as exc:  # the server went away mid-stream
            self.error = exc


def test_resume_across_a_server_restart_loses_and_repeats_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    process = start_server_process(data, "--default-partitions", "2", port=port)
    try:
        with httpx.Client(base_url=process.base_url, timeout=10) as client:
            produce(client, "r", [{"value": i} for i in range(20)])
            first = Reader(process.base_url, "r", "?from=earliest", None)
            first.start()
            assert first.subscribed.wait(20)
            wait_until(lambda: len(first.events) == 20)
            produce(client, "r", [{"value": i} for i in range(20, 30)])
            wait_until(lambda: len(first.events) == 30)
        assert process.stop(signal.SIGTERM) == 0
        first.join(20)
        assert not first.is_alive()  # the stream ended with the server
        process = start_server_process(data, port=port)
        with httpx.Client(base_url=process.base_url, timeout=10) as client:
            produce(client, "r", [{"value": i} for i in range(30, 45)])
            second = Reader(process.base_url, "r", "", first.events[-1].id)
            second.start()
            assert second.subscribed.wait(20)
            wait_until(lambda: len(second.events) == 15)
            produce(client, "r", [{"value": i} for i in range(45, 50)])
            wait_until(lambda: len(second.events) == 20)
            stored = fetch_all(client, "r", 0) + fetch_all(client, "r", 1)
    finally:
        process.stop(signal.SIGTERM)
    got = [(e.json()["partition"], e.json()["offset"]) for e in first.events + second.events]
    assert len(got) == len(set(got)) == 50
    assert sorted(got) == sorted((r["partition"], r["offset"]) for r in stored)


def test_documented_in_openapi_and_asyncapi() -> None:
    spec = json.loads((REPO / "openapi" / "openapi.json").read_text())
    operation = spec["paths"]["/v1/topics/{topic}/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {p["name"] for p in operation["parameters"]} >= {
        "topic",
        "from",
        "offsets",
        "partitions",
        "keys",
        "token",
        "Last-Event-ID",
    }
    asyncapi = (REPO / "openapi" / "asyncapi.yaml").read_text()
    assert "address: /v1/topics/{topic}/events" in asyncapi

"""WebSocket subscribe and publish against a real uvicorn, with real WebSocket clients."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import RunningServer, serve_in_thread, wait_until


def produce(client: httpx.Client, topic: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(f"/v1/topics/{topic}/records", json=body)
    assert response.status_code == 200, response.text
    offsets: list[dict[str, Any]] = response.json()["offsets"]
    return offsets


def recv(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return frame


def records(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    out = [recv(ws) for _ in range(count)]
    assert all(f["type"] == "record" for f in out), out
    return out


def close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server closes; return its close code."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    raise AssertionError("server did not close")


def subscribe(server: RunningServer, topic: str, query: str = "") -> ClientConnection:
    return connect(f"{server.ws_url}/v1/topics/{topic}/ws{query}", open_timeout=10)


def test_subscribed_frame_then_live_records(client: httpx.Client, server: RunningServer) -> None:
    client.post("/v1/topics", json={"name": "prices", "partitions": 2})
    produce(client, "prices", {"value": "old", "partition": 1})
    with subscribe(server, "prices") as ws:
        first = recv(ws)
        assert first == {
            "type": "subscribed",
            "partitions": {"0": {"offset": 0}, "1": {"offset": 1}},
        }
        produce(
            client,
            "prices",
            {
                "key": "AAPL",
                "value": {"price": 187.3},
                "headers": {"source": "feed-1"},
                "partition": 1,
            },
        )
        [record] = records(ws, 1)
        assert record == {
            "type": "record",
            "topic": "prices",
            "partition": 1,
            "offset": 1,
            "timestamp": record["timestamp"],
            "key": "AAPL",
            "value": {"price": 187.3},
            "headers": {"source": "feed-1"},
        }


def test_replay_from_earliest_then_live_in_order(
    client: httpx.Client, server: RunningServer
) -> None:
    produce(client, "r", {"records": [{"value": i} for i in range(1200)]})
    with subscribe(server, "r", "?from=earliest") as ws:
        assert recv(ws)["partitions"] == {"0": {"offset": 0}}
        produce(client, "r", {"value": "live"})
        got = records(ws, 1201)
        assert [r["offset"] for r in got] == list(range(1201))
        assert got[-1]["value"] == "live"


def test_no_loss_or_duplicates_while_producing_during_subscribe(
    client: httpx.Client, server: RunningServer
) -> None:
    """Records committed while a subscriber switches from replay to live are delivered once."""
    client.post("/v1/topics", json={"name": "race", "partitions": 2})
    total = 600
    stop = threading.Event()

    def producer() -> None:
        with server.client() as c:
            for i in range(total):
                produce(c, "race", {"key": f"k{i % 7}", "value": i})
        stop.set()

    thread = threading.Thread(target=producer)
    thread.start()
    wait_until(
        lambda: (
            sum(p["high_watermark"] for p in client.get("/v1/topics/race").json()["partitions"])
            > 50
        )
    )
    with subscribe(server, "race", "?from=earliest") as ws:
        recv(ws)
        got = records(ws, total)
    thread.join()
    by_partition: dict[int, list[int]] = {0: [], 1: []}
    for r in got:
        by_partition[r["partition"]].append(r["offset"])
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))  # in order, no gaps, no repeats
    assert sorted(r["value"] for r in got) == list(range(total))


def test_resume_by_offsets_after_reconnect(client: httpx.Client, server: RunningServer) -> None:
    client.post("/v1/topics", json={"name": "resume", "partitions": 2})
    produce(client, "resume", {"records": [{"value": i, "partition": i % 2} for i in range(10)]})
    seen: dict[int, int] = {}
    seen_values: set[int] = set()
    with subscribe(server, "resume", "?from=earliest") as ws:
        recv(ws)
        for r in records(ws, 6):
            seen[r["partition"]] = r["offset"] + 1
            seen_values.add(r["value"])
    # records produced while disconnected
    produce(
        client, "resume", {"records": [{"value": 10 + i, "partition": i % 2} for i in range(4)]}
    )
    query = ",".join(f"{p}:{o}" for p, o in sorted(seen.items()))
    with subscribe(server, "resume", f"?offsets={query}") as ws:
        assert recv(ws)["partitions"] == {str(p): {"offset": o} for p, o in seen.items()}
        rest = records(ws, 14 - 6)
    values = [r["value"] for r in rest]
    assert sorted(values) == sorted(set(range(14)) - seen_values)  # nothing lost or repeated


def test_partition_and_key_filters(client: httpx.Client, server: RunningServer) -> None:
    client.post("/v1/topics", json={"name": "stocks", "partitions": 3})
    with (
        subscribe(server, "stocks", "?keys=AAPL,MSFT") as keyed,
        subscribe(server, "stocks", "?partitions=1") as part,
    ):
        recv(keyed)
        assert list(recv(part)["partitions"]) == ["1"]
        for symbol in ["GOOG", "AAPL", "TSLA", "MSFT", "AAPL"]:
            produce(client, "stocks", {"key": symbol, "value": symbol})
        produce(client, "stocks", {"value": "p1", "partition": 1})
        assert [r["key"] for r in records(keyed, 3)] == ["AAPL", "MSFT", "AAPL"]
        described = client.get("/v1/topics/stocks").json()
        on_p1 = described["partitions"][1]["high_watermark"]
        got = records(part, on_p1)
        assert {r["partition"] for r in got} == {1} and got[-1]["value"] == "p1"


@pytest.mark.parametrize(
    "query",
    [
        "?from=middle",
        "?offsets=0-5",
        "?offsets=x:1",
        "?partitions=a",
        "?partitions=9",
        "?offsets=0:99",
        "?bogus=1",
        "?offsets=0:-1",
        "?keys=",
        "?keys=,",
        "?partitions=0&offsets=1:0",
        "?group=g&offsets=0:0",
        "?group=g&partitions=0",
        "?auto_commit=true",
        "?group=g&auto_commit=maybe",
        "?group=bad%20name",
    ],
)
def test_bad_parameters_close_4400(client: httpx.Client, server: RunningServer, query: str) -> None:
    client.post("/v1/topics", json={"name": "p", "partitions": 1})
    with subscribe(server, "p", query) as ws:
        error = recv(ws)
        assert error["type"] == "error" and error["code"] in {
            "invalid_request",
            "partition_not_found",
            "offset_out_of_range",
        }
        assert close_code(ws) == 4400


def test_offset_above_high_watermark_is_offset_out_of_range(
    client: httpx.Client, server: RunningServer
) -> None:
    produce(client, "hw", {"value": 1})
    with subscribe(server, "hw", "?offsets=0:5") as ws:
        error = recv(ws)
        assert error["code"] == "offset_out_of_range"
        assert error["details"]["high_watermark"] == 1
        assert close_code(ws) == 4400


def test_topic_deletion_closes_4404(client: httpx.Client, server: RunningServer) -> None:
    produce(client, "doomed", {"value": 1})
    with (
        subscribe(server, "doomed") as ws,
        connect(f"{server.ws_url}/v1/topics/doomed/publish") as pub,
    ):
        recv(ws)
        assert client.delete("/v1/topics/doomed").status_code == 204
        assert close_code(ws) == 4404
        assert close_code(pub) == 4404


def test_unknown_topic_without_auto_create_closes_4404(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "d", auto_create_topics=False) as server,
        subscribe(server, "missing") as ws,
    ):
        assert recv(ws)["code"] == "topic_not_found"
        assert close_code(ws) == 4404


def test_subscribe_auto_creates_topic(client: httpx.Client, server: RunningServer) -> None:
    with subscribe(server, "fresh") as ws:
        assert recv(ws)["type"] == "subscribed"
    assert client.get("/v1/topics/fresh").status_code == 200


def stalled_websocket(server: RunningServer, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (tiny receive
    buffer), like a phone on a dead network."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_slow_subscriber_is_closed_4408_without_slowing_others(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "d", ws_buffer_bytes=64 * 1024) as server,
        server.client() as client,
    ):
        client.post("/v1/topics", json={"name": "fast", "partitions": 1})
        slow = stalled_websocket(server, "/v1/topics/fast/ws")
        with subscribe(server, "fast") as healthy:
            recv(healthy)
            batch = {"records": [{"value": "x" * 1_000} for _ in range(10)]}
            total = received = 0
            deadline = time.monotonic() + 60
            closed = False
            while not closed and time.monotonic() < deadline:
                produce(client, "fast", batch)
                total += 10
                received += len(records(healthy, 10))  # the healthy one keeps up
                if total % 200 == 0:
                    closed = "eddy_slow_consumer_closes_total 1.0" in client.get("/metrics").text
            assert closed, "slow subscriber was never closed"
            assert received == total
        # The stalled client finally reads: what was already in flight, then an error frame
        # saying why and a close frame with code 4408 (0x1138) and a short reason (unmasked
        # server frames, read raw: the records before them are cut off mid-stream).
        close = b"\x88\x13\x11\x38consumer too slow"
        slow.settimeout(20)
        stream = b""
        while chunk := slow.recv(65536):
            stream += chunk
            if stream.endswith(close):
                break
        slow.close()
        assert stream.endswith(close)
        error = json.loads(stream[stream.rindex(b'{"type":"error"') : -len(close)])
        assert error["type"] == "error"
        assert error["code"] == "slow_consumer"
        assert error["details"] == {"limit_bytes": 64 * 1024}


def test_publish_acks_in_order_with_errors_inline(
    client: httpx.Client, server: RunningServer
) -> None:
    client.post("/v1/topics", json={"name": "pub", "partitions": 2})
    with connect(f"{server.ws_url}/v1/topics/pub/publish") as ws:
        for i in range(50):
            ws.send(json.dumps({"id": f"c-{i}", "key": "k", "value": i}))
        ws.send(json.dumps({"id": "bad-1", "value": 1, "partition": 9}))
        ws.send("not json")
        ws.send(b"\x00binary")
        ws.send(json.dumps({"id": 7, "value": "x" * 2_000_000}))
        ws.send(json.dumps({"id": "last", "value": "ok"}))
        answers = [recv(ws) for _ in range(55)]
    acks = answers[:50]
    assert [a["id"] for a in acks] == [f"c-{i}" for i in range(50)]
    assert all(a["type"] == "ack" for a in acks)
    assert [a["offset"] for a in acks] == list(range(50))  # one key: one partition, in order
    assert answers[50] == {
        **answers[50],
        "type": "error",
        "id": "bad-1",
        "code": "partition_not_found",
    }
    assert answers[51]["type"] == "error" and answers[51]["code"] == "invalid_request"
    assert answers[52]["type"] == "error" and answers[52]["code"] == "invalid_request"
    assert answers[53]["code"] == "record_too_large" and answers[53]["id"] == 7
    assert answers[53]["details"]["max_message_bytes"] == 1_048_576
    assert answers[54]["type"] == "ack" and answers[54]["id"] == "last"
    fetched = client.get(
        "/v1/topics/pub/partitions/{}/records".format(acks[0]["partition"]),
        params={"offset": 0, "limit": 1000},
    ).json()
    assert [r["value"] for r in fetched["records"]][:50] == list(range(50))


def test_publish_refuses_unknown_parameters(server: RunningServer) -> None:
    with connect(f"{server.ws_url}/v1/topics/pub/publish?bogus=1") as ws:
        error = recv(ws)
        assert error["type"] == "error" and error["code"] == "invalid_request"
        assert close_code(ws) == 4400


def test_publish_and_subscribe_together(client: httpx.Client, server: RunningServer) -> None:
    with (
        subscribe(server, "chat") as sub,
        connect(f"{server.ws_url}/v1/topics/chat/publish") as pub,
    ):
        recv(sub)
        pub.send(json.dumps({"id": 1, "value": {"text": "hi"}}))
        ack = recv(pub)
        [record] = records(sub, 1)
        assert ack["offset"] == record["offset"] and record["value"] == {"text": "hi"}


def test_websocket_metrics_count_open_connections(
    client: httpx.Client, server: RunningServer
) -> None:
    with subscribe(server, "g") as ws:
        recv(ws)
        text = client.get("/metrics").text
        assert 'eddy_websockets_open{endpoint="subscribe"} 1.0' in text
    wait_until(
        lambda: 'eddy_websockets_open{endpoint="subscribe"} 0.0' in client.get("/metrics").text
    )


def test_connections_beyond_the_limit_are_closed_1013(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "d", max_websockets=2) as server:
        with subscribe(server, "t") as first, subscribe(server, "t") as second:
            recv(first)
            recv(second)
            with subscribe(server, "t") as third:
                assert close_code(third) == 1013
        # slots are given back when connections close
        with subscribe(server, "t") as again:
            assert recv(again)["type"] == "subscribed"

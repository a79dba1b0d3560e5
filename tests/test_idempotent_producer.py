"""The idempotent producer over REST and WebSocket, across restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from tests.conftest import RunningServer, serve_in_thread


def send(
    client: httpx.Client, topic: str, sequence: int, values: list[Any], producer: str = "phone-42"
) -> httpx.Response:
    return client.post(
        f"/v1/topics/{topic}/records",
        json={
            "records": [{"key": "k", "value": v} for v in values],
            "producer": {"id": producer, "sequence": sequence},
        },
    )


def high_watermark(client: httpx.Client, topic: str) -> int:
    hw: int = client.get(f"/v1/topics/{topic}").json()["partitions"][0]["high_watermark"]
    return hw


def test_rest_retries_are_not_appended_twice(client: httpx.Client) -> None:
    first = send(client, "t", 17, ["a", "b"])  # the first request may use any sequence
    assert first.status_code == 200
    retry = send(client, "t", 17, ["a", "b"])
    assert retry.status_code == 200 and retry.json() == first.json()
    assert high_watermark(client, "t") == 2
    assert send(client, "t", 18, ["c"]).json()["offsets"][0]["offset"] == 2
    gap = send(client, "t", 20, ["x"])
    assert gap.status_code == 409
    body = gap.json()["error"]
    assert body["code"] == "out_of_order_sequence" and body["details"]["expected"] == 19
    assert send(client, "t", 5, ["old"]).status_code == 409
    assert high_watermark(client, "t") == 3
    # another producer id has its own sequence; so does the same id on another topic
    assert send(client, "t", 0, ["other"], producer="phone-7").status_code == 200
    assert send(client, "u", 0, ["other topic"]).status_code == 200


def test_only_the_last_five_requests_are_remembered(client: httpx.Client) -> None:
    responses = [send(client, "t", s, [s]).json() for s in range(10)]
    for s in range(5, 10):
        assert send(client, "t", s, [s]).json() == responses[s]
    assert send(client, "t", 4, [4]).status_code == 409
    assert high_watermark(client, "t") == 10


def test_a_rejected_request_does_not_use_up_its_sequence(client: httpx.Client) -> None:
    client.post("/v1/topics", json={"name": "t", "config": {"max.message.bytes": 100}})
    assert send(client, "t", 1, ["ok"]).status_code == 200
    assert send(client, "t", 2, ["x" * 500]).status_code == 413
    assert send(client, "t", 2, ["fits"]).status_code == 200
    bad = client.post(
        "/v1/topics/t/records",
        json={
            "records": [{"value": 1, "partition": 9}],
            "producer": {"id": "phone-42", "sequence": 3},
        },
    )
    assert bad.status_code == 404
    assert send(client, "t", 3, ["still 3"]).status_code == 200


def test_invalid_producer_fields_are_422(client: httpx.Client) -> None:
    for producer in (
        {"id": "", "sequence": 1},
        {"id": "a b", "sequence": 1},
        {"id": "p", "sequence": -1},
        {"id": "p"},
        {"sequence": 1},
        {"id": "p", "sequence": 1, "epoch": 2},
    ):
        response = client.post(
            "/v1/topics/t/records", json={"records": [{"value": 1}], "producer": producer}
        )
        assert response.status_code == 422, producer


def test_websocket_publish_shares_the_sequence_with_rest(
    client: httpx.Client, server: RunningServer
) -> None:
    assert send(client, "t", 1, ["rest"]).status_code == 200
    url = f"{server.ws_url}/v1/topics/t/publish?producer_id=phone-42"
    with connect(url) as ws:
        ws.send(json.dumps({"id": "a", "key": "k", "value": "ws", "sequence": 2}))
        ack = json.loads(ws.recv(timeout=10))
        assert ack["type"] == "ack" and ack["offset"] == 1
        ws.send(json.dumps({"id": "b", "key": "k", "value": "ws", "sequence": 2}))  # a retry
        again = json.loads(ws.recv(timeout=10))
        assert again == {**ack, "id": "b"}
        ws.send(json.dumps({"id": "c", "value": "skip", "sequence": 9}))
        assert json.loads(ws.recv(timeout=10))["code"] == "out_of_order_sequence"
        ws.send(json.dumps({"id": "d", "value": "no sequence"}))
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid_request"
    assert send(client, "t", 2, ["rest retry of the ws one"]).json()["offsets"][0]["offset"] == 1
    assert send(client, "t", 3, ["next"]).status_code == 200
    with connect(f"{server.ws_url}/v1/topics/t/publish") as ws:
        ws.send(json.dumps({"value": 1, "sequence": 4}))  # sequence without producer_id
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid_request"
    with connect(f"{server.ws_url}/v1/topics/t/publish?producer_id=bad%20id") as ws:
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid_request"
    assert high_watermark(client, "t") == 3


def test_pipelined_retry_of_a_request_still_in_flight(
    server: RunningServer, client: httpx.Client
) -> None:
    with connect(f"{server.ws_url}/v1/topics/t/publish?producer_id=p") as ws:
        for _ in range(3):  # sent before the first is committed: same answer, one append
            ws.send(json.dumps({"value": "once", "sequence": 0}))
        acks = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
    assert {(a["type"], a["offset"]) for a in acks} == {("ack", 0)}
    assert high_watermark(client, "t") == 1


def test_producer_state_survives_a_restart(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "d") as server, server.client() as c:
        original = send(c, "t", 41, ["a"]).json()
    with serve_in_thread(tmp_path / "d") as server, server.client() as c:
        assert send(c, "t", 41, ["a"]).json() == original
        assert send(c, "t", 43, ["b"]).status_code == 409
        assert send(c, "t", 42, ["b"]).status_code == 200
        assert high_watermark(c, "t") == 2

"""Record headers kept exactly as written (order, repeated names, null values, bytes that are not
UTF-8): the pure rules of models/headers.py, the contract over REST, WebSocket and SSE (these
tests run on the Kafka engine too: test_kafka_contract.py imports them), and real Kafka
producers and consumers on `eddy serve --kafka-listener`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as KafkaPartition
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from websockets.sync.client import connect

from eddy.models.headers import (
    HeaderValue,
    decode_headers,
    encode_headers,
    exact_headers,
    json_view,
    kafka_headers,
)
from eddy.storage import record_size
from tests.conftest import RunningServer, ServerProcess, free_port, start_server_process
from tests.test_rest import assert_error, create, fetch, produce
from tests.test_sse import sse, take
from tests.test_websocket import records, recv, subscribe

# What Kafka producers may send and a JSON object cannot hold: a repeated name, a null value,
# an empty value (which is not null), in an order that is not sorted.
EXACT: list[list[str | None]] = [
    ["trace", "a1"],
    ["retry", None],
    ["trace", "b2"],
    ["empty", ""],
    ["z", "last"],
]
EXACT_LAST = {"trace": "b2", "empty": "", "z": "last"}  # "retry": last value null, left out


# --- the rules (pure) -----------------------------------------------------------------------------
def test_headers_a_dict_holds_exactly_stay_a_dict() -> None:
    assert exact_headers([("b", "2"), ("a", "1")]) == {"b": "2", "a": "1"}
    assert list(exact_headers([("b", "2"), ("a", "1")])) == ["b", "a"]  # order kept
    assert exact_headers([("a", b"caf\xc3\xa9")]) == {"a": "café"}  # UTF-8 bytes are text
    assert exact_headers([]) == {}


@pytest.mark.parametrize(
    ("pairs", "exact"),
    [
        ([("a", "1"), ("a", "2")], (("a", "1"), ("a", "2"))),
        ([("a", None)], (("a", None),)),
        ([("a", b"\xff"), ("b", b"1")], (("a", b"\xff"), ("b", "1"))),
    ],
)
def test_headers_a_dict_would_change_stay_pairs(
    pairs: list[tuple[str, HeaderValue]], exact: tuple[tuple[str, HeaderValue], ...]
) -> None:
    assert exact_headers(pairs) == exact


header_pairs_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "é", ""]),
        st.one_of(st.none(), st.text(max_size=5), st.binary(max_size=5)),
    ),
    max_size=6,
)


@given(header_pairs_strategy)
@settings(deadline=None)  # pure and quick, but the machine may be busy
def test_stored_headers_read_back_as_kafka_wrote_them(
    pairs: list[tuple[str, HeaderValue]],
) -> None:
    headers = exact_headers(pairs)
    as_bytes = [(n, v.encode() if isinstance(v, str) else v) for n, v in pairs]
    assert decode_headers(encode_headers(headers)) == headers
    assert kafka_headers(decode_headers(encode_headers(headers))) == as_bytes
    size = sum(len(n.encode()) + len(v or b"") for n, v in as_bytes)
    assert record_size(None, None, headers) == size
    out: dict[str, Any] = {}
    json_view(headers, out)
    assert ("header_list" in out) == (not isinstance(headers, dict))
    if "header_list" in out:
        assert [n for n, _ in out["header_list"]] == [n for n, _ in pairs]
        assert [v is None for _, v in out["header_list"]] == [v is None for _, v in pairs]
    json.dumps(out, allow_nan=False)  # always JSON


def test_json_view_of_non_utf8_values_is_text_with_replacement_characters() -> None:
    out: dict[str, Any] = {}
    json_view(exact_headers([("id", b"\x00\xff\x01"), ("id", None)]), out)
    assert out == {"headers": {}, "header_list": [["id", "\x00\ufffd\x01"], ["id", None]]}


# --- the contract over REST, WebSocket and SSE (also run on the Kafka engine) -------------------
def test_headers_sent_as_a_list_come_back_exactly_everywhere(
    client: httpx.Client, server: RunningServer
) -> None:
    create(client, "hdr")
    sent = [
        {"value": 1, "headers": EXACT},
        {"value": 2, "headers": [["b", "2"], ["a", "1"]]},  # a list a dict holds exactly
        {"value": 3, "headers": {"source": "feed-1"}},
        {"value": 4, "headers": [["only-null", None]]},
        {"value": 5},
    ]
    produce(client, "hdr", {"records": sent})
    expected = [
        {"headers": EXACT_LAST, "header_list": EXACT},
        {"headers": {"b": "2", "a": "1"}},
        {"headers": {"source": "feed-1"}},
        {"headers": {}, "header_list": [["only-null", None]]},
        {"headers": {}},
    ]

    def headers_of(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k in ("headers", "header_list")}

    fetched = fetch(client, "hdr", 0, offset="earliest")["records"]
    assert [headers_of(r) for r in fetched] == expected
    assert list(fetched[1]["headers"]) == ["b", "a"]  # in the order sent
    with subscribe(server, "hdr", "?from=earliest") as ws:
        assert recv(ws)["type"] == "subscribed"
        assert [headers_of(r) for r in records(ws, 5)] == expected
    with sse(server.base_url, "hdr", "?from=earliest") as events:
        assert next(events).event == "subscribed"
        assert [headers_of(e.json()) for e in take(events, 5)] == expected


def test_websocket_publish_takes_headers_as_a_list(
    client: httpx.Client, server: RunningServer
) -> None:
    create(client, "hdr-pub")
    with connect(f"{server.ws_url}/v1/topics/hdr-pub/publish", open_timeout=10) as ws:
        ws.send(json.dumps({"id": 1, "value": "x", "headers": EXACT}))
        ws.send(json.dumps({"id": 2, "value": "y", "headers": [["k", "v"]]}))
        assert [recv(ws)["type"] for _ in range(2)] == ["ack", "ack"]
    got = fetch(client, "hdr-pub", 0, offset="earliest")["records"]
    assert [(r["headers"], r.get("header_list")) for r in got] == [
        (EXACT_LAST, EXACT),
        ({"k": "v"}, None),
    ]


@pytest.mark.parametrize(
    "headers",
    [
        [["a"]],
        [["a", "1", "2"]],
        [["a", 1]],
        [[1, "a"]],
        [{"a": "1"}],
        "a=1",
        {"a": None},  # the object form holds text only; null goes in the list form
    ],
)
def test_malformed_headers_get_422(client: httpx.Client, headers: Any) -> None:
    create(client, "hdr-bad")
    response = client.post("/v1/topics/hdr-bad/records", json={"value": 1, "headers": headers})
    assert_error(response, 422, "invalid_request")


def test_a_header_list_value_that_is_not_unicode_gets_422(client: httpx.Client) -> None:
    create(client, "hdr-bad")
    body = '{"value": 1, "headers": [["a", "\\ud800"]]}'
    response = client.post(
        "/v1/topics/hdr-bad/records", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "invalid_request")
    assert fetch(client, "hdr-bad", 0, offset="earliest")["records"] == []


def test_every_header_counts_toward_max_message_bytes(client: httpx.Client) -> None:
    create(client, "hdr-size", **{"max.message.bytes": 10})
    # the value's 1 byte + "a1" + "a2" + "b" (a null value counts 0) = 6 bytes: fits
    fits = {"value": 1, "headers": [["a", "1"], ["a", "2"], ["b", None]]}
    produce(client, "hdr-size", fits)
    # 1 + 5 x 2 = 11 bytes, although the last value per name alone would be 3
    too_big = {"value": 1, "headers": [["a", str(i)] for i in range(5)]}
    response = client.post("/v1/topics/hdr-size/records", json=too_big)
    assert assert_error(response, 413, "record_too_large")["size"] == 11
    assert client.get("/v1/topics/hdr-size").json()["partitions"][0]["size_bytes"] == 6


# --- real Kafka clients on Eddy's Kafka listener ------------------------------------------------
@pytest.fixture(scope="module")
def eddy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    server = start_server_process(
        tmp_path_factory.mktemp("headers") / "data", "--kafka-listener", f"127.0.0.1:{port}"
    )
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop()
        print(server.output[-5000:])  # shown with a failure: what the server said


# As librdkafka's test 0085 sends them (and 0073's null value), plus bytes that are not UTF-8.
KAFKA_HEADERS: list[tuple[str, str | bytes | None]] = [
    ("Kafka", b"yes"),
    ("Null", None),
    ("Kafka", b"again"),
    ("Empty", b""),
    ("Binary", b"\x00\xff\xfe"),
    ("Kafka", b"third"),
]


def confluent_records(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False}
    )
    try:
        consumer.assign([KafkaPartition(topic, 0, OFFSET_BEGINNING)])
        got: list[Any] = []
        while len(got) < count:
            message = consumer.poll(30)
            assert message is not None, f"only {len(got)} of {count} records came"
            assert message.error() is None, message.error()
            got.append(message)
        return got
    finally:
        consumer.close()


def test_confluent_and_kafka_python_producers_headers_read_back_exactly(
    eddy: tuple[ServerProcess, str],
) -> None:
    server, bootstrap = eddy
    topic = f"h-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b'"from librdkafka"', b"k", partition=0, headers=KAFKA_HEADERS)
    assert producer.flush(30) == 0
    # kafka-python's send() refuses a null header value (its API, not the protocol)
    not_null = [(name, value) for name, value in KAFKA_HEADERS if value is not None]
    python_producer = KafkaProducer(bootstrap_servers=bootstrap)
    python_producer.send(topic, b'"from kafka-python"', partition=0, headers=not_null)
    python_producer.flush(30)
    python_producer.close()
    got = confluent_records(bootstrap, topic, 2)
    assert [m.headers() for m in got] == [KAFKA_HEADERS, not_null]

    header_list: list[list[str | None]] = [
        ["Kafka", "yes"],
        ["Null", None],
        ["Kafka", "again"],
        ["Empty", ""],
        ["Binary", "\x00\ufffd\ufffd"],  # the JSON view of bytes that are not UTF-8
        ["Kafka", "third"],
    ]
    lists = [header_list, [h for h in header_list if h[1] is not None]]
    last = {"Kafka": "third", "Empty": "", "Binary": "\x00\ufffd\ufffd"}
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        fetched = fetch(client, topic, 0, offset="earliest")["records"]
    assert [(r["value"], r["headers"], r["header_list"]) for r in fetched] == [
        ("from librdkafka", last, lists[0]),
        ("from kafka-python", last, lists[1]),
    ]
    with connect(f"{server.ws_url}/v1/topics/{topic}/ws?from=earliest", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        frames = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
        assert [(f["headers"], f["header_list"]) for f in frames] == [(last, h) for h in lists]
    with sse(server.base_url, topic, "?from=earliest") as events:
        assert next(events).event == "subscribed"
        events_got = [e.json() for e in take(events, 2)]
        assert [(e["headers"], e["header_list"]) for e in events_got] == [(last, h) for h in lists]


def test_headers_produced_over_rest_reach_kafka_consumers_in_order(
    eddy: tuple[ServerProcess, str],
) -> None:
    server, bootstrap = eddy
    topic = f"h-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        create(client, topic)
        produce(
            client,
            topic,
            {
                "records": [
                    {"value": 1, "headers": EXACT},
                    {"value": 2, "headers": {"z": "1", "a": "2"}},
                    {"value": 3},
                ]
            },
        )
    as_kafka = [
        [(name, None if value is None else value.encode()) for name, value in EXACT],
        [("z", b"1"), ("a", b"2")],
        None,  # librdkafka: a record without headers has none
    ]
    assert [m.headers() for m in confluent_records(bootstrap, topic, 3)] == as_kafka

    async def aiokafka_headers() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            batches = await consumer.getmany(partition, timeout_ms=30_000, max_records=3)
            return [list(m.headers) for m in batches.get(partition, [])]
        finally:
            await consumer.stop()

    assert asyncio.run(aiokafka_headers()) == [as_kafka[0], as_kafka[1], []]


def test_headers_survive_a_restart_of_the_server(tmp_path: Path) -> None:
    port = free_port()
    args = ("--kafka-listener", f"127.0.0.1:{port}")
    server = start_server_process(tmp_path / "data", *args)
    try:
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
        producer.produce("kept", b"1", partition=0, headers=KAFKA_HEADERS)
        assert producer.flush(30) == 0
    finally:
        server.stop()
    server = start_server_process(tmp_path / "data", *args)
    try:
        [message] = confluent_records(f"127.0.0.1:{port}", "kept", 1)
        assert message.headers() == KAFKA_HEADERS
    finally:
        server.stop()

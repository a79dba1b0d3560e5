"""WebSocket endpoints against garbage: every bad frame gets an error frame, the connection stays
usable, oversized frames close 1009, floods and random bytes crash nothing, and nothing bad is
stored. Real uvicorn in a thread, real WebSocket clients."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import RunningServer, fetch_all, serve_in_thread, wait_until

Frame = str | bytes
ANY_ID = object()  # the answer's id is not checked (the frame's id cannot be echoed)

DEEP = 100_000  # levels of nesting: far beyond any recursion limit
DEEP_ARRAY = "[" * DEEP + "]" * DEEP
DEEP_OBJECT = '{"a":' * DEEP + "1" + "}" * DEEP
HUGE_INT = "1" + "0" * 400  # 10**400
TOO_MANY_DIGITS = "9" * 5000  # beyond Python's 4300-digit int parsing limit


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(tmp_path / "data") as running:
        yield running
        assert_no_server_errors(running)


def assert_no_server_errors(server: RunningServer) -> None:
    """The server still answers REST, and no HTTP request ever got a 5xx."""
    with server.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
    series = [
        line for line in metrics.splitlines() if line.startswith("eddy_http_request_duration")
    ]
    assert series, "the request latency metric is missing"
    assert [line for line in series if 'status="5' in line] == []


def ws_connect(server: RunningServer, path: str, **kwargs: Any) -> ClientConnection:
    """An open connection (`with ws_connect(...) as ws:` closes it, as does `ws.close()`)."""
    url = f"{server.ws_url}{path}"
    ws: ClientConnection = connect(url, open_timeout=10, close_timeout=5, **kwargs).__enter__()
    return ws


def recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    frame = ws.recv(timeout=timeout)
    assert isinstance(frame, str), f"server sent a binary frame: {frame!r}"
    data: dict[str, Any] = json.loads(frame)
    assert isinstance(data, dict), data
    return data


def recv_control(
    ws: ClientConnection, timeout: float = 10, skip: tuple[str, ...] = ("record",)
) -> dict[str, Any]:
    """The next frame whose type is not in `skip` (records may interleave with answers)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = recv_json(ws, max(deadline - time.monotonic(), 0.01))
        if frame["type"] not in skip:
            return frame


def close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server closes; its close code (None: closed without a close frame)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(deadline - time.monotonic(), 0.01))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        pass
    raise AssertionError("server did not close the connection")


def describe(frame: Frame) -> str:
    text = repr(frame)
    return text if len(text) <= 70 else f"{text[:60]}... ({len(frame)} chars)"


def produce(c: httpx.Client, topic: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = c.post(f"/v1/topics/{topic}/records", json=body)
    assert response.status_code == 200, response.text
    offsets: list[dict[str, Any]] = response.json()["offsets"]
    return offsets


class Probe:
    """One WebSocket that sends frames and collects what went wrong; reconnects if it breaks."""

    def __init__(self, server: RunningServer, path: str, greeting: str | None) -> None:
        self.server = server
        self.path = path
        self.greeting = greeting  # the type of the server's first frame, if it sends one
        self.problems: list[str] = []
        self.ws = self._open()

    def _open(self) -> ClientConnection:
        ws = ws_connect(self.server, self.path)
        if self.greeting is not None:
            first = recv_control(ws)
            assert first["type"] == self.greeting, first
        return ws

    def send(self, what: str, frame: Frame, answer_types: tuple[str, ...] = ("error",)) -> Any:
        """Send `frame`; return the answer (a control frame), or None after noting a problem."""
        try:
            self.ws.send(frame)
            answer = recv_control(self.ws, timeout=5, skip=("record", "assignment"))
        except (ConnectionClosed, TimeoutError) as exc:
            self.problems.append(f"{what} ({describe(frame)}): {type(exc).__name__}: {exc}")
            self.ws.close()
            self.ws = self._open()
            return None
        if answer.get("type") not in answer_types:
            self.problems.append(f"{what}: expected {'/'.join(answer_types)}, got {answer}")
            return None
        return answer

    def close(self) -> None:
        self.ws.close()


# --- /publish ---------------------------------------------------------------------------------

# (what, frame, expected error code, expected id in the error frame)
PUBLISH_BAD: list[tuple[str, Frame, str, object]] = [
    ("binary frame", b"\x00\xff\xfe garbage", "invalid_request", None),
    ("binary frame holding a valid record", b'{"id": "b0", "value": 1}', "invalid_request", None),
    ("empty text frame", "", "invalid_request", None),
    ("whitespace", " \n\t ", "invalid_request", None),
    ("not JSON", "hello there", "invalid_request", None),
    ("truncated JSON", '{"id": "t1", "value": [1, 2', "invalid_request", None),
    ("trailing garbage", '{"id": "t2", "value": 1} }', "invalid_request", None),
    ("JSON array", "[1, 2, 3]", "invalid_request", None),
    ("JSON string with a lone surrogate", '"\\ud800"', "invalid_request", None),
    ("JSON null", "null", "invalid_request", None),
    ("JSON number", "42", "invalid_request", None),
    ("NaN", '{"id": "n1", "value": NaN}', "invalid_request", None),
    ("-Infinity", '{"id": "n2", "value": -Infinity}', "invalid_request", None),
    ("1e999", '{"id": "n3", "value": 1e999}', "invalid_request", None),
    ("-1e999 nested", '{"value": {"a": [-1e999]}}', "invalid_request", None),
    (
        "5000-digit integer",
        '{"id": "n4", "value": ' + TOO_MANY_DIGITS + "}",
        "invalid_request",
        None,
    ),
    ("lone surrogate in value", '{"id": "s1", "value": "\\ud800"}', "invalid_request", "s1"),
    (
        "lone low surrogate deep in value",
        '{"id": "s2", "value": {"a": ["ok", "\\udfff"]}}',
        "invalid_request",
        "s2",
    ),
    ("lone surrogate in key", '{"id": "s3", "key": "x\\ud800"}', "invalid_request", "s3"),
    (
        "lone surrogate in header name",
        '{"id": "s4", "value": 1, "headers": {"\\ud800": "v"}}',
        "invalid_request",
        "s4",
    ),
    (
        "lone surrogate in header value",
        '{"id": "s5", "value": 1, "headers": {"h": "\\udbff"}}',
        "invalid_request",
        "s5",
    ),
    ("lone surrogate as field name", '{"id": "s6", "\\ud800": 1}', "invalid_request", "s6"),
    (
        "unknown frame type",
        '{"id": "u1", "type": "subscribe", "value": 1}',
        "invalid_request",
        "u1",
    ),
    ("unknown field", '{"id": "u2", "valeu": 1}', "invalid_request", "u2"),
    ("id is an object", '{"id": {"a": 1}, "value": 1}', "invalid_request", None),
    (
        "array nested 100k deep",
        '{"id": "d1", "value": ' + DEEP_ARRAY + "}",
        "invalid_request",
        None,
    ),
    (
        "object nested 100k deep",
        '{"id": "d2", "value": ' + DEEP_OBJECT + "}",
        "invalid_request",
        None,
    ),
    (
        "value nested 600 deep (parses, cannot be stored)",
        '{"id": "d3", "value": ' + "[" * 600 + "]" * 600 + "}",
        "invalid_request",
        "d3",
    ),
    ("partition 10**400", '{"id": "p1", "partition": ' + HUGE_INT + "}", "invalid_request", "p1"),
    ("partition beyond int32", '{"id": "p2", "partition": 2147483648}', "invalid_request", "p2"),
    ("partition -1", '{"id": "p3", "partition": -1}', "invalid_request", "p3"),
    ("partition 1.5", '{"id": "p4", "partition": 1.5}', "invalid_request", "p4"),
    (
        "partition the topic does not have",
        '{"id": "p5", "partition": 2147483647}',
        "partition_not_found",
        "p5",
    ),
    ("timestamp 10**400", '{"id": "ts1", "timestamp": ' + HUGE_INT + "}", "invalid_request", "ts1"),
    ("negative timestamp", '{"id": "ts2", "timestamp": -1}', "invalid_request", "ts2"),
    ("key is a number", '{"id": "k1", "key": 12}', "invalid_request", "k1"),
    ("header value is a number", '{"id": "h1", "headers": {"a": 1}}', "invalid_request", "h1"),
    ("headers is a list", '{"id": "h2", "headers": ["a"]}', "invalid_request", "h2"),
    ("invalid base64", '{"id": "b1", "value_base64": "!!!"}', "invalid_request", "b1"),
    (
        "value and value_base64",
        '{"id": "b2", "value": 1, "value_base64": "AA=="}',
        "invalid_request",
        "b2",
    ),
    (
        "record above max.message.bytes",
        '{"id": "r1", "value": "' + "x" * 2000 + '"}',
        "record_too_large",
        "r1",
    ),
    # The id is echoed in the answer, but a lone surrogate cannot be sent in a (UTF-8) text
    # frame: the record must be refused with an error frame, not half-handled.
    ("lone surrogate in id", '{"id": "\\ud800", "value": 1}', "invalid_request", ANY_ID),
    (
        "lone surrogate in id of a bad record",
        '{"id": "\\udc00", "key": 5}',
        "invalid_request",
        ANY_ID,
    ),
]

# Absurd but valid: acknowledged, and stored exactly. (frame, id, value read back)
PUBLISH_ABSURD_BUT_VALID: list[tuple[str, object, object]] = [
    ('{"id": "big", "value": ' + HUGE_INT + "}", "big", 10**400),
    ('{"id": ' + HUGE_INT + ', "value": "huge id"}', 10**400, "huge id"),
    ('{"id": "neg", "value": -' + HUGE_INT + "}", "neg", -(10**400)),
    ('{"id": "pair", "value": "\\ud83d\\ude00"}', "pair", "\U0001f600"),
    ('{"id": "nul", "value": "a\\u0000b", "key": "\\u0000"}', "nul", "a\x00b"),
    (
        '{"id": "deep", "value": ' + "[" * 200 + "]" * 200 + "}",
        "deep",
        json.loads("[" * 200 + "]" * 200),
    ),
]


def test_publish_answers_every_bad_frame_and_stays_usable(server: RunningServer) -> None:
    with server.client() as c:
        created = c.post(
            "/v1/topics", json={"name": "garbage", "config": {"max.message.bytes": 1000}}
        )
        assert created.status_code == 201, created.text
    probe = Probe(server, "/v1/topics/garbage/publish", None)
    acknowledged: list[object] = []
    try:
        for i, (what, frame, code, frame_id) in enumerate(PUBLISH_BAD):
            error = probe.send(what, frame)
            if error is not None:
                if error["code"] != code or not isinstance(error.get("message"), str):
                    probe.problems.append(f"{what}: expected a {code} error, got {error}")
                elif frame_id is not ANY_ID and error.get("id") != frame_id:
                    probe.problems.append(f"{what}: error frame has id {error.get('id')!r}")
            good = {"id": f"good-{i}", "value": i}  # the connection is still usable
            ack = probe.send(f"good record after {what}", json.dumps(good), ("ack",))
            if ack is not None:
                acknowledged.append(i)
                if ack["id"] != good["id"]:
                    probe.problems.append(f"good record after {what}: ack {ack}")
        for frame, frame_id, value in PUBLISH_ABSURD_BUT_VALID:
            ack = probe.send("absurd but valid record", frame, ("ack",))
            if ack is not None:
                acknowledged.append(value)
                if ack["id"] != frame_id:
                    probe.problems.append(f"{describe(frame)}: ack has id {ack['id']!r}")
    finally:
        probe.close()
    with server.client() as c:
        stored = [r["value"] for r in fetch_all(c, "garbage")]
    # Nothing refused was stored (not even in part); everything acknowledged was, exactly.
    if stored != acknowledged:
        probe.problems.append(f"stored {stored!r:.300} != acknowledged {acknowledged!r:.300}")
    assert not probe.problems, "\n".join(probe.problems)


def test_publish_lone_surrogate_id_gets_an_error_frame(server: RunningServer) -> None:
    """An id that cannot be echoed: an error frame, nothing stored, the connection stays open."""
    with ws_connect(server, "/v1/topics/sid/publish") as ws:
        ws.send('{"id": "ok-1", "value": 1}')
        assert recv_json(ws)["type"] == "ack"
        ws.send('{"id": "\\ud800", "value": 2}')
        try:
            answer = recv_json(ws)
        except ConnectionClosed as closed:
            raise AssertionError(f"no answer, the connection was dropped: {closed!r}") from None
        assert answer["type"] == "error" and answer["code"] == "invalid_request", answer
        ws.send('{"id": "ok-2", "value": 3}')
        ack = recv_json(ws)
        assert ack["type"] == "ack" and ack["id"] == "ok-2", ack
    with server.client() as c:
        assert [r["value"] for r in fetch_all(c, "sid")] == [1, 3]


# --- /ws (plain subscription) -----------------------------------------------------------------

SUBSCRIBER_BAD: list[Frame] = [
    b"\x00\x01\x02",
    b"",
    "",
    "hello",
    '{"type": "commit", "offsets": {"0": 1}}',
    '{"type": "subscribe", "partitions": [0]}',
    "[1, 2]",
    '"\\ud800"',
    '{"\\ud800": "\\udfff"}',
    '{"a": 1e999}',
    TOO_MANY_DIGITS,
    DEEP_ARRAY,
    DEEP_OBJECT,
]


def test_plain_subscription_answers_client_frames_with_errors(server: RunningServer) -> None:
    probe = Probe(server, "/v1/topics/plain/ws", "subscribed")
    try:
        for frame in SUBSCRIBER_BAD:
            error = probe.send("client frame on /ws", frame)
            if error is not None and error.get("code") != "invalid_request":
                probe.problems.append(f"{describe(frame)}: {error}")
        # still subscribed: a record produced now is delivered
        with server.client() as c:
            [meta] = produce(c, "plain", {"key": "k", "value": "after the garbage"})
        record = recv_json(probe.ws)
        assert record["type"] == "record", record
        assert (record["offset"], record["value"]) == (meta["offset"], "after the garbage")
    finally:
        probe.close()
    assert not probe.problems, "\n".join(probe.problems)


# --- /ws?group= (consumer-group member) -------------------------------------------------------


def commit(offsets: str) -> str:
    return '{"type": "commit", "offsets": ' + offsets + "}"


# (frame, expected error code); the topic has 2 partitions with 3 records each.
GROUP_BAD: list[tuple[Frame, str]] = [
    (commit('{"0": 1}').encode(), "invalid_request"),  # binary frame
    ("commit please", "invalid_request"),
    ("", "invalid_request"),
    ("[]", "invalid_request"),
    ("null", "invalid_request"),
    ('"commit"', "invalid_request"),
    ('{"type": "zzz", "offsets": {"0": 1}}', "invalid_request"),
    ('{"offsets": {"0": 1}}', "invalid_request"),
    ('{"type": "commit"}', "invalid_request"),
    (commit("[]"), "invalid_request"),
    (commit("{}"), "invalid_request"),
    (commit('"0:1"'), "invalid_request"),
    (commit('{"x": 1}'), "invalid_request"),
    (commit('{"0": "1"}'), "invalid_request"),
    (commit('{"0": "\\ud800"}'), "invalid_request"),
    (commit('{"0": true}'), "invalid_request"),
    (commit('{"0": 1.5}'), "invalid_request"),
    (commit('{"0": null}'), "invalid_request"),
    (commit('{"0": 1e999}'), "invalid_request"),
    (commit('{"0": ' + TOO_MANY_DIGITS + "}"), "invalid_request"),
    (commit('{"' + TOO_MANY_DIGITS + '": 0}'), "invalid_request"),
    (commit('{"0": ' + HUGE_INT + "}"), "offset_out_of_range"),
    (commit('{"0": -1}'), "offset_out_of_range"),
    (commit('{"0": 4}'), "offset_out_of_range"),  # above the high watermark (3)
    (commit('{"2": 0}'), "partition_not_found"),
    (commit('{"-1": 0}'), "partition_not_found"),
    (commit('{"' + HUGE_INT + '": 0}'), "partition_not_found"),
    (commit('{"0": 2, "7": 1}'), "partition_not_found"),  # refused whole: 0 stays uncommitted
    (commit(DEEP_ARRAY), "invalid_request"),
    (commit(DEEP_OBJECT), "invalid_request"),
    # A partition "number" that is not text: the error message cannot quote it as it is.
    (commit('{"\\ud800": 1}'), "invalid_request"),
]


def group_offsets(c: httpx.Client, group: str) -> dict[int, int | None]:
    response = c.get(f"/v1/groups/{group}")
    assert response.status_code == 200, response.text
    return {o["partition"]: o["committed_offset"] for o in response.json()["offsets"]}


def test_group_member_answers_bad_commits_with_errors(server: RunningServer) -> None:
    with server.client() as c:
        assert c.post("/v1/topics", json={"name": "orders", "partitions": 2}).status_code == 201
        produce(c, "orders", {"records": [{"value": i, "partition": i % 2} for i in range(6)]})
    probe = Probe(server, "/v1/topics/orders/ws?group=billing&from=earliest", "assignment")
    try:
        for frame, code in GROUP_BAD:
            error = probe.send("bad commit", frame)
            if error is not None and error.get("code") != code:
                probe.problems.append(f"{describe(frame)}: expected {code}, got {error}")
        with server.client() as c:
            assert group_offsets(c, "billing") == {0: None, 1: None}  # nothing was committed
        committed = probe.send("good commit", commit('{"0": 2, "1": 3}'), ("committed",))
        if committed is not None and committed["offsets"] != {"0": 2, "1": 3}:
            probe.problems.append(f"good commit answered {committed}")
        with server.client() as c:
            assert group_offsets(c, "billing") == {0: 2, 1: 3}
    finally:
        probe.close()
    assert not probe.problems, "\n".join(probe.problems)


def test_group_commit_with_a_partition_that_is_not_text(server: RunningServer) -> None:
    """{"\\ud800": 1} as offsets: an error frame; the member keeps working, and it leaves the
    group when it disconnects."""
    with server.client() as c:
        assert c.post("/v1/topics", json={"name": "sur", "partitions": 2}).status_code == 201
        produce(c, "sur", {"records": [{"value": i, "partition": i % 2} for i in range(4)]})
    with ws_connect(server, "/v1/topics/sur/ws?group=g1&from=earliest") as ws:
        assert recv_control(ws)["type"] == "assignment"
        ws.send(commit('{"\\ud800": 1}'))
        try:
            error = recv_control(ws, timeout=5)
        except TimeoutError:
            error = {"type": "no answer within 5 s"}
        ws.send(commit('{"0": 1}'))
        try:
            committed = recv_control(ws, timeout=5)
        except TimeoutError:
            committed = {"type": "no answer within 5 s"}
    assert error["type"] == "error" and error["code"] == "invalid_request", error
    assert committed == {"type": "committed", "offsets": {"0": 1}}
    with server.client() as c:
        wait_until(lambda: c.get("/v1/groups/g1").json()["members"] == [], timeout=5)


# --- frames over the size limit ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["publish", "ws", "ws?group=big"])
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_frame_over_the_limit_closes_1009(tmp_path: Path, path: str, binary: bool) -> None:
    with serve_in_thread(tmp_path / "data", max_request_bytes=65536) as server:
        big: Frame = b"x" * 100_000 if binary else '{"value": "' + "x" * 100_000 + '"}'
        with ws_connect(server, f"/v1/topics/big/{path}") as ws:
            if path != "publish":
                recv_control(ws)  # subscribed / assignment
            ws.send(big)
            assert close_code(ws) == 1009
        # a frame just under the limit is fine, on a new connection
        with ws_connect(server, "/v1/topics/big/publish") as ws:
            ws.send(json.dumps({"id": "fits", "value": "y" * 60_000}))
            ack = recv_json(ws)
            assert ack["type"] == "ack" and ack["id"] == "fits", ack
        assert_no_server_errors(server)


def test_invalid_utf8_in_a_text_frame_closes_1007(server: RunningServer) -> None:
    """Not valid UTF-8 at the WebSocket level: RFC 6455 says close with 1007."""
    for path in ("publish", "ws", "ws?group=utf"):
        with ws_connect(server, f"/v1/topics/utf/{path}") as ws:
            if path != "publish":
                recv_control(ws)
            ws.send(b'{"value": "\xff\xfe"}', text=True)
            assert close_code(ws) == 1007, path
    with ws_connect(server, "/v1/topics/utf/publish") as ws:
        ws.send('{"value": 1}')
        assert recv_json(ws)["type"] == "ack"


# --- floods -----------------------------------------------------------------------------------

FLOOD = 5000
FLOOD_FRAMES: list[Frame] = ["x", "[]", b"\x00", '{"bogus": 1}', "{", '"\\ud800"']


def flood(ws: ClientConnection, frames: list[Frame], count: int) -> None:
    for i in range(count):
        ws.send(frames[i % len(frames)])


def test_flood_of_bad_frames_harms_no_one(server: RunningServer) -> None:
    """5,000 bad frames on each endpoint, sent without reading the answers, while another
    subscriber follows live records: the server keeps serving everyone."""
    topic = "flood"
    with server.client() as c:
        assert c.post("/v1/topics", json={"name": topic, "partitions": 2}).status_code == 201
    # max_queue=None: the client library buffers the answers instead of pushing back on the
    # server, so the flooders never block (and never read).
    publisher = ws_connect(server, f"/v1/topics/{topic}/publish", max_queue=None)
    subscriber = ws_connect(server, f"/v1/topics/{topic}/ws", max_queue=None)
    member = ws_connect(server, f"/v1/topics/{topic}/ws?group=flooders", max_queue=None)
    observer = ws_connect(server, f"/v1/topics/{topic}/ws")
    assert recv_json(subscriber)["type"] == "subscribed"
    assert recv_json(member)["type"] == "assignment"
    assert recv_json(observer)["type"] == "subscribed"
    commit_frames: list[Frame] = [commit('{"9": 1}'), commit("[]"), "nope", b"\x01"]
    errors: list[BaseException] = []

    def run(ws: ClientConnection, frames: list[Frame]) -> None:
        try:
            flood(ws, frames, FLOOD)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(publisher, FLOOD_FRAMES)),
        threading.Thread(target=run, args=(subscriber, FLOOD_FRAMES)),
        threading.Thread(target=run, args=(member, commit_frames)),
    ]
    for thread in threads:
        thread.start()
    produced: list[tuple[int, int]] = []
    with server.client() as c:
        for i in range(40):  # while the floods go on
            assert c.get("/healthz").status_code == 200
            [meta] = produce(c, topic, {"key": f"k{i}", "value": i})
            produced.append((meta["partition"], meta["offset"]))
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a flooder is stuck"
    assert errors == []
    got = [recv_json(observer) for _ in produced]
    assert [(r["partition"], r["offset"]) for r in got] == produced
    assert [r["value"] for r in got] == list(range(len(produced)))
    observer.close()

    # Every flooded frame got its answer, in order, and the publisher is still usable.
    publisher.send('{"id": "after-flood", "value": "still here"}')
    answers = [recv_json(publisher) for _ in range(FLOOD + 1)]
    assert [a["type"] for a in answers[:FLOOD]] == ["error"] * FLOOD
    assert answers[FLOOD]["type"] == "ack" and answers[FLOOD]["id"] == "after-flood"
    publisher.close()
    # The subscribers got an error frame for each flooded frame, and every record.
    for ws in (subscriber, member):
        errors_seen = records_seen = 0
        while errors_seen < FLOOD or records_seen < len(produced) + 1:
            frame = recv_json(ws)
            errors_seen += frame["type"] == "error"
            records_seen += frame["type"] == "record"
        assert (errors_seen, records_seen) == (FLOOD, len(produced) + 1)
        ws.close()
    with server.client() as c:
        partitions = c.get(f"/v1/topics/{topic}").json()["partitions"]
        assert sum(p["high_watermark"] for p in partitions) == len(produced) + 1


# --- random frames ----------------------------------------------------------------------------

TOKENS = [
    *'{}[]":,\\ -+.eE0123456789',
    "\\ud800",
    "\\udfff",
    "\\u0000",
    "\\",
    "1e999",
    "9" * 40,
    "null",
    "true",
    "NaN",
    "Infinity",
    "\x00",
    "\u2028",
    "é",
    "\U0001f600",
    '"id": ',
    '"type": ',
    '"partition": ',
]
TEMPLATES = {
    "publish": [
        '{"id": 7, "key": "k", "value": {"a": [1, 2.5, null, true, "x"]}, "headers": {"h": "v"},'
        ' "partition": 0, "timestamp": 1700000000000}',
        '{"id": "v", "value": "plain"}',
        '{"id": "b", "value_base64": "AAEC", "key": null}',
    ],
    "ws": ['{"type": "commit", "offsets": {"0": 1}}', "hello"],
    "ws?group=fuzz&from=earliest": [
        '{"type": "commit", "offsets": {"0": 1, "1": 2}}',
        '{"type": "commit", "offsets": {"1": 0}}',
    ],
}


def random_text(rng: random.Random, size: int) -> str:
    """Random code points (no lone surrogates: those cannot be sent in a text frame)."""
    points = [
        rng.choice(
            [
                rng.randrange(0x20, 0x7F),
                rng.randrange(0, 0x20),
                rng.randrange(0x80, 0xD800),
                rng.randrange(0xE000, 0x110000),
            ]
        )
        for _ in range(size)
    ]
    return "".join(map(chr, points))


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(text) + 1)
        operation = rng.randrange(5)
        if operation == 0:  # delete a slice
            text = text[:at] + text[at + rng.randint(1, 8) :]
        elif operation == 1:  # insert a token
            text = text[:at] + rng.choice(TOKENS) + text[at:]
        elif operation == 2:  # replace a character
            text = text[:at] + rng.choice(TOKENS) + text[at + 1 :]
        elif operation == 3:  # duplicate a slice
            text = text[:at] + text[at : at + rng.randint(1, 20)] * 2 + text[at + 20 :]
        else:  # truncate
            text = text[:at]
    return text


def random_frames(rng: random.Random, templates: list[str], count: int) -> list[Frame]:
    frames: list[Frame] = []
    for _ in range(count):
        kind = rng.randrange(10)
        if kind == 0:
            frames.append(rng.randbytes(rng.randrange(0, 64)))
        elif kind == 1:
            frames.append(random_text(rng, rng.randrange(0, 64)))
        else:
            frames.append(mutate(rng, rng.choice(templates)))
    return frames


@pytest.mark.parametrize("path", list(TEMPLATES))
def test_random_frames_get_one_answer_each(server: RunningServer, path: str) -> None:
    """300 seeded random frames (random bytes, random text, mutated valid frames): each gets
    exactly one answer, in order, and the connection stays usable."""
    rng = random.Random(f"eddy-{path}")
    frames = random_frames(rng, TEMPLATES[path], 300)
    with server.client() as c:
        assert c.post("/v1/topics", json={"name": "fuzz", "partitions": 2}).status_code == 201
        produce(c, "fuzz", {"records": [{"value": i, "partition": i % 2} for i in range(6)]})
    greeting: str | None
    answers: tuple[str, ...]
    if path == "publish":
        greeting, answers = None, ("ack", "error")
    elif path == "ws":
        greeting, answers = "subscribed", ("error",)
    else:
        greeting, answers = "assignment", ("committed", "error")
    probe = Probe(server, f"/v1/topics/fuzz/{path}", greeting)
    acks = 0
    try:
        for frame in frames:
            answer = probe.send("random frame", frame, answers)
            acks += answer is not None and answer["type"] == "ack"
        # the answer to a good last frame comes next (not a late one for an earlier frame)
        if path == "publish":
            final = probe.send("good record", '{"id": "final", "value": 1}', ("ack",))
            if final is not None and final["id"] != "final":
                probe.problems.append(f"good record answered with {final}")
            acks += 1
        elif path == "ws":
            with server.client() as c:
                [meta] = produce(c, "fuzz", {"value": "final", "partition": 0})
            record = recv_json(probe.ws)
            if (record["type"], record.get("offset")) != ("record", meta["offset"]):
                probe.problems.append(f"expected the new record, got {record}")
        else:
            committed = probe.send("good commit", commit('{"0": 3}'), ("committed",))
            if committed is not None and committed["offsets"] != {"0": 3}:
                probe.problems.append(f"good commit answered with {committed}")
    finally:
        probe.close()
    if path == "publish":  # exactly the acknowledged records were stored
        with server.client() as c:
            partitions = c.get("/v1/topics/fuzz").json()["partitions"]
        stored = sum(p["high_watermark"] for p in partitions) - 6
        if stored != acks:
            probe.problems.append(f"{stored} records stored, {acks} acknowledged")
    assert not probe.problems, "\n".join(probe.problems)

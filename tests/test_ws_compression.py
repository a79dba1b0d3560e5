"""permessage-deflate on WebSocket subscriptions: negotiated when offered (always without
context takeover), record frames compressed once per record and shared, decompressing to the
same JSON an uncompressed subscriber gets; with the `websockets` client, a raw sans-I/O client
that sees the wire bytes, and Node's `ws`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.streams import StreamReader
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from eddy.broker.codec import record_frame_bytes
from eddy.broker.tail import PartitionTail
from eddy.models.log import StoredRecord, ValueFormat
from eddy.routers.ws.deflate import DeflateFrames, deflate_frames, negotiated_encoder
from eddy.routers.ws.frames import FRAMES
from tests.conftest import REPO, RunningServer

NODE_SUBSCRIBER = REPO / "tests" / "node" / "ws_deflate_subscriber.mjs"


def _record(offset: int, value: bytes = b'{"price":187.3}') -> StoredRecord:
    return StoredRecord(0, offset, 1_764_000_000_000, "AAPL", value, ValueFormat.JSON, {})


# --- the encoder (pure) --------------------------------------------------------------------------
def test_compressed_frame_decodes_to_the_record_json() -> None:
    encoder = deflate_frames(12, (("memLevel", 5),))
    record = _record(7, b'{"text":"' + b"abc" * 500 + b'"}')
    frame_bytes = encoder.record("prices", record)
    assert frame_bytes[0] == 0xC1  # FIN, RSV1 (compressed), text
    assert len(frame_bytes) < len(record_frame_bytes("prices", record)) / 5
    # Decoded the way a client does: parse the frame, then the extension's decode.
    client_side = PerMessageDeflate(True, True, 12, 15)
    reader = StreamReader()
    reader.feed_data(frame_bytes)
    parser = Frame.parse(reader.read_exact, mask=False, extensions=[client_side])
    with pytest.raises(StopIteration) as parsed:
        next(parser)
    frame: Frame = parsed.value.value
    assert frame.opcode is Opcode.TEXT and frame.fin
    assert frame.data == record_frame_bytes("prices", record)


def test_the_shared_encoder_is_safe_from_several_threads() -> None:
    """Servers on other threads of one process (the Kafka-engine tests run several) share the
    cached encoder: each record's compression must not touch another's. Seen in CI: one
    thread's encode found `encoder` deleted by another's and the subscriber got 1011."""
    encoder = deflate_frames(12, (("memLevel", 5),))
    records = [_record(i, b'{"text":"' + b"abc" * 200 + b'"}') for i in range(2_000)]
    expected = [encoder.record("prices", r) for r in records]
    failures: list[BaseException] = []
    mismatches = 0

    def encode_all() -> None:
        nonlocal mismatches
        try:
            for record, frame in zip(records, expected, strict=True):
                if encoder.record("prices", record) != frame:
                    mismatches += 1
        except BaseException as exc:  # the failure is the result here
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        threads = [threading.Thread(target=encode_all) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[:3]
    assert mismatches == 0


def test_one_encoder_per_parameter_set_so_the_tail_shares_the_bytes() -> None:
    negotiated = [PerMessageDeflate(True, True, 12, 12, {"memLevel": 5}) for _ in range(3)]
    encoders = {id(negotiated_encoder([e])) for e in negotiated}
    assert len(encoders) == 1
    encoder = negotiated_encoder([negotiated[0]])
    assert isinstance(encoder, DeflateFrames)
    assert negotiated_encoder([PerMessageDeflate(True, True, 12, 10, {"memLevel": 5})]) != encoder
    assert negotiated_encoder([]) is FRAMES
    # Context takeover on the server side (not what Eddy negotiates) falls back to plain frames.
    assert negotiated_encoder([PerMessageDeflate(True, False, 12, 12)]) is FRAMES
    tail = PartitionTail("prices", 0)
    tail.append([_record(0), _record(1)])
    first = tail.joined(0, negotiated_encoder([negotiated[1]]))
    assert tail.joined(0, negotiated_encoder([negotiated[2]])) is first  # built once, shared
    assert tail.entries(0)[0].encoded("prices", encoder) is tail.entries(0)[0].encoded(
        "prices", negotiated_encoder([negotiated[2]])
    )


# --- against a server ----------------------------------------------------------------------------
def produce(client: httpx.Client, topic: str, values: list[Any]) -> None:
    response = client.post(
        f"/v1/topics/{topic}/records", json={"records": [{"key": "k", "value": v} for v in values]}
    )
    assert response.status_code == 200, response.text


def messages(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.recv(timeout=10)) for _ in range(count)]


def values(count: int, start: int = 0) -> list[Any]:
    return [{"i": i, "text": "compressible " * 100} for i in range(start, start + count)]


def test_websockets_client_negotiates_and_gets_the_same_json(
    client: httpx.Client, server: RunningServer
) -> None:
    produce(client, "z", values(20))
    url = f"{server.ws_url}/v1/topics/z/ws?from=earliest"
    with (
        connect(url, compression="deflate") as deflated,
        connect(url, compression="deflate") as deflated2,
        connect(url, compression=None) as plain,
    ):
        assert deflated.response is not None and plain.response is not None
        extensions = deflated.response.headers["Sec-WebSocket-Extensions"]
        assert extensions.startswith("permessage-deflate")
        assert "server_no_context_takeover" in extensions
        assert "Sec-WebSocket-Extensions" not in plain.response.headers
        replay = [messages(ws, 21) for ws in (deflated, deflated2, plain)]
        produce(client, "z", values(10, 20))
        live = [messages(ws, 10) for ws in (deflated, deflated2, plain)]
    assert replay[0] == replay[1] == replay[2]
    assert live[0] == live[1] == live[2]
    assert [m["value"]["i"] for m in replay[0][1:] + live[0]] == list(range(30))


def raw_deflate_subscriber(
    server: RunningServer, path: str
) -> tuple[socket.socket, ClientProtocol]:
    """The websockets library's sans-I/O client over a plain socket, so the test sees both the
    bytes on the wire and the decoded messages."""
    protocol = ClientProtocol(
        parse_uri(server.ws_url + path), extensions=[ClientPerMessageDeflateFactory()]
    )
    sock = socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    return sock, protocol


def test_record_frames_are_compressed_on_the_wire(
    client: httpx.Client, server: RunningServer
) -> None:
    produce(client, "w", values(30))
    sock, protocol = raw_deflate_subscriber(server, "/v1/topics/w/ws?from=earliest")
    sock.settimeout(30)
    raw = b""
    decoded: list[bytes] = []
    response: Response | None = None
    with sock:
        while len(decoded) < 31:
            data = sock.recv(65536)
            assert data, "connection closed early"
            raw += data
            protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Response):
                    response = event
                elif isinstance(event, Frame):
                    decoded.append(bytes(event.data))
    wire = len(raw) - raw.index(b"\r\n\r\n") - 4  # the frames, after the handshake's head
    assert response is not None
    assert response.status_code == 101
    assert "permessage-deflate" in response.headers["Sec-WebSocket-Extensions"]
    records = [json.loads(d) for d in decoded[1:]]
    assert [r["value"]["i"] for r in records] == list(range(30))
    payload = sum(len(d) for d in decoded[1:])
    assert wire < payload / 4, (wire, payload)  # the record frames were compressed


def test_node_ws_client_with_per_message_deflate(
    client: httpx.Client, server: RunningServer
) -> None:
    if shutil.which("node") is None or not (REPO / "node_modules" / "ws").exists():
        pytest.fail("Node.js or node_modules/ws is missing: run `bash .ci/install-node-tools.sh`")
    produce(client, "n", values(5))
    url = f"{server.ws_url}/v1/topics/n/ws?from=earliest"
    with (
        subprocess.Popen(
            ["node", str(NODE_SUBSCRIBER), url, str(1 + 5 + 5)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as node,
        connect(url) as plain,
    ):
        assert node.stdout is not None and node.stderr is not None
        handshake = json.loads(node.stdout.readline())
        assert handshake["extensions"].startswith("permessage-deflate")
        lines = [json.loads(node.stdout.readline()) for _ in range(6)]  # subscribed + replay
        produce(client, "n", values(5, 5))
        lines += [json.loads(node.stdout.readline()) for _ in range(5)]
        expected = messages(plain, 11)
        assert node.wait(timeout=20) == 0, node.stderr.read()
    assert lines == expected

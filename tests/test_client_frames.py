"""The publisher's frame scanner: the frames it reads, where it stops, and split inputs."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from routers.ws.client_frames import BINARY, PING, PONG, TEXT, scan


def client_frame(opcode: int, payload: bytes, first: int | None = None) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x80 | opcode if first is None else first])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_reads_complete_frames_and_keeps_an_incomplete_one() -> None:
    frames = client_frame(TEXT, b'{"value":1}') + client_frame(BINARY, b"\x00\xff" * 100)
    frames += client_frame(PING, b"hi") + client_frame(PONG, b"")
    tail = client_frame(TEXT, "é".encode() * 70)
    scanned = scan(frames + tail[:-1], None)
    assert scanned.messages == [
        (TEXT, '{"value":1}'),
        (BINARY, b"\x00\xff" * 100),
        (PING, b"hi"),
        (PONG, b""),
    ]
    assert scanned.consumed == len(frames) and scanned.handled


def test_stops_at_frames_websockets_handles() -> None:
    text = client_frame(TEXT, b"{}")
    others = [
        client_frame(0x8, b"\x03\xe8"),  # close
        client_frame(TEXT, b"{}", first=0x01),  # a first fragment (no FIN)
        client_frame(TEXT, b"{}", first=0xC1),  # RSV1 (compressed)
        b"\x81\x02{}",  # not masked
        client_frame(TEXT, b"\xff\xfe"),  # invalid UTF-8
        client_frame(BINARY, b"x" * 70_000),  # 64-bit length
        client_frame(TEXT, b"x" * 200),  # over max_size below
    ]
    for other in others:
        scanned = scan(text + other + text, 100)
        assert scanned.messages == [(TEXT, "{}")]
        assert scanned.consumed == len(text) and not scanned.handled


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_any_split_reads_the_same_messages(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(client_frame(BINARY, p) for p in payloads)
    cut = data.draw(st.integers(0, len(stream)))
    first = scan(stream[:cut], None)
    second = scan(stream[first.consumed :], None)
    assert first.handled and second.handled and second.consumed == len(stream) - first.consumed
    assert [m for _, m in first.messages + second.messages] == payloads

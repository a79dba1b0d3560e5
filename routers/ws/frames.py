"""Server-to-client WebSocket frames, built once as bytes (RFC 6455 section 5.2: server frames are
not masked), and the JSON messages they carry.

A record's frame is built once and the same bytes go to every subscriber's socket: the tail
caches them per encoder (`FRAMES`; compressed ones for permessage-deflate subscribers come from
`deflate.py`'s encoder, also once per record). The other frames here are never compressed: with
permessage-deflate negotiated an uncompressed frame (RSV1 clear) is still valid (RFC 7692
section 6).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from eddy.broker import (
    Acked,
    Assigned,
    Committed,
    End,
    Event,
    Refused,
    SessionEnd,
    StartPosition,
    Subscribed,
    record_frame_bytes,
    safe_json,
)
from eddy.models.errors import EddyError
from eddy.models.log import StoredRecord
from eddy.routers.ws.close_codes import close_code, close_reason

_TEXT = 0x81  # FIN + text opcode


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying `payload` (UTF-8 JSON)."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", _TEXT, 126, n) + payload
    return struct.pack("!BBQ", _TEXT, 127, n) + payload


class WebSocketFrames:
    """The tail's encoder for WebSocket subscribers: a record as a complete text frame."""

    def record(self, topic: str, record: StoredRecord) -> bytes:
        return text_frame(record_frame_bytes(topic, record))

    def __repr__(self) -> str:
        return "WebSocketFrames()"


FRAMES = WebSocketFrames()


def _positions(positions: dict[int, StartPosition] | Any) -> dict[str, Any]:
    return {
        str(p): {"offset": pos.offset, **({"reset": True} if pos.reset else {})}
        for p, pos in sorted(positions.items())
    }


def event_message(event: Event) -> dict[str, Any]:
    """The JSON object of a non-record message (documented in openapi/asyncapi.yaml)."""
    if isinstance(event, Subscribed):
        return {"type": "subscribed", "partitions": _positions(event.positions)}
    if isinstance(event, Assigned):
        return {
            "type": "assignment",
            "generation": event.generation,
            "member_id": event.member_id,
            "partitions": _positions(event.positions),
        }
    if isinstance(event, Committed):
        return {"type": "committed", "offsets": {str(p): o for p, o in event.offsets.items()}}
    if isinstance(event, Acked):
        appended = event.appended
        return {
            "type": "ack",
            "id": event.id,
            "partition": appended.partition,
            "offset": appended.offset,
            "timestamp": appended.timestamp,
        }
    return event.error.to_frame(**event.extra)


SLOW_CONSUMER = "slow_consumer"


def slow_consumer_message(limit_bytes: int) -> dict[str, Any]:
    """Why a slow subscriber is ended (the WebSocket's error frame before 4408, the SSE error
    event): sent behind the records still queued, so the client learns why after the last
    record it did get, and resumes from there."""
    return {
        "type": "error",
        "code": SLOW_CONSUMER,
        "message": "consumer too slow: unsent data passed the connection's limit; "
        "reconnect and resume with offsets=",
        "details": {"limit_bytes": limit_bytes},
    }


@dataclass(frozen=True, slots=True)
class Closing:
    """How a WebSocket is closed for how its session ended: the error frame's JSON that goes
    first (None: not an error), the close code and its short reason."""

    error: bytes | None
    code: int
    reason: str


def closing(end: End, limit_bytes: int) -> Closing | None:
    """The one place that decides what a closing session sends (None: the client left, nothing
    to send). Every 44xx close follows an error frame with code, message and details, and
    carries a reason of at most 123 bytes (contract)."""
    code = close_code(end)
    if code is None:
        return None
    reason = close_reason(end)
    error: bytes | None = None
    if isinstance(end, EddyError):
        error = safe_json(end.to_frame())
    elif end is SessionEnd.TOO_SLOW:
        error = safe_json(slow_consumer_message(limit_bytes))
    elif 4400 <= code < 4500 and isinstance(end, SessionEnd):  # a new ending without its own
        error = safe_json({"type": "error", "code": end.value, "message": reason, "details": {}})
    return Closing(error, code, reason)


def event_payload(event: Event) -> bytes:
    return safe_json(event_message(event))


def event_frame(event: Event) -> bytes:
    return text_frame(event_payload(event))


def answer_frame(event: Event) -> bytes:
    """`event_frame`, with an ack (a publisher's hot path) formatted without building its dict
    (the same JSON: same keys, same order)."""
    if not isinstance(event, Acked):
        return event_frame(event)
    appended = event.appended
    return text_frame(
        b'{"type":"ack","id":%b,"partition":%d,"offset":%d,"timestamp":%d}'
        % (safe_json(event.id), appended.partition, appended.offset, appended.timestamp)
    )


__all__ = [
    "FRAMES",
    "Closing",
    "Refused",
    "answer_frame",
    "closing",
    "event_frame",
    "event_message",
    "text_frame",
]

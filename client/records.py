"""What the client hands back: records, acks and fetched pages (plain frozen dataclasses)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Record:
    """A record as the server sends it. `value` is the JSON value (None for a binary record,
    whose bytes are in `value_base64`; see `data`). `conflated`: how many older records of this
    key the server dropped before this one (`on_slow="conflate"`, `max_rate`)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    value: Any = None
    value_base64: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    header_list: list[tuple[str, str | None]] | None = None
    conflated: int = 0

    @classmethod
    def from_json(cls, frame: dict[str, Any]) -> Record:
        header_list = frame.get("header_list")
        return cls(
            topic=str(frame.get("topic", "")),
            partition=int(frame["partition"]),
            offset=int(frame["offset"]),
            timestamp=int(frame.get("timestamp", 0)),
            key=frame.get("key"),
            value=frame.get("value"),
            value_base64=frame.get("value_base64"),
            headers=dict(frame.get("headers") or {}),
            header_list=[(str(n), v) for n, v in header_list] if header_list else None,
            conflated=int(frame.get("conflated", 0)),
        )

    @property
    def data(self) -> bytes | None:
        """A binary record's bytes (None for a JSON value)."""
        return None if self.value_base64 is None else base64.b64decode(self.value_base64)

    def to_json(self) -> dict[str, Any]:
        """The record as the server sent it (the JSON the CLI prints)."""
        out: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": self.key,
        }
        if self.value_base64 is not None:
            out["value_base64"] = self.value_base64
        else:
            out["value"] = self.value
        out["headers"] = self.headers
        if self.header_list is not None:
            out["header_list"] = [list(h) for h in self.header_list]
        if self.conflated:
            out["conflated"] = self.conflated
        return out


@dataclass(frozen=True)
class Ack:
    """Where a produced record was stored (only after it was committed to disk)."""

    partition: int
    offset: int
    timestamp: int

    @classmethod
    def from_json(cls, frame: dict[str, Any]) -> Ack:
        return cls(int(frame["partition"]), int(frame["offset"]), int(frame["timestamp"]))


@dataclass(frozen=True)
class FetchResult:
    """One page of a partition (REST fetch): `next_offset` is where the next page starts."""

    records: list[Record]
    next_offset: int
    log_start_offset: int
    high_watermark: int

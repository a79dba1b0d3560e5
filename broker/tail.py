"""The tail of a partition's log: the records committed most recently, kept in memory with their
encodings, so live subscribers (and replays that are close to the end) read here instead of from
storage, and each record is encoded once for everyone.

Pure data structure: no asyncio, no I/O. The hub feeds it from the engine's commits; it holds
every record from `start` up to `end` (the high watermark as far as the tail knows), at most
`max_records` records and about `max_bytes` bytes; older records are evicted from the front.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol

from eddy.models.headers import header_pairs
from eddy.models.log import StoredRecord

TAIL_RECORDS = 2_000
TAIL_BYTES = 2 * 1_048_576
ENTRY_OVERHEAD = 96  # bytes a record costs beyond its key, value and headers (estimate)


class Encoder(Hashable, Protocol):
    """Turns a record into the bytes a transport writes (a WebSocket frame, an SSE event).
    One instance per format: the tail caches each record's encoding per encoder."""

    def record(self, topic: str, record: StoredRecord) -> bytes: ...


class TailEntry:
    __slots__ = ("_encoded", "record")

    def __init__(self, record: StoredRecord) -> None:
        self.record = record
        self._encoded: dict[Encoder, bytes] | None = None

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def key(self) -> str | None:
        return self.record.key

    def encoded(self, topic: str, encoder: Encoder) -> bytes:
        cache = self._encoded
        if cache is None:
            cache = self._encoded = {}
        data = cache.get(encoder)
        if data is None:
            data = cache[encoder] = encoder.record(topic, self.record)
        return data


def _size(record: StoredRecord) -> int:
    return (
        ENTRY_OVERHEAD
        + len(record.value or b"")
        + len(record.key or "")
        + sum(len(k) + len(v or "") for k, v in header_pairs(record.headers))
    )


class PartitionTail:
    def __init__(
        self,
        topic: str,
        start: int,
        max_records: int = TAIL_RECORDS,
        max_bytes: int = TAIL_BYTES,
    ) -> None:
        self.topic = topic
        self._entries: list[TailEntry] = []
        self._head = 0  # index of the first live entry (evicted ones are dropped in bulk)
        self._start = start
        self.end = start  # the offset after the last record held (read on every delivery)
        self._bytes = 0
        self._max_records = max_records
        self._max_bytes = max_bytes
        # The frames of all records from one offset to the end, joined: most live subscribers
        # are at the same position, so one join serves them all. Cleared when the tail grows.
        self._joined: dict[tuple[Encoder, int], bytes] = {}

    @property
    def start(self) -> int:
        """The first offset held."""
        return self._start

    def __len__(self) -> int:
        return len(self._entries) - self._head

    def append(self, records: Sequence[StoredRecord]) -> None:
        """Committed records of this partition, in offset order. A gap (records this tail never
        saw) empties it: the tail only ever holds an unbroken run ending at the high watermark."""
        if not records:
            return
        if records[0].offset != self.end:
            self._entries, self._head, self._bytes = [], 0, 0
            self._start = records[0].offset
        for record in records:
            self._entries.append(TailEntry(record))
            self._bytes += _size(record)
        self.end = self._start + len(self._entries) - self._head
        self._joined.clear()
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        while len(entries) - self._head > self._max_records or (
            self._bytes > self._max_bytes and len(entries) - self._head > 1
        ):
            self._bytes -= _size(entries[self._head].record)
            self._head += 1
            self._start += 1
        if self._head > 256 and self._head * 2 > len(entries):
            del entries[: self._head]
            self._head = 0

    def entries(self, offset: int) -> Sequence[TailEntry]:
        """The entries from `offset` (start <= offset <= end) to the end."""
        index = self._head + offset - self._start
        return self._entries[index:]

    def joined(self, offset: int, encoder: Encoder) -> bytes:
        """The encodings of every record from `offset` to the end, as one bytes object."""
        key = (encoder, offset)
        data = self._joined.get(key)
        if data is None:
            topic = self.topic
            data = b"".join(entry.encoded(topic, encoder) for entry in self.entries(offset))
            self._joined[key] = data
        return data

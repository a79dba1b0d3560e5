"""Kafka record batches as producers sent them, kept in memory for fetches (newest first).

A Kafka producer hands Eddy each partition's records already encoded as one v2 batch. Eddy
stores the records one by one (REST, WebSocket and SSE readers need them so), and a Kafka fetch
used to read the rows back and build a new batch for every fetch of every consumer. Here the
batch as it came in is kept, its base offset set to where the records landed (the base offset is
not under the batch's CRC, which is how Kafka brokers assign offsets too), and a fetch from that
offset gets these bytes: no rows read, nothing decoded or encoded, compressed batches stay
compressed. A fetch anywhere else, or of a batch no longer kept, reads and builds as before.

Kept only when the stored records are exactly what the batch says: one v2 batch filling the
partition's data, producer (CreateTime) timestamps on every record (Eddy stamps records without
one itself), offsets numbered from 0 without gaps, appended as one contiguous run of offsets
(headers are stored exactly, so they never differ). Never served for a compacted topic
(compaction removes records from inside a batch), nor across a topic deleted and created
again under the same name (entries remember the topic's `created_at`). Retention only
removes whole leading ranges, and a fetch below the log start offset is refused before the
cache is asked.

Bounded by bytes (`DEFAULT_MAX_BYTES`); the oldest batches go first, so consumers near the head
of a partition, Kafka's usual case, are served from here. Why a cache and not the batches in
SQLite beside the records: see docs/design.md (Kafka fetch).
"""

from __future__ import annotations

import asyncio
import struct
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from dataclasses import dataclass

from eddy.models.log import AppendedRecord

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_BASE_OFFSET = struct.Struct(">q")
_BATCH_LENGTH = struct.Struct(">i")  # after the base offset: the batch's length past this field


@dataclass(frozen=True, slots=True)
class Entry:
    end: int  # the offset after the batch's last record
    data: bytes
    created_at: int  # the topic's, when the batch was appended


def whole_batch(data: bytes) -> bool:
    """Does `data` hold exactly one batch (its header's length covers it, nothing after)?"""
    return len(data) >= 12 and _BATCH_LENGTH.unpack_from(data, 8)[0] + 12 == len(data)


class BatchCache:
    """(topic, partition, base offset) -> the batch produced there, up to `max_bytes` in all."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0  # fetches answered from here (for tests and debugging)
        self._entries: OrderedDict[tuple[str, int, int], Entry] = OrderedDict()
        self._bases: dict[tuple[str, int], list[int]] = {}  # each partition's kept, ascending

    def remember(
        self,
        committed: asyncio.Future[list[AppendedRecord]],
        topic: str,
        partition: int,
        data: bytes,
        count: int,
        created_at: int,
    ) -> None:
        """Keep `data` (one batch of `count` records) once `committed` says where it landed."""

        def landed(done: asyncio.Future[list[AppendedRecord]]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            appended = done.result()
            if len(appended) != count or not appended:
                return
            first, last = appended[0], appended[-1]
            if last.offset - first.offset != count - 1 or first.partition != partition:
                return
            self.put(topic, partition, first.offset, count, data, created_at)

        committed.add_done_callback(landed)

    def put(
        self, topic: str, partition: int, base: int, count: int, data: bytes, created_at: int
    ) -> None:
        """Keep `data`, one batch of `count` records, as the batch at offset `base`."""
        if len(data) > self.max_bytes:
            return
        encoded = bytearray(data)
        _BASE_OFFSET.pack_into(encoded, 0, base)
        key = (topic, partition, base)
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old.data)
        else:
            insort(self._bases.setdefault((topic, partition), []), base)
        self._entries[key] = Entry(base + count, bytes(encoded), created_at)
        self.size += len(encoded)
        while self.size > self.max_bytes:
            (t, p, b), evicted = self._entries.popitem(last=False)
            self.size -= len(evicted.data)
            bases = self._bases[(t, p)]
            del bases[bisect_left(bases, b)]
            if not bases:
                del self._bases[(t, p)]

    def next_base(self, topic: str, partition: int, offset: int) -> int | None:
        """The first kept batch's offset after `offset`: a fetch that builds its batch from the
        rows stops there, so that the consumer's next fetch starts where a kept batch does
        (else, once a fetch ended inside a batch, none would ever be served from here)."""
        bases = self._bases.get((topic, partition))
        if not bases:
            return None
        i = bisect_right(bases, offset)
        return bases[i] if i < len(bases) else None

    def get(
        self, topic: str, partition: int, offset: int, max_bytes: int, created_at: int
    ) -> tuple[bytes, int] | None:
        """The kept batches from `offset` on, back to back, up to `max_bytes` (the first one
        whatever its size, as Kafka does), and the offset after them; None if none starts
        there."""
        entries = self._entries
        entry = entries.get((topic, partition, offset))
        if entry is None or entry.created_at != created_at:
            return None
        parts = [entry.data]
        size = len(entry.data)
        end = entry.end
        while (following := entries.get((topic, partition, end))) is not None:
            if following.created_at != created_at or size + len(following.data) > max_bytes:
                break
            parts.append(following.data)
            size += len(following.data)
            end = following.end
        self.hits += 1
        return b"".join(parts), end

    def clear(self) -> None:
        self._entries.clear()
        self._bases.clear()
        self.size = 0

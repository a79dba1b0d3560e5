"""The storage interface. The broker sees only this module; nothing above it knows about SQLite.

An engine owns durable partition logs: it assigns offsets, commits appends atomically, serves
reads in offset order and keeps each partition's offsets/size in memory so that the broker can ask
for them without I/O. A Kafka-backed engine can implement the same class later.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from eddy.models.headers import Headers, headers_size
from eddy.models.log import (
    AppendedRecord,
    CommittedOffset,
    PartitionState,
    ProducerSequence,
    StoredRecord,
    TopicMeta,
    ValueFormat,
)

log = logging.getLogger("eddy.storage")

# Committed requests remembered per producer id and topic. A REST retry may repeat one of the
# last PRODUCER_HISTORY (Kafka's 5 in flight); a WebSocket publisher may have up to
# PRODUCER_WINDOW records in flight, so that many single-record requests are remembered too
# (older ones beyond the last PRODUCER_HISTORY go once they hold more than PRODUCER_WINDOW
# records, which bounds the memory of producers that send big batches).
PRODUCER_HISTORY = 5
PRODUCER_WINDOW = 1_000


# A NamedTuple, like the per-record types of models/log.py (cheaper to create than a dataclass).
class NewRecord(NamedTuple):
    """A record the broker asks the engine to append (partition already chosen)."""

    partition: int
    timestamp: int
    key: str | None
    value: bytes | None  # None is a null value (a tombstone on compacted topics)
    value_format: ValueFormat
    headers: Headers  # a dict, or (name, value) pairs where a dict would lose some (headers.py)


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """One produce request: its records, committed all or none, and its producer sequence."""

    records: Sequence[NewRecord]
    producer: ProducerSequence | None = None
    # each record's `record_size`, when the caller has computed it already (else the engine does)
    sizes: Sequence[int] | None = None


@dataclass(frozen=True, slots=True)
class ProducerEntry:
    """A committed request of an idempotent producer and where its records landed."""

    sequence: int
    appended: tuple[AppendedRecord, ...]


class ProducerWindow:
    """One producer's remembered committed requests, oldest first, looked up by sequence."""

    __slots__ = ("_entries", "_records")

    def __init__(self) -> None:
        self._entries: dict[int, ProducerEntry] = {}
        self._records = 0

    def add(self, entry: ProducerEntry) -> None:
        self._entries[entry.sequence] = entry
        self._records += len(entry.appended)
        entries = self._entries
        while len(entries) > PRODUCER_HISTORY and (
            len(entries) > PRODUCER_WINDOW or self._records > PRODUCER_WINDOW
        ):
            oldest = entries.pop(next(iter(entries)))
            self._records -= len(oldest.appended)

    def get(self, sequence: int) -> ProducerEntry | None:
        return self._entries.get(sequence)

    @property
    def first(self) -> int | None:
        """The oldest remembered sequence."""
        return next(iter(self._entries), None)

    @property
    def last(self) -> int | None:
        """The newest committed sequence."""
        return next(reversed(self._entries), None)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ProducerEntry]:
        return iter(self._entries.values())


def record_size(key: str | None, value: bytes | None, headers: Headers) -> int:
    """Bytes of a record's data: UTF-8 key + value + header names and values. The one rule
    behind max.message.bytes, size_bytes, retention.bytes and the write queue's byte bound."""
    size = len(value) if value else 0
    if key:
        size += len(key) if key.isascii() else len(key.encode())
    if headers:
        if type(headers) is dict:  # the common form inline: this runs for every record
            for name, text in headers.items():
                size += len(name.encode()) + len(text.encode())
        else:
            size += headers_size(headers)
    return size


class LogListener(Protocol):
    """Told by the engine what the log did, like Kafka's high-watermark listener: fan-out,
    long-polls, consumer groups and the producer subscribe here, so nobody has to tell each of
    them by hand. Called on the event loop, synchronously, right after the change is durable
    and visible in `partition_state` (no await in between). Listeners must not block or await.
    An engine whose log other writers also append to (a Kafka cluster) announces their records
    the same way."""

    def on_commit(self, topic: str, records: Sequence[StoredRecord]) -> None:
        """Records were committed: offset order within each partition."""

    def on_partitions_added(self, topic: str, partitions: int) -> None:
        """The topic now has `partitions` partitions."""

    def on_topic_deleted(self, topic: str) -> None:
        """The topic and all its data are gone."""


# (bytes the storage's files take on disk, bytes free on their filesystem)
DiskUsage = tuple[int, int]


class Engine(abc.ABC):
    """Durable partition logs. All methods raise `models.errors` exceptions on failure.

    Changes to the log are announced to the `LogListener`s added with `add_listener`.
    """

    _listeners: tuple[LogListener, ...] = ()
    # Whether the records live in Eddy's own log (True) or in a log other writers share (a Kafka
    # cluster): some answers depend on it, such as what the Kafka listener may cache.
    embedded_log: bool = True

    def add_listener(self, listener: LogListener) -> None:
        self._listeners = (*self._listeners, listener)

    # Each change is already durable when announced: one listener's failure is logged and
    # must not keep the others uninformed.
    def _announce_commit(self, topic: str, records: Sequence[StoredRecord]) -> None:
        for listener in self._listeners:
            try:
                listener.on_commit(topic, records)
            except Exception:
                log.exception("log listener %r failed on a commit to %s", listener, topic)

    def _announce_partitions_added(self, topic: str, partitions: int) -> None:
        for listener in self._listeners:
            try:
                listener.on_partitions_added(topic, partitions)
            except Exception:
                log.exception("log listener %r failed on new partitions of %s", listener, topic)

    def _announce_topic_deleted(self, topic: str) -> None:
        for listener in self._listeners:
            try:
                listener.on_topic_deleted(topic)
            except Exception:
                log.exception("log listener %r failed on deletion of %s", listener, topic)

    # --- for the metrics (engines without local files keep these defaults) ---------------------
    def observe_commits(self, observe: Callable[[float], None]) -> None:
        """Call `observe(seconds)` after each storage commit (from any thread), with how
        long the commit took. By default the engine reports none."""
        return None

    async def disk_usage(self) -> DiskUsage | None:
        """The disk the storage's files use and has free; None if it has no local files."""
        return None

    # An engine whose log other writers append to (a Kafka cluster) announces their records
    # only for topics someone on this server follows (subscribers, long-polls); the embedded
    # engine announces every commit anyway.
    def follow(self, topic: str) -> None:  # noqa: B027 (optional hook: no-op by default)
        """Someone here needs the topic's commits announced from now on."""

    def unfollow(self, topic: str) -> None:  # noqa: B027 (optional hook)
        """One `follow` of the topic is over."""

    # Consumer groups whose members may be on several servers (a Kafka cluster): the engine
    # says which partitions this server's members of a group share; the embedded engine has
    # every member on this server, so all of them.
    def group_partitions(self, group: str, topic: str) -> set[int] | None:
        """The partitions of `topic` this server's members of `group` share (None: all)."""
        return None

    async def join_group(  # noqa: B027 (optional hook)
        self, group: str, topic: str, on_change: Callable[[], None]
    ) -> None:
        """The first member of `group` on `topic` is joining on this server: take part in the
        group across servers; `on_change` is called (on the loop, synchronously) whenever
        `group_partitions` changes."""

    async def leave_group(self, group: str, topic: str) -> None:  # noqa: B027 (optional hook)
        """The last member of `group` on `topic` on this server left."""

    async def check_group_idle(self, group: str) -> None:  # noqa: B027 (optional hook)
        """Raise `GroupActive` if members this server does not hold are in the group (another
        server's, or Kafka consumers', on a shared cluster); call it when this server holds
        none. The embedded engine has every member on this server."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Take ownership of the storage (refusing if another process has it) and load topics."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything; safe to call twice."""

    @abc.abstractmethod
    async def check_writable(self) -> None:
        """Raise `Unavailable` unless the storage can take writes right now."""

    # --- topics -------------------------------------------------------------------------------
    @abc.abstractmethod
    def list_topics(self) -> list[TopicMeta]:
        """All topics, sorted by name."""

    @abc.abstractmethod
    def get_topic(self, name: str) -> TopicMeta:
        """Raise `TopicNotFound` if it does not exist."""

    @abc.abstractmethod
    async def create_topic(self, name: str, partitions: int, config: dict[str, Any]) -> TopicMeta:
        """Raise `TopicExists` if it exists."""

    @abc.abstractmethod
    async def update_topic(
        self, name: str, partitions: int | None, config: dict[str, Any] | None
    ) -> TopicMeta:
        """Grow the partition count and/or replace the stored config."""

    @abc.abstractmethod
    async def delete_topic(self, name: str) -> None:
        """Remove the topic and all its data."""

    # --- partitions ---------------------------------------------------------------------------
    @abc.abstractmethod
    def partition_state(self, topic: str, partition: int) -> PartitionState:
        """Offsets and size of one partition, from memory (no I/O)."""

    def high_watermark(self, topic: str, partition: int) -> int:
        return self.partition_state(topic, partition).high_watermark

    @abc.abstractmethod
    def append(
        self, topic: str, batch: AppendBatch, wait: float = 5.0
    ) -> asyncio.Future[list[AppendedRecord]]:
        """Queue one batch (atomic: all its records or none) and return a future of where its
        records landed, in input order. Queued now, synchronously, so batches commit in call
        order; the engine commits everything queued meanwhile in one transaction (group
        commit). A batch with a producer sequence also records it (and its result) in the same
        commit, so idempotence survives a crash.

        Raises `TopicNotFound`/`PartitionNotFound` at once. When the topic's write queue is
        full the batch waits for room at most `wait` seconds, then the future fails with
        `Unavailable` (with a retry-after hint). When the future resolves, the records are
        committed, `partition_state` and `producer_history` already reflect them and the
        listeners have been told (`on_commit`), with no await in between, which the fan-out
        and the idempotent producer rely on. Cancelling the future does not cancel the commit.
        """

    @abc.abstractmethod
    def producer_history(self, topic: str, producer_id: str) -> ProducerWindow:
        """The producer's remembered committed requests on this topic, from memory."""

    @abc.abstractmethod
    async def read(
        self, topic: str, partition: int, offset: int, limit: int, max_bytes: int
    ) -> list[StoredRecord]:
        """Records at offset >= `offset`, in offset order; at least one if any exists."""

    @abc.abstractmethod
    async def offset_for_timestamp(self, topic: str, partition: int, timestamp: int) -> int | None:
        """The first offset whose timestamp >= `timestamp`, or None."""

    # --- retention and compaction (each call is one short, bounded transaction) ---------------
    @abc.abstractmethod
    async def retention_point(
        self, topic: str, partition: int, before_timestamp: int | None, max_bytes: int | None
    ) -> int:
        """The offset the log should start at so that no record older than `before_timestamp`
        heads the log and at most `max_bytes` of records remain (None: no such limit).

        Only a prefix of the log is ever removed: time retention stops at the first record that
        is still young, even if later records are older (client timestamps need not grow)."""

    @abc.abstractmethod
    async def delete_before(self, topic: str, partition: int, offset: int, limit: int) -> int:
        """Delete at most `limit` records below `offset` and move the log start up to `offset`
        once none is left; returns how many were deleted."""

    @abc.abstractmethod
    async def compact(
        self,
        topic: str,
        partition: int,
        from_offset: int,
        to_offset: int,
        tombstones_before: int,
    ) -> int:
        """In [from_offset, to_offset): delete every keyed record that a newer record with the
        same key supersedes, and tombstones (null value) older than `tombstones_before` that are
        their key's newest record. Returns how many were deleted. Offsets of survivors stay."""

    @abc.abstractmethod
    async def reclaim_space(self, topic: str) -> int:
        """Give freed space back to the filesystem, a bounded step at a time; returns the bytes
        still reclaimable (0 when done)."""

    # --- consumer group offsets ---------------------------------------------------------------
    @abc.abstractmethod
    def committed_offsets(self, group: str | None = None) -> list[CommittedOffset]:
        """Committed offsets (of one group, or all), from memory (no I/O)."""

    @abc.abstractmethod
    async def commit_offsets(
        self,
        group: str,
        topic: str,
        offsets: Mapping[int, int],
        metadata: Mapping[int, str] | None = None,
    ) -> None:
        """Durably store a group's positions on a topic's partitions (one atomic commit), each
        with the committer's metadata string (`metadata`, by partition; "" where absent).

        Commits are applied in call order. The in-memory view (`committed_offsets`) changes
        only once the commit is durable, in the same step that resolves this call; a failed
        commit changes nothing. Concurrent commits never fail because of each other."""

    @abc.abstractmethod
    async def delete_committed_offsets(self, group: str, topic: str | None = None) -> None:
        """Forget a group's offsets (on one topic, or all); memory follows the disk, as above."""

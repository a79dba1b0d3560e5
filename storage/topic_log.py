"""One topic's log: appends with group commit and a bounded write queue; reads; offsets.

The event loop side (`TopicLog`) validates a batch, queues it as a job for the topic's one
writer (or, when the queue is full, waits a bounded time for room), and publishes the state
once the writer reports the commit. The writer side (`TopicLog.run`, in the writer thread) turns
every job of one transaction into SQL: offsets come from the ``partitions`` table inside the
transaction, so a rolled-back transaction leaves nothing behind, in memory or on disk.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import orjson

from eddy.models.errors import (
    EddyError,
    OutOfOrderSequence,
    PartitionNotFound,
    TopicNotFound,
    Unavailable,
)
from eddy.models.headers import encode_headers, stored_pairs
from eddy.models.log import AppendedRecord, PartitionState, StoredRecord, TopicMeta, ValueFormat
from eddy.storage.engine import AppendBatch, ProducerEntry, ProducerWindow, record_size
from eddy.storage.readers import ReaderPool
from eddy.storage.schema import add_partitions, encode_appended, partition_table
from eddy.storage.writer import Database, DatabaseClosed, Job, WriterPool

log = logging.getLogger("eddy.storage")

# Builds the named tuples made per record (AppendedRecord, StoredRecord) from a tuple of their
# fields, without their Python-level __new__: less than half the cost, in the writer thread
# where it holds the GIL against the event loop.
_new = tuple.__new__
_FORMATS = {int(f): f for f in ValueFormat}  # stored value_format -> its member

RETRY_AFTER_SECONDS = 1.0  # hint to producers refused because the write queue stayed full


@dataclass(frozen=True)
class QueueLimits:
    """Bound of one topic's pending writes (queued, not yet committed)."""

    records: int = 50_000
    bytes: int = 64 * 1_048_576


class Txn:
    """One transaction in the writer thread: partition states as the transaction changes them,
    and the appended rows, written by `flush`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.states: dict[int, list[int]] = {}  # partition -> [log start, high watermark, size]
        self.rows: dict[int, list[tuple[Any, ...]]] = {}
        self.producer_rows: list[tuple[str, int, bytes, int]] = []
        self.forget: list[tuple[str, int]] = []
        self.last_sequence: dict[str, int | None] = {}
        self.records: list[StoredRecord] = []
        self.added_partitions = False

    def state(self, partition: int) -> list[int]:
        state = self.states.get(partition)
        if state is None:
            row = self.conn.execute(
                "SELECT log_start_offset, high_watermark, size_bytes FROM partitions "
                "WHERE partition = ?",
                (partition,),
            ).fetchone()
            if row is None:
                raise RuntimeError(f"partition {partition} is missing from the partitions table")
            state = self.states[partition] = list(row)
        return state

    def producer_last(self, producer_id: str) -> int | None:
        if producer_id not in self.last_sequence:
            row = self.conn.execute(
                "SELECT max(sequence) FROM producers WHERE producer_id = ?", (producer_id,)
            ).fetchone()
            self.last_sequence[producer_id] = row[0] if row else None
        return self.last_sequence[producer_id]

    def flush(self) -> None:
        conn = self.conn
        for p, rows in self.rows.items():
            insert_rows(conn, partition_table(p), rows)
        self.rows = {}
        if self.producer_rows:
            conn.executemany("INSERT INTO producers VALUES (?, ?, ?, ?)", self.producer_rows)
            self.producer_rows = []
        if self.forget:
            conn.executemany(
                "DELETE FROM producers WHERE producer_id = ? AND sequence < ?", self.forget
            )
            self.forget = []

    def finish(self) -> dict[int, PartitionState]:
        self.flush()
        self.conn.executemany(
            "UPDATE partitions SET log_start_offset = ?, high_watermark = ?, size_bytes = ? "
            "WHERE partition = ?",
            [(s[0], s[1], s[2], p) for p, s in self.states.items()],
        )
        return {p: PartitionState(p, *s) for p, s in self.states.items()}


# Rows per INSERT statement. `executemany` steps SQLite once per row, and the sqlite3 module
# releases the GIL around every step: while the event loop's thread is busy, the writer then
# waits for the GIL once per row. One statement of many rows is one step (one wait), with the
# parameters bound in C. 7 columns x 256 rows stays far below SQLite's 32,766 parameters; the
# rest of a batch goes in statements of 128, 64, ... rows, so at most 9 statement texts exist
# per table (the connection's statement cache keeps them prepared).
ROWS_PER_INSERT = 256
_ROW = "(?, ?, ?, ?, ?, ?, ?)"


def insert_rows(conn: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    """INSERT `rows` (7 columns each) into `table`, many rows per statement. Measured with
    the event loop's thread busy in Python: a 1,000-row transaction took 1.3-5.5 ms, against
    3.2-9.9 ms with `executemany`."""
    start, total, size = 0, len(rows), ROWS_PER_INSERT
    while start < total:
        while total - start < size:
            size //= 2
        chunk = rows[start : start + size]
        values = ", ".join([_ROW] * size)
        conn.execute(f"INSERT INTO {table} VALUES {values}", list(chain.from_iterable(chunk)))
        start += size


class TopicJob(Job):
    """A job on a topic's database; its future resolves on the event loop after the commit."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any], weight: int = 1) -> None:
        super().__init__(weight)
        self.future = future

    def apply(self, txn: Txn) -> Any:
        """In the writer thread, inside the transaction: the job's SQL; returns its outcome
        (or an EddyError to refuse this job alone)."""
        raise NotImplementedError

    def apply_alone(self, conn: sqlite3.Connection) -> Any:
        """A standalone job's work, outside any transaction."""
        raise NotImplementedError

    def applied(self, log: TopicLog, outcome: Any) -> None:
        """On the event loop, after the commit: memory changes beyond partition states."""


class AppendJob(TopicJob):
    __slots__ = ("batch", "forget_below", "nbytes", "sizes")

    def __init__(
        self,
        batch: AppendBatch,
        future: asyncio.Future[list[AppendedRecord]],
        sizes: list[int],
    ) -> None:
        super().__init__(future, max(1, len(batch.records)))
        self.batch = batch
        self.sizes = sizes
        self.nbytes = sum(sizes)
        self.forget_below: int | None = None

    def apply(self, txn: Txn) -> list[AppendedRecord] | EddyError:
        producer = self.batch.producer
        if producer is not None:
            # The broker checked the sequence when it queued the batch; checked again here
            # against the disk, so that no failure of an earlier request can leave a gap.
            last = txn.producer_last(producer.producer_id)
            after = producer.sequence - 1 if producer.after is None else producer.after
            if last is not None and last != after:
                return OutOfOrderSequence(
                    f"producer '{producer.producer_id}' sent sequence {producer.sequence}; "
                    f"it follows {after}, the last committed is {last} (an earlier request "
                    "failed)",
                    {
                        "producer_id": producer.producer_id,
                        "sequence": producer.sequence,
                        "after": after,
                        "last": last,
                    },
                )
        appended: list[AppendedRecord] = []
        rows = txn.rows
        states = txn.states
        add_appended, add_stored = appended.append, txn.records.append
        new, dumps = _new, orjson.dumps
        for (p, timestamp, key, value, value_format, headers), size in zip(
            self.batch.records, self.sizes, strict=True
        ):
            state = states.get(p) or txn.state(p)
            offset = state[1]
            state[1] = offset + 1
            state[2] += size
            partition_rows = rows.get(p)
            if partition_rows is None:
                partition_rows = rows[p] = []
            partition_rows.append(
                (
                    offset,
                    timestamp,
                    key,
                    value,
                    int(value_format),
                    # a dict inline (nearly every record); pairs in headers.py's array form
                    (dumps(headers) if type(headers) is dict else encode_headers(headers))
                    if headers
                    else None,
                    size,
                )
            )
            add_appended(new(AppendedRecord, (p, offset, timestamp)))
            add_stored(
                new(StoredRecord, (p, offset, timestamp, key, value, value_format, headers, size))
            )
        if producer is not None:
            txn.producer_rows.append(
                (producer.producer_id, producer.sequence, encode_appended(appended), now_ms())
            )
            txn.last_sequence[producer.producer_id] = producer.sequence
            if self.forget_below is not None:
                txn.forget.append((producer.producer_id, self.forget_below))
        return appended

    def applied(self, log: TopicLog, outcome: Any) -> None:
        producer = self.batch.producer
        if producer is not None:
            window = log.producers.get(producer.producer_id)
            if window is None:
                window = log.producers[producer.producer_id] = ProducerWindow()
            window.add(ProducerEntry(producer.sequence, tuple(outcome)))


class AlterJob(TopicJob):
    """New partitions and/or config: `meta` is the topic as it will be."""

    __slots__ = ("meta", "new_partitions")

    def __init__(self, future: asyncio.Future[TopicMeta], meta: TopicMeta, old: int) -> None:
        super().__init__(future)
        self.meta = meta
        self.new_partitions = range(old, meta.partitions)

    def apply(self, txn: Txn) -> TopicMeta:
        txn.flush()
        add_partitions(txn.conn, self.new_partitions)
        txn.conn.execute(
            "UPDATE topic SET partitions = ?, config = ?",
            (self.meta.partitions, orjson.dumps(self.meta.config).decode()),
        )
        for p in self.new_partitions:
            txn.states[p] = [0, 0, 0]
        txn.added_partitions = bool(self.new_partitions)
        return self.meta

    def applied(self, log: TopicLog, outcome: Any) -> None:
        log.meta = self.meta


@dataclass
class TxnResult:
    states: dict[int, PartitionState]
    outcomes: list[Any]
    records: list[StoredRecord] = field(default_factory=list)
    added_partitions: bool = False


@dataclass
class Announcer:
    """The engine's listeners, as the topic log tells them what it did."""

    commit: Callable[[str, Sequence[StoredRecord]], None]
    partitions_added: Callable[[str, int], None]


class TopicLog:
    """A topic's in-memory state (event loop only) and the owner of its database's jobs."""

    def __init__(
        self,
        meta: TopicMeta,
        partitions: list[PartitionState],
        producers: dict[str, ProducerWindow],
        db_path: Any,
        writers: WriterPool,
        readers: ReaderPool,
        announce: Announcer,
        limits: QueueLimits,
    ) -> None:
        self.meta = meta
        self.partitions = partitions
        self.producers = producers
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self.db: Database[TopicJob, TxnResult] = Database(db_path, self, writers, self._loop)
        self._readers = readers
        self._announce = announce
        self._limits = limits
        self._pending_records = 0
        self._pending_bytes = 0
        self._waiting: deque[tuple[AppendJob, asyncio.TimerHandle]] = deque()

    @property
    def name(self) -> str:
        return self.meta.name

    # --- appends (event loop) -----------------------------------------------------------------
    def append(self, batch: AppendBatch, wait: float) -> asyncio.Future[list[AppendedRecord]]:
        if self.closed:
            raise TopicNotFound(self.name)
        count = len(self.partitions)
        for record in batch.records:
            if not 0 <= record.partition < count:
                raise PartitionNotFound(self.name, record.partition, count)
        sizes = (
            list(batch.sizes)
            if batch.sizes is not None
            else [record_size(r.key, r.value, r.headers) for r in batch.records]
        )
        future: asyncio.Future[list[AppendedRecord]] = self._loop.create_future()
        job = AppendJob(batch, future, sizes)
        if not self._waiting and self._has_room(job):
            self._enqueue(job)
        else:  # behind the batches already waiting: batches commit in call order
            timer = self._loop.call_later(wait, self._expire, job)
            self._waiting.append((job, timer))
        return future

    def _has_room(self, job: AppendJob) -> bool:
        if self._pending_records == 0:
            return True  # one batch always fits, however big (the request size bounds it)
        return (
            self._pending_records + job.weight <= self._limits.records
            and self._pending_bytes + job.nbytes <= self._limits.bytes
        )

    def _enqueue(self, job: AppendJob) -> None:
        producer = job.batch.producer
        if producer is not None:
            window = self.producers.get(producer.producer_id)
            if window is not None:
                job.forget_below = window.first  # older rows are no longer remembered
        self.db.submit(job)
        self._pending_records += job.weight
        self._pending_bytes += job.nbytes

    def _expire(self, job: AppendJob) -> None:
        for i, (waiting, _) in enumerate(self._waiting):
            if waiting is job:
                del self._waiting[i]
                break
        if not job.future.done():
            job.future.set_exception(
                Unavailable(
                    f"topic '{self.name}' has too many writes pending; retry later",
                    {"topic": self.name, "retry_after_seconds": RETRY_AFTER_SECONDS},
                    retry_after=RETRY_AFTER_SECONDS,
                )
            )
        self._admit()

    def _admit(self) -> None:
        while self._waiting and not self.closed and self._has_room(self._waiting[0][0]):
            job, timer = self._waiting.popleft()
            timer.cancel()
            try:
                self._enqueue(job)
            except DatabaseClosed:
                job.future.set_exception(TopicNotFound(self.name))

    def submit(self, job: TopicJob) -> None:
        """Queue a job (alter, cleaning) behind the appends already queued."""
        if self.closed:
            raise TopicNotFound(self.name)
        try:
            self.db.submit(job)
        except DatabaseClosed:
            raise TopicNotFound(self.name) from None

    # --- the writer thread --------------------------------------------------------------------
    def run(self, conn: sqlite3.Connection, jobs: list[TopicJob]) -> TxnResult:
        if jobs[0].standalone:
            return TxnResult({}, [jobs[0].apply_alone(conn)])
        txn = Txn(conn)
        outcomes: list[Any] = []
        for job in jobs:
            if not isinstance(job, AppendJob):
                txn.flush()
            outcomes.append(job.apply(txn))
        states = txn.finish()
        return TxnResult(states, outcomes, txn.records, txn.added_partitions)

    # --- event loop, after the writer -----------------------------------------------------------
    def committed(self, jobs: list[TopicJob], result: TxnResult) -> None:
        partitions = self.partitions
        for p in sorted(result.states):
            state = result.states[p]
            if p < len(partitions):
                partitions[p] = state
            else:
                partitions.append(state)
        for job, outcome in zip(jobs, result.outcomes, strict=True):
            if not isinstance(outcome, EddyError):
                job.applied(self, outcome)
        if result.records:
            self._announce.commit(self.name, result.records)
        if result.added_partitions:
            self._announce.partitions_added(self.name, self.meta.partitions)
        for job, outcome in zip(jobs, result.outcomes, strict=True):
            if not job.future.done():
                if isinstance(outcome, EddyError):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)
        self._settled(jobs)

    def failed(self, jobs: list[TopicJob], error: BaseException) -> None:
        exc = self.storage_error(error)
        if not isinstance(error, DatabaseClosed | sqlite3.Error | OSError | EddyError):
            log.error("writing to topic %s failed", self.name, exc_info=error)
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)
        self._settled(jobs)

    def _settled(self, jobs: list[TopicJob]) -> None:
        for job in jobs:
            if isinstance(job, AppendJob):
                self._pending_records -= job.weight
                self._pending_bytes -= job.nbytes
        self._admit()

    def storage_error(self, error: BaseException) -> EddyError:
        """What a failed statement means: the topic was deleted meanwhile, or storage is
        unavailable."""
        if isinstance(error, EddyError):
            return error
        if self.closed or isinstance(error, DatabaseClosed):
            return TopicNotFound(self.name)
        return Unavailable(f"storage error on topic '{self.name}': {error}", {"topic": self.name})

    def close(self) -> asyncio.Future[None]:
        """Refuse new work, fail what waits for room, let queued jobs finish, close files."""
        self.closed = True
        while self._waiting:
            job, timer = self._waiting.popleft()
            timer.cancel()
            if not job.future.done():
                job.future.set_exception(TopicNotFound(self.name))
        self._readers.forget(self.db)
        return self.db.close()

    # --- reads (reader threads) -----------------------------------------------------------------
    async def query(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self.closed:
            raise TopicNotFound(self.name)
        try:
            return await self._readers.read(self.db, fn)
        except (sqlite3.Error, OSError, DatabaseClosed, RuntimeError) as exc:
            raise self.storage_error(exc) from exc

    def check_partition(self, partition: int) -> PartitionState:
        if not 0 <= partition < len(self.partitions):
            raise PartitionNotFound(self.name, partition, len(self.partitions))
        return self.partitions[partition]

    async def read(
        self, partition: int, offset: int, limit: int, max_bytes: int
    ) -> list[StoredRecord]:
        self.check_partition(partition)
        sql = (
            f'SELECT "offset", timestamp, key, value, value_format, headers, size '
            f'FROM {partition_table(partition)} WHERE "offset" >= ? ORDER BY "offset" LIMIT ?'
        )

        def read(conn: sqlite3.Connection) -> list[StoredRecord]:
            # Per row: the enum member from a table and the tuple without StoredRecord's
            # Python-level __new__ (ValueFormat(fmt) alone was ~60% of a read's time).
            records: list[StoredRecord] = []
            add, new, formats, loads = records.append, _new, _FORMATS, orjson.loads
            total = 0
            for off, ts, key, value, fmt, headers, size in conn.execute(sql, (offset, limit)):
                total += size
                if records and total > max_bytes:
                    break
                stored: Any = loads(headers) if headers else {}
                add(
                    new(
                        StoredRecord,
                        (
                            partition,
                            off,
                            ts,
                            key,
                            value,
                            formats[fmt],
                            stored if type(stored) is dict else stored_pairs(stored),
                            size,
                        ),
                    )
                )
            return records

        records: list[StoredRecord] = await self.query(read)
        return records

    async def offset_for_timestamp(self, partition: int, timestamp: int) -> int | None:
        self.check_partition(partition)
        sql = (
            f'SELECT "offset" FROM {partition_table(partition)} WHERE timestamp >= ? '
            f'ORDER BY "offset" LIMIT 1'
        )

        def find(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(sql, (timestamp,)).fetchone()
            return None if row is None else int(row[0])

        found: int | None = await self.query(find)
        return found


def now_ms() -> int:
    return int(time.time() * 1000)

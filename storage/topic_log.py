"""One topic's log: appends with group commit and a bounded write queue; reads; offsets.

The event loop side (`TopicLog`) validates a batch, queues it as a job for the topic's one
writer (or, when the queue is full, waits a bounded time for room), and publishes the state
once the writer reports the commit. The writer side (`TopicLog.run`, in the writer thread) runs
every job of one transaction in one `Txn` (topic_jobs.py, with the jobs themselves).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from eddy.models.errors import (
    EddyError,
    PartitionNotFound,
    TopicNotFound,
    Unavailable,
)
from eddy.models.headers import stored_pairs
from eddy.models.log import AppendedRecord, PartitionState, StoredRecord, TopicMeta, ValueFormat
from eddy.storage.engine import AppendBatch, ProducerWindow, record_size
from eddy.storage.readers import ReaderPool
from eddy.storage.schema import partition_table
from eddy.storage.topic_jobs import AppendJob, TopicJob, Txn, TxnResult
from eddy.storage.writer import Database, DatabaseClosed, WriterPool

log = logging.getLogger("eddy.storage")

# Builds the StoredRecords read back without their Python-level __new__ (as topic_jobs.py does).
_new = tuple.__new__
_FORMATS = {int(f): f for f in ValueFormat}  # stored value_format -> its member

RETRY_AFTER_SECONDS = 1.0  # hint to producers refused because the write queue stayed full


@dataclass(frozen=True)
class QueueLimits:
    """Bound of one topic's pending writes (queued, not yet committed)."""

    records: int = 50_000
    bytes: int = 64 * 1_048_576


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

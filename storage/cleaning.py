"""Cleaning a topic's log: retention (a prefix at a time), compaction, giving space back.

Each step is one short, bounded job for the topic's writer, queued behind the appends, so
producers keep committing between steps while a large backlog is removed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from eddy.storage.schema import partition_table, quote_identifier
from eddy.storage.topic_jobs import TopicJob, Txn
from eddy.storage.topic_log import TopicLog

VACUUM_PAGES_PER_STEP = 256  # 1 MiB with 4 KiB pages: one short step for the writer


class DeleteBeforeJob(TopicJob):
    """Delete at most `limit` records below `offset`; move the log start up."""

    __slots__ = ("limit", "offset", "partition")

    def __init__(self, future: asyncio.Future[int], partition: int, offset: int, limit: int):
        super().__init__(future)
        self.partition = partition
        self.offset = offset
        self.limit = limit

    def apply(self, txn: Txn) -> int:
        state = txn.state(self.partition)
        offset = min(self.offset, state[1])
        if offset <= state[0]:
            return 0
        table = partition_table(self.partition)
        deleted = txn.conn.execute(
            f'DELETE FROM {table} WHERE "offset" IN (SELECT "offset" FROM {table} '
            f'WHERE "offset" < ? ORDER BY "offset" LIMIT ?) RETURNING "offset", size',
            (offset, self.limit),
        ).fetchall()
        # all gone below `offset`: the log starts there; else just past what went
        state[0] = offset if len(deleted) < self.limit else max(o for o, _ in deleted) + 1
        state[2] -= sum(size for _, size in deleted)
        return len(deleted)


class CompactJob(TopicJob):
    """In [low, high): delete keyed records a newer one supersedes, and old tombstones."""

    __slots__ = ("high", "low", "partition", "tombstones_before")

    def __init__(
        self,
        future: asyncio.Future[int],
        partition: int,
        low: int,
        high: int,
        tombstones_before: int,
    ) -> None:
        super().__init__(future)
        self.partition = partition
        self.low = low
        self.high = high
        self.tombstones_before = tombstones_before

    def apply(self, txn: Txn) -> int:
        table = partition_table(self.partition)
        index = quote_identifier(f"p{int(self.partition)}_key")
        conn = txn.conn
        # Compaction looks records up by key; the index exists only on compacted topics (it
        # would slow every append elsewhere). Built once, on first compaction.
        conn.execute(f'CREATE INDEX IF NOT EXISTS {index} ON {table} (key, "offset")')
        deleted = conn.execute(
            f'DELETE FROM {table} WHERE "offset" IN ('
            f'SELECT a."offset" FROM {table} AS a '
            f'WHERE a."offset" >= ? AND a."offset" < ? AND a.key IS NOT NULL AND ('
            f"EXISTS (SELECT 1 FROM {table} AS b "
            f'WHERE b.key = a.key AND b."offset" > a."offset") '
            f"OR (a.value IS NULL AND a.timestamp < ?))) RETURNING size",
            (self.low, self.high, self.tombstones_before),
        ).fetchall()
        txn.state(self.partition)[2] -= sum(size for (size,) in deleted)
        return len(deleted)


class ReclaimJob(TopicJob):
    """Give up to VACUUM_PAGES_PER_STEP free pages back; outside a transaction."""

    __slots__ = ()
    standalone = True

    def apply_alone(self, conn: sqlite3.Connection) -> int:
        # The pragma frees one page per result row stepped through: read them all.
        conn.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES_PER_STEP})").fetchall()
        (free_pages,) = conn.execute("PRAGMA freelist_count").fetchone()
        if free_pages == 0:
            # Copy the WAL back and truncate both files, so the space is really free.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        return int(free_pages) * int(page_size)


async def retention_point(
    log: TopicLog, partition: int, before_timestamp: int | None, max_bytes: int | None
) -> int:
    """The offset the log should start at (see `Engine.retention_point`)."""
    state = log.check_partition(partition)
    table = partition_table(partition)

    def find(conn: sqlite3.Connection) -> int:
        start = state.log_start_offset
        if before_timestamp is not None:
            row = conn.execute(
                f'SELECT "offset" FROM {table} WHERE "offset" >= ? AND timestamp >= ? '
                f'ORDER BY "offset" LIMIT 1',
                (start, before_timestamp),
            ).fetchone()
            start = max(start, state.high_watermark if row is None else row[0])
        if max_bytes is not None and state.size_bytes > max_bytes:
            excess = state.size_bytes - max_bytes
            row = conn.execute(
                f'SELECT "offset" FROM (SELECT "offset", sum(size) OVER (ORDER BY "offset") '
                f"AS running FROM {table}) WHERE running >= ? LIMIT 1",
                (excess,),
            ).fetchone()
            start = max(start, state.high_watermark if row is None else row[0] + 1)
        return start

    point: int = await log.query(find)
    return point


async def run_job(log: TopicLog, job: TopicJob) -> Any:
    log.submit(job)
    return await job.future

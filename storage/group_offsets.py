"""Consumer groups' committed offsets in groups.db, through its one writer.

Commits queue as jobs; the writer puts everything queued meanwhile into one transaction (in
call order, so a later commit of the same partition wins) and the in-memory view changes only
in the event-loop step that learns the transaction is durable. A failed transaction changes
nothing in memory; concurrent commits never run inside each other's transactions.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from eddy.models.errors import EddyError, Unavailable
from eddy.models.log import CommittedOffset
from eddy.storage.writer import Database, DatabaseClosed, Job, WriterPool

log = logging.getLogger("eddy.storage")

Key = tuple[str, str, int]  # (group, topic, partition)


class _OffsetsJob(Job):
    __slots__ = ("future", "group", "rows", "topic")

    def __init__(
        self,
        future: asyncio.Future[None],
        group: str,
        topic: str | None,
        rows: list[CommittedOffset] | None,
    ) -> None:
        super().__init__(len(rows) if rows else 1)
        self.future = future
        self.group = group
        self.topic = topic
        self.rows = rows  # None: delete the group's offsets (on `topic`, or all)


class GroupOffsets:
    def __init__(self, path: Path, writers: WriterPool, loop: asyncio.AbstractEventLoop) -> None:
        self._committed: dict[Key, CommittedOffset] = {}
        self._db: Database[_OffsetsJob, None] = Database(path, self, writers, loop)
        self._loop = loop

    def load(self, offsets: list[CommittedOffset]) -> None:
        self._committed = {(c.group, c.topic, c.partition): c for c in offsets}

    @property
    def db(self) -> Database[_OffsetsJob, None]:
        return self._db

    # --- event loop ---------------------------------------------------------------------------
    def committed_offsets(self, group: str | None = None) -> list[CommittedOffset]:
        return [c for c in self._committed.values() if group is None or c.group == group]

    def groups_on(self, topic: str) -> set[str]:
        return {k[0] for k in self._committed if k[1] == topic}

    async def commit(
        self,
        group: str,
        topic: str,
        offsets: Mapping[int, int],
        metadata: Mapping[int, str] | None = None,
    ) -> None:
        now = int(time.time() * 1000)
        notes = metadata or {}
        rows = [
            CommittedOffset(group, topic, p, o, now, notes.get(p, "")) for p, o in offsets.items()
        ]
        await self._run(_OffsetsJob(self._loop.create_future(), group, topic, rows))

    async def delete(self, group: str, topic: str | None = None) -> None:
        await self._run(_OffsetsJob(self._loop.create_future(), group, topic, None))

    async def _run(self, job: _OffsetsJob) -> None:
        try:
            self._db.submit(job)
        except DatabaseClosed:
            raise Unavailable("storage is not open") from None
        # Shielded: a caller that goes away does not cancel a commit already queued.
        await asyncio.shield(job.future)

    def close(self) -> asyncio.Future[None]:
        return self._db.close()

    # --- the writer thread --------------------------------------------------------------------
    def run(self, conn: sqlite3.Connection, jobs: list[_OffsetsJob]) -> None:
        for job in jobs:
            if job.rows is not None:
                conn.executemany(
                    "INSERT INTO group_offsets (group_name, topic, partition, next_offset, "
                    "committed_at, metadata) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                    "(group_name, topic, partition) DO UPDATE SET "
                    "next_offset = excluded.next_offset, committed_at = excluded.committed_at, "
                    "metadata = excluded.metadata",
                    [
                        (c.group, c.topic, c.partition, c.offset, c.committed_at, c.metadata)
                        for c in job.rows
                    ],
                )
            elif job.topic is None:
                conn.execute("DELETE FROM group_offsets WHERE group_name = ?", (job.group,))
            else:
                conn.execute(
                    "DELETE FROM group_offsets WHERE group_name = ? AND topic = ?",
                    (job.group, job.topic),
                )

    # --- event loop, after the writer -----------------------------------------------------------
    def committed(self, jobs: list[_OffsetsJob], result: None) -> None:
        committed = self._committed
        for job in jobs:  # in call order, as the transaction applied them
            if job.rows is not None:
                for c in job.rows:
                    committed[(c.group, c.topic, c.partition)] = c
            else:
                for key in [
                    k for k in committed if k[0] == job.group and job.topic in (None, k[1])
                ]:
                    del committed[key]
            if not job.future.done():
                job.future.set_result(None)

    def failed(self, jobs: list[_OffsetsJob], error: BaseException) -> None:
        if not isinstance(error, sqlite3.Error | OSError | DatabaseClosed | EddyError):
            log.error("writing group offsets failed", exc_info=error)
        for job in jobs:
            what = "commit" if job.rows is not None else "delete"
            exc = Unavailable(f"cannot {what} offsets of group '{job.group}': {error}")
            if not job.future.done():
                job.future.set_exception(exc)

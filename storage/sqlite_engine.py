"""The embedded engine: one SQLite database file per topic, one table per partition.

Layout under the data dir::

    eddy.lock                 held (flock) by the one server that owns this data dir
    groups.db                 consumer groups' committed offsets
    topics/<topic>/log.db     the topic's database (plus SQLite's -wal/-shm files)
    tmp/                      topics being created or deleted (emptied at start-up)

A topic database holds the table ``topic`` (its one row: name, partition count, config,
creation time), ``partitions`` (per partition: log start offset, high watermark, size) and one
table ``p<N>`` per partition whose ``offset`` column is the INTEGER PRIMARY KEY. Offsets come
from ``partitions.high_watermark``, never from ``max(offset)+1``, so they are not reused even after
every record of a partition has been deleted.

Each topic has two aiosqlite connections (so two threads): a writer, used only under the topic's
write lock, and a reader, so fetches run while a commit is being fsynced (WAL mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import orjson

from models.errors import (
    PartitionNotFound,
    TopicExists,
    TopicNotFound,
    Unavailable,
)
from storage.engine import (
    PRODUCER_HISTORY,
    AppendBatch,
    AppendedRecord,
    CommittedOffset,
    Engine,
    PartitionState,
    ProducerEntry,
    StoredRecord,
    TopicMeta,
    ValueFormat,
)

log = logging.getLogger("eddy.storage")

SCHEMA_VERSION = 2  # 1: no producers table
CREATE_PRODUCERS = (
    "CREATE TABLE IF NOT EXISTS producers (producer_id TEXT NOT NULL, sequence INTEGER NOT NULL, "
    "appended BLOB NOT NULL, committed_at INTEGER NOT NULL, PRIMARY KEY (producer_id, sequence))"
)
VACUUM_PAGES_PER_STEP = 256  # 1 MiB with 4 KiB pages: one short step under the write lock
SyncPolicy = Literal["full", "normal"]


class DataDirLocked(Exception):
    """Another process owns the data dir."""


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def partition_table(partition: int) -> str:
    return quote_identifier(f"p{int(partition)}")


def now_ms() -> int:
    return int(time.time() * 1000)


def _encode_appended(appended: Sequence[AppendedRecord]) -> bytes:
    return orjson.dumps([[a.partition, a.offset, a.timestamp] for a in appended])


def _decode_appended(blob: bytes) -> tuple[AppendedRecord, ...]:
    return tuple(AppendedRecord(*item) for item in orjson.loads(blob))


def record_size(key: str | None, value: bytes | None, headers_blob: bytes | None) -> int:
    """Bytes of record data, as counted by size_bytes and max.message.bytes."""
    return (len(key.encode()) if key else 0) + len(value or b"") + len(headers_blob or b"")


@dataclass
class _Topic:
    meta: TopicMeta
    path: Path
    writer: aiosqlite.Connection
    reader: aiosqlite.Connection
    partitions: list[PartitionState]
    producers: dict[str, deque[ProducerEntry]] = field(default_factory=dict)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False

    async def close(self) -> None:
        self.closed = True
        for conn in (self.reader, self.writer):
            with contextlib.suppress(Exception):
                await conn.close()


class SQLiteEngine(Engine):
    def __init__(self, data_dir: Path, sync: SyncPolicy = "full") -> None:
        self.data_dir = Path(data_dir)
        self.sync = sync
        self._topics: dict[str, _Topic] = {}
        # topics whose database could not be opened -> why; they answer 503, others keep working
        self._broken: dict[str, str] = {}
        self._catalog_lock = asyncio.Lock()  # serialises create/delete/alter of topics
        self._lock_fd: int | None = None
        self._groups_db: aiosqlite.Connection | None = None
        # (group, topic, partition) -> CommittedOffset; loaded at open, written through
        self._committed: dict[tuple[str, str, int], CommittedOffset] = {}

    # --- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        self._acquire_dir_lock()
        topics_dir = self.data_dir / "topics"
        tmp_dir = self.data_dir / "tmp"
        topics_dir.mkdir(exist_ok=True)
        await asyncio.to_thread(shutil.rmtree, tmp_dir, True)
        tmp_dir.mkdir(exist_ok=True)
        await self._open_groups_db()
        for db_path in sorted(topics_dir.glob("*/log.db")):
            try:
                topic = await self._open_topic(db_path)
            except Exception as exc:  # one bad file must not keep the other topics down
                log.error(
                    "topic %s is unavailable: cannot open %s: %s", db_path.parent.name, db_path, exc
                )
                self._broken[db_path.parent.name] = str(exc)
                continue
            self._topics[topic.meta.name] = topic

    @staticmethod
    def _lock_dir(data_dir: Path) -> int:
        """flock the data dir's lock file; returns its descriptor (closing it unlocks)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / "eddy.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"data dir {data_dir.resolve()} is in use by another Eddy server "
                f"(pid {holder}); refusing to start"
            ) from None
        return fd

    @classmethod
    def ensure_data_dir_free(cls, data_dir: Path) -> None:
        """Raise `DataDirLocked` if another server owns `data_dir` (a check before start-up)."""
        os.close(cls._lock_dir(data_dir))

    def _acquire_dir_lock(self) -> None:
        fd = self._lock_dir(self.data_dir)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    async def _open_groups_db(self) -> None:
        conn = await self._connect(self.data_dir / "groups.db")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS group_offsets (group_name TEXT NOT NULL, "
            "topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, "
            "committed_at INTEGER NOT NULL, PRIMARY KEY (group_name, topic, partition))"
        )
        async with conn.execute(
            "SELECT group_name, topic, partition, next_offset, committed_at FROM group_offsets"
        ) as cur:
            async for row in cur:
                committed = CommittedOffset(*row)
                self._committed[(committed.group, committed.topic, committed.partition)] = committed
        self._groups_db = conn

    async def close(self) -> None:
        if self._groups_db is not None:
            await self._groups_db.close()
            self._groups_db = None
        topics, self._topics = list(self._topics.values()), {}
        for topic in topics:
            async with topic.write_lock:  # let an in-flight commit finish first
                await topic.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    async def check_writable(self) -> None:
        if self._lock_fd is None:
            raise Unavailable("storage is not open")
        probe = self.data_dir / "tmp" / f"probe-{uuid.uuid4().hex}"
        try:
            await asyncio.to_thread(probe.write_bytes, b"ok")
            await asyncio.to_thread(probe.unlink)
        except OSError as exc:
            raise Unavailable(f"data dir is not writable: {exc.strerror}") from exc

    # --- connections --------------------------------------------------------------------------
    async def _connect(self, path: Path) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={self.sync.upper()}")
            await conn.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            # Each connection owns a (non-daemon) thread: a file that is not a database
            # must not leave one behind, or the process could never exit.
            await conn.close()
            raise
        return conn

    async def _open_topic(self, db_path: Path) -> _Topic:
        writer = await self._connect(db_path)
        try:
            async with writer.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            version = row[0] if row else 0
            if version == 1:  # written by Eddy before the idempotent producer
                await writer.execute(CREATE_PRODUCERS)
                await writer.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise RuntimeError(f"unsupported schema version {version}")
            async with writer.execute(
                "SELECT name, partitions, config, created_at FROM topic"
            ) as cur:
                name, partitions, config, created_at = await cur.fetchone()  # type: ignore[misc]
            async with writer.execute(
                "SELECT partition, log_start_offset, high_watermark, size_bytes FROM partitions "
                "ORDER BY partition"
            ) as cur:
                states = [PartitionState(*row) async for row in cur]
            producers: dict[str, deque[ProducerEntry]] = {}
            async with writer.execute(
                "SELECT producer_id, sequence, appended FROM producers ORDER BY sequence"
            ) as cur:
                async for producer_id, sequence, appended in cur:
                    producers.setdefault(producer_id, deque(maxlen=PRODUCER_HISTORY)).append(
                        ProducerEntry(sequence, _decode_appended(appended))
                    )
            reader = await self._connect(db_path)
        except BaseException:
            await writer.close()
            raise
        meta = TopicMeta(name, partitions, orjson.loads(config), created_at)
        return _Topic(meta, db_path.parent, writer, reader, states, producers)

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None or topic.closed:
            self._raise_if_broken(name)
            raise TopicNotFound(name)
        return topic

    def _raise_if_broken(self, name: str) -> None:
        if name in self._broken:
            raise Unavailable(
                f"topic '{name}' is unavailable: its database cannot be opened "
                f"({self._broken[name]}); other topics are not affected. Restore the file "
                "from a backup and restart, or delete the topic",
                {"topic": name},
            )

    # --- topics -------------------------------------------------------------------------------
    def list_topics(self) -> list[TopicMeta]:
        return [self._topics[name].meta for name in sorted(self._topics)]

    def get_topic(self, name: str) -> TopicMeta:
        return self._topic(name).meta

    async def create_topic(self, name: str, partitions: int, config: dict[str, Any]) -> TopicMeta:
        async with self._catalog_lock:
            self._raise_if_broken(name)
            if name in self._topics:
                raise TopicExists(name)
            meta = TopicMeta(name, partitions, dict(config), int(time.time() * 1000))
            # Build the database in tmp/ and rename it into place, so a crash mid-way never
            # leaves a half-made topic behind.
            staging = self.data_dir / "tmp" / f"create-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                await self._initialise_db(staging / "log.db", meta)
                final = self.data_dir / "topics" / name
                await asyncio.to_thread(staging.rename, final)
                self._topics[name] = await self._open_topic(final / "log.db")
            except sqlite3.Error as exc:
                await asyncio.to_thread(shutil.rmtree, staging, True)
                raise Unavailable(f"cannot create topic '{name}': {exc}") from exc
            return meta

    async def _initialise_db(self, path: Path, meta: TopicMeta) -> None:
        async with aiosqlite.connect(path, isolation_level=None) as conn:
            # auto_vacuum must be chosen before the first table exists; incremental lets
            # retention give space back to the filesystem in small steps.
            await conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("BEGIN IMMEDIATE")
            await conn.execute(
                "CREATE TABLE topic (name TEXT NOT NULL, partitions INTEGER NOT NULL, "
                "config TEXT NOT NULL, created_at INTEGER NOT NULL)"
            )
            await conn.execute(
                "INSERT INTO topic VALUES (?, ?, ?, ?)",
                (meta.name, meta.partitions, orjson.dumps(meta.config).decode(), meta.created_at),
            )
            await conn.execute(
                "CREATE TABLE partitions (partition INTEGER PRIMARY KEY, "
                "log_start_offset INTEGER NOT NULL, high_watermark INTEGER NOT NULL, "
                "size_bytes INTEGER NOT NULL)"
            )
            await self._add_partitions(conn, range(meta.partitions))
            await conn.execute(CREATE_PRODUCERS)
            await conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            await conn.execute("COMMIT")

    @staticmethod
    async def _add_partitions(conn: aiosqlite.Connection, numbers: Iterable[int]) -> None:
        for number in numbers:
            await conn.execute(
                f'CREATE TABLE {partition_table(number)} ("offset" INTEGER PRIMARY KEY, '
                "timestamp INTEGER NOT NULL, key TEXT, value BLOB, "
                "value_format INTEGER NOT NULL, headers BLOB, size INTEGER NOT NULL)"
            )
            await conn.execute("INSERT INTO partitions VALUES (?, 0, 0, 0)", (number,))

    async def update_topic(
        self, name: str, partitions: int | None, config: dict[str, Any] | None
    ) -> TopicMeta:
        async with self._catalog_lock:
            topic = self._topic(name)
            async with topic.write_lock:
                meta = topic.meta
                new_partitions = range(meta.partitions, partitions or meta.partitions)
                new_config = meta.config if config is None else dict(config)
                conn = topic.writer
                async with self._transaction(
                    conn, lambda exc: Unavailable(f"cannot update topic '{name}': {exc}")
                ):
                    await self._add_partitions(conn, new_partitions)
                    await conn.execute(
                        "UPDATE topic SET partitions = ?, config = ?",
                        (meta.partitions + len(new_partitions), orjson.dumps(new_config).decode()),
                    )
                topic.partitions.extend(PartitionState(p, 0, 0, 0) for p in new_partitions)
                topic.meta = replace(
                    meta, partitions=meta.partitions + len(new_partitions), config=new_config
                )
                if new_partitions:
                    self._announce_partitions_added(name, topic.meta.partitions)
                return topic.meta

    async def delete_topic(self, name: str) -> None:
        async with self._catalog_lock:
            if name in self._broken:  # deleting is how an operator gives up on a bad file
                del self._broken[name]
                await self._remove_dir(self.data_dir / "topics" / name)
                return
            topic = self._topic(name)
            del self._topics[name]
            async with topic.write_lock:
                await topic.close()
            for group in {k[0] for k in self._committed if k[1] == name}:
                await self.delete_committed_offsets(group, name)
            await self._remove_dir(topic.path)
            self._announce_topic_deleted(name)

    async def _remove_dir(self, path: Path) -> None:
        """Move aside (atomic) then delete, so a crash never leaves half a topic in topics/."""
        doomed = self.data_dir / "tmp" / f"delete-{uuid.uuid4().hex}"
        await asyncio.to_thread(path.rename, doomed)
        await asyncio.to_thread(shutil.rmtree, doomed, True)

    # --- partitions ---------------------------------------------------------------------------
    def partition_state(self, topic: str, partition: int) -> PartitionState:
        handle = self._topic(topic)
        if not 0 <= partition < len(handle.partitions):
            raise PartitionNotFound(topic, partition, len(handle.partitions))
        return handle.partitions[partition]

    async def append(
        self, topic: str, batches: Sequence[AppendBatch]
    ) -> list[list[AppendedRecord]]:
        handle = self._topic(topic)
        async with handle.write_lock:
            if handle.closed:
                raise TopicNotFound(topic)
            states = handle.partitions
            next_offset = [s.high_watermark for s in states]
            added_bytes = [0] * len(states)
            rows: dict[int, list[tuple[Any, ...]]] = {}
            results: list[list[AppendedRecord]] = []
            for batch in batches:
                appended: list[AppendedRecord] = []
                for record in batch.records:
                    p = record.partition
                    if not 0 <= p < len(states):
                        raise PartitionNotFound(topic, p, len(states))
                    headers_blob = orjson.dumps(record.headers) if record.headers else None
                    size = record_size(record.key, record.value, headers_blob)
                    offset = next_offset[p]
                    next_offset[p] += 1
                    added_bytes[p] += size
                    rows.setdefault(p, []).append(
                        (
                            offset,
                            record.timestamp,
                            record.key,
                            record.value,
                            int(record.value_format),
                            headers_blob,
                            size,
                        )
                    )
                    appended.append(AppendedRecord(p, offset, record.timestamp))
                results.append(appended)
            producer_rows = [
                (b.producer.producer_id, b.producer.sequence, _encode_appended(r), now_ms())
                for b, r in zip(batches, results, strict=True)
                if b.producer is not None
            ]
            conn = handle.writer
            async with self._transaction(conn, partial(self._storage_error, handle, topic)):
                for p, partition_rows in rows.items():
                    await conn.executemany(
                        f"INSERT INTO {partition_table(p)} VALUES (?, ?, ?, ?, ?, ?, ?)",
                        partition_rows,
                    )
                await conn.executemany(
                    "UPDATE partitions SET high_watermark = ?, size_bytes = size_bytes + ? "
                    "WHERE partition = ?",
                    [(next_offset[p], added_bytes[p], p) for p in rows],
                )
                if producer_rows:
                    await conn.executemany(
                        "INSERT OR REPLACE INTO producers VALUES (?, ?, ?, ?)", producer_rows
                    )
                    await conn.executemany(
                        "DELETE FROM producers WHERE producer_id = ? AND sequence <= ?",
                        [(row[0], row[1] - PRODUCER_HISTORY) for row in producer_rows],
                    )
            # Committed: publish the new state in memory before anything else can run.
            for p in rows:
                s = states[p]
                states[p] = PartitionState(
                    p, s.log_start_offset, next_offset[p], s.size_bytes + added_bytes[p]
                )
            for batch, appended in zip(batches, results, strict=True):
                if batch.producer is not None:
                    history = handle.producers.setdefault(
                        batch.producer.producer_id, deque(maxlen=PRODUCER_HISTORY)
                    )
                    history.append(ProducerEntry(batch.producer.sequence, tuple(appended)))
            self._announce_commit(
                topic,
                [
                    StoredRecord(
                        a.partition,
                        a.offset,
                        a.timestamp,
                        r.key,
                        r.value,
                        r.value_format,
                        r.headers,
                    )
                    for batch, appended in zip(batches, results, strict=True)
                    for r, a in zip(batch.records, appended, strict=True)
                ],
            )
            return results

    def producer_history(self, topic: str, producer_id: str) -> Sequence[ProducerEntry]:
        return tuple(self._topic(topic).producers.get(producer_id, ()))

    async def retention_point(
        self, topic: str, partition: int, before_timestamp: int | None, max_bytes: int | None
    ) -> int:
        handle = self._topic(topic)
        state = self.partition_state(topic, partition)
        table = partition_table(partition)
        start = state.log_start_offset
        try:
            if before_timestamp is not None:
                async with handle.reader.execute(
                    f'SELECT "offset" FROM {table} WHERE "offset" >= ? AND timestamp >= ? '
                    f'ORDER BY "offset" LIMIT 1',
                    (start, before_timestamp),
                ) as cur:
                    row = await cur.fetchone()
                start = max(start, state.high_watermark if row is None else row[0])
            if max_bytes is not None and state.size_bytes > max_bytes:
                excess = state.size_bytes - max_bytes
                async with handle.reader.execute(
                    f'SELECT "offset" FROM (SELECT "offset", sum(size) OVER (ORDER BY "offset") '
                    f"AS running FROM {table}) WHERE running >= ? LIMIT 1",
                    (excess,),
                ) as cur:
                    row = await cur.fetchone()
                start = max(start, state.high_watermark if row is None else row[0] + 1)
        except (sqlite3.Error, ValueError) as exc:
            raise self._storage_error(handle, topic, exc) from exc
        return start

    async def delete_before(self, topic: str, partition: int, offset: int, limit: int) -> int:
        handle = self._topic(topic)
        table = partition_table(partition)
        async with handle.write_lock:
            state = self.partition_state(topic, partition)
            offset = min(offset, state.high_watermark)
            if offset <= state.log_start_offset:
                return 0
            conn = handle.writer
            async with self._transaction(conn, partial(self._storage_error, handle, topic)):
                async with conn.execute(
                    f'DELETE FROM {table} WHERE "offset" IN (SELECT "offset" FROM {table} '
                    f'WHERE "offset" < ? ORDER BY "offset" LIMIT ?) RETURNING "offset", size',
                    (offset, limit),
                ) as cur:
                    deleted = list(await cur.fetchall())
                # all gone below `offset`: the log starts there; else just past what went
                new_start = offset if len(deleted) < limit else max(o for o, _ in deleted) + 1
                freed = sum(size for _, size in deleted)
                await conn.execute(
                    "UPDATE partitions SET log_start_offset = ?, size_bytes = size_bytes - ? "
                    "WHERE partition = ?",
                    (new_start, freed, partition),
                )
            s = handle.partitions[partition]
            handle.partitions[partition] = PartitionState(
                partition, new_start, s.high_watermark, s.size_bytes - freed
            )
            return len(deleted)

    async def compact(
        self,
        topic: str,
        partition: int,
        from_offset: int,
        to_offset: int,
        tombstones_before: int,
    ) -> int:
        handle = self._topic(topic)
        table = partition_table(partition)
        index = quote_identifier(f"p{int(partition)}_key")
        async with handle.write_lock:
            conn = handle.writer
            try:
                # Compaction looks records up by key; the index exists only on compacted topics
                # (it would slow every append elsewhere). Built once, on first compaction.
                await conn.execute(f'CREATE INDEX IF NOT EXISTS {index} ON {table} (key, "offset")')
                await conn.execute("BEGIN IMMEDIATE")
                async with conn.execute(
                    f'DELETE FROM {table} WHERE "offset" IN ('
                    f'SELECT a."offset" FROM {table} AS a '
                    f'WHERE a."offset" >= ? AND a."offset" < ? AND a.key IS NOT NULL AND ('
                    f"EXISTS (SELECT 1 FROM {table} AS b "
                    f'WHERE b.key = a.key AND b."offset" > a."offset") '
                    f"OR (a.value IS NULL AND a.timestamp < ?))) RETURNING size",
                    (from_offset, to_offset, tombstones_before),
                ) as cur:
                    deleted = list(await cur.fetchall())
                freed = sum(size for (size,) in deleted)
                await conn.execute(
                    "UPDATE partitions SET size_bytes = size_bytes - ? WHERE partition = ?",
                    (freed, partition),
                )
                await conn.execute("COMMIT")
            except (sqlite3.Error, ValueError) as exc:
                await self._rollback(conn)
                raise self._storage_error(handle, topic, exc) from exc
            s = handle.partitions[partition]
            handle.partitions[partition] = PartitionState(
                partition, s.log_start_offset, s.high_watermark, s.size_bytes - freed
            )
            return len(deleted)

    async def reclaim_space(self, topic: str) -> int:
        handle = self._topic(topic)
        async with handle.write_lock:
            conn = handle.writer
            try:
                # The pragma frees one page per result row stepped through: read them all.
                pragma = f"PRAGMA incremental_vacuum({VACUUM_PAGES_PER_STEP})"
                async with conn.execute(pragma) as cursor:
                    await cursor.fetchall()
                async with conn.execute("PRAGMA freelist_count") as cur:
                    row = await cur.fetchone()
                free_pages = int(row[0]) if row else 0
                if free_pages == 0:
                    # Copy the WAL back and truncate both files, so the space is really free.
                    await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                async with conn.execute("PRAGMA page_size") as cur:
                    row = await cur.fetchone()
            except (sqlite3.Error, ValueError) as exc:
                raise self._storage_error(handle, topic, exc) from exc
            return free_pages * (int(row[0]) if row else 4096)

    # --- consumer group offsets ---------------------------------------------------------------
    def committed_offsets(self, group: str | None = None) -> list[CommittedOffset]:
        return [c for c in self._committed.values() if group is None or c.group == group]

    async def commit_offsets(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        now = int(time.time() * 1000)
        rows = [(group, topic, p, o, now) for p, o in offsets.items()]
        for row in rows:
            self._committed[(group, topic, row[2])] = CommittedOffset(*row)
        conn = self._groups()
        async with self._transaction(
            conn, lambda exc: Unavailable(f"cannot commit offsets of group '{group}': {exc}")
        ):
            await conn.executemany(
                "INSERT INTO group_offsets VALUES (?, ?, ?, ?, ?) ON CONFLICT "
                "(group_name, topic, partition) DO UPDATE SET next_offset = excluded.next_offset, "
                "committed_at = excluded.committed_at",
                rows,
            )

    async def delete_committed_offsets(self, group: str, topic: str | None = None) -> None:
        for key in [k for k in self._committed if k[0] == group and topic in (None, k[1])]:
            del self._committed[key]
        conn = self._groups()
        try:
            if topic is None:
                await conn.execute("DELETE FROM group_offsets WHERE group_name = ?", (group,))
            else:
                await conn.execute(
                    "DELETE FROM group_offsets WHERE group_name = ? AND topic = ?", (group, topic)
                )
        except (sqlite3.Error, ValueError) as exc:
            raise Unavailable(f"cannot delete offsets of group '{group}': {exc}") from exc

    def _groups(self) -> aiosqlite.Connection:
        if self._groups_db is None:
            raise Unavailable("storage is not open")
        return self._groups_db

    @contextlib.asynccontextmanager
    async def _transaction(
        self, conn: aiosqlite.Connection, error: Callable[[Exception], Exception]
    ) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on failure roll back and raise `error(exc)`."""
        try:
            await conn.execute("BEGIN IMMEDIATE")
            yield
            await conn.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:  # ValueError: the connection was closed
            await self._rollback(conn)
            raise error(exc) from exc

    @staticmethod
    def _storage_error(handle: _Topic, topic: str, exc: Exception) -> Exception:
        """A failed statement: the topic was deleted meanwhile, or storage is unavailable."""
        if handle.closed:
            return TopicNotFound(topic)
        return Unavailable(f"storage error on topic '{topic}': {exc}")

    @staticmethod
    async def _rollback(conn: aiosqlite.Connection) -> None:
        with contextlib.suppress(Exception):
            await conn.execute("ROLLBACK")

    async def read(
        self, topic: str, partition: int, offset: int, limit: int, max_bytes: int
    ) -> list[StoredRecord]:
        handle = self._topic(topic)
        self.partition_state(topic, partition)  # validates the partition number
        try:
            async with handle.reader.execute(
                f'SELECT "offset", timestamp, key, value, value_format, headers, size '
                f'FROM {partition_table(partition)} WHERE "offset" >= ? ORDER BY "offset" LIMIT ?',
                (offset, limit),
            ) as cur:
                rows = await cur.fetchall()
        except (sqlite3.Error, ValueError) as exc:
            raise self._storage_error(handle, topic, exc) from exc
        records: list[StoredRecord] = []
        total = 0
        for off, ts, key, value, fmt, headers, size in rows:
            total += size
            if records and total > max_bytes:
                break
            records.append(
                StoredRecord(
                    partition,
                    off,
                    ts,
                    key,
                    value,
                    ValueFormat(fmt),
                    orjson.loads(headers) if headers else {},
                )
            )
        return records

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp: int) -> int | None:
        handle = self._topic(topic)
        self.partition_state(topic, partition)
        try:
            async with handle.reader.execute(
                f'SELECT "offset" FROM {partition_table(partition)} WHERE timestamp >= ? '
                f'ORDER BY "offset" LIMIT 1',
                (timestamp,),
            ) as cur:
                row = await cur.fetchone()
        except (sqlite3.Error, ValueError) as exc:
            raise self._storage_error(handle, topic, exc) from exc
        return None if row is None else int(row[0])

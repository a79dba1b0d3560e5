"""The embedded engine: one SQLite database file per topic, one table per partition.

Files and their layout: `datadir.py`, `schema.py`. Every database file has exactly one writer
(`writer.py`): a small, fixed pool of writer threads where each file belongs to one thread,
which runs whole transactions handed to it and does the group commit. Reads run on a small
reader pool (`readers.py`). The topic log, cleaning and group offsets are `topic_log.py`,
`cleaning.py` and `group_offsets.py`; this module ties them together. However many topics are
open, the engine holds a bounded number of threads and, since idle files' connections are
closed (least recently used first), of descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from eddy.models.errors import TopicExists, TopicNotFound, Unavailable
from eddy.models.log import AppendedRecord, CommittedOffset, PartitionState, StoredRecord, TopicMeta
from eddy.storage import cleaning
from eddy.storage.datadir import DataDir, DataDirLocked, disk_usage
from eddy.storage.engine import AppendBatch, DiskUsage, Engine, ProducerWindow
from eddy.storage.group_offsets import GroupOffsets
from eddy.storage.readers import ReaderPool
from eddy.storage.schema import (
    Connector,
    LoadedTopic,
    SyncPolicy,
    initialise_topic_db,
    load_group_offsets,
    load_topic,
)
from eddy.storage.topic_jobs import AlterJob
from eddy.storage.topic_log import Announcer, QueueLimits, TopicLog
from eddy.storage.writer import WriterPool

log = logging.getLogger("eddy.storage")

__all__ = ["DataDirLocked", "SQLiteEngine"]


class SQLiteEngine(Engine):
    def __init__(
        self,
        data_dir: Path,
        sync: SyncPolicy = "full",
        *,
        writer_threads: int = 4,
        reader_threads: int = 4,
        max_open_files: int = 256,
        queue_limits: QueueLimits | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.sync = sync
        self._dir = DataDir(self.data_dir)
        self._writer_threads = writer_threads
        self._reader_threads = reader_threads
        # Connections (each holds up to three descriptors: the file, -wal and -shm), split
        # between the writers' and the readers' caches.
        self._max_open_files = max_open_files
        self._queue_limits = queue_limits or QueueLimits()
        self._topics: dict[str, TopicLog] = {}
        # topics whose database could not be opened -> why; they answer 503, others keep working
        self._broken: dict[str, str] = {}
        # per topic name being created, altered or deleted: its lock and how many use it
        self._name_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._writers: WriterPool | None = None
        self._readers: ReaderPool | None = None
        self._groups: GroupOffsets | None = None
        self._announcer = Announcer(self._announce_commit, self._announce_partitions_added)
        self._observe_commit: Callable[[float], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        self._dir.acquire()
        connect = Connector(self.sync)
        per_writer = max(2, self._max_open_files // 2 // self._writer_threads)
        self._writers = writers = WriterPool(
            self._writer_threads, connect, per_writer, self._observe_commit
        )
        self._readers = readers = ReaderPool(
            self._reader_threads, connect, max(2, self._max_open_files // 2)
        )
        loop = asyncio.get_running_loop()
        try:
            groups = GroupOffsets(self._dir.groups_db, writers, loop)
            groups.load(await groups.db.thread.run_in(loop, lambda: self._load_groups(connect)))
            self._groups = groups
            paths = await readers.run(self._dir.topic_dbs)
            loaded = await asyncio.gather(
                *(self._load_topic(path) for path in paths), return_exceptions=True
            )
        except BaseException:
            await self.close()
            raise
        for path, topic in zip(paths, loaded, strict=True):
            if isinstance(topic, BaseException):  # one bad file must not keep the others down
                log.error(
                    "topic %s is unavailable: cannot open %s: %s", path.parent.name, path, topic
                )
                self._broken[path.parent.name] = str(topic)
            else:
                self._topics[topic.name] = topic

    def observe_commits(self, observe: Callable[[float], None]) -> None:
        self._observe_commit = observe

    async def disk_usage(self) -> DiskUsage:
        return await asyncio.to_thread(disk_usage, self.data_dir)

    def _load_groups(self, connect: Connector) -> list[CommittedOffset]:
        conn = connect(self._dir.groups_db)
        try:
            return load_group_offsets(conn)
        finally:
            conn.close()

    async def _load_topic(self, path: Path) -> TopicLog:
        """Read a topic's state in its writer thread (which also migrates the file)."""
        writers = self._live_writers()
        connect = Connector(self.sync)

        def load() -> LoadedTopic:
            conn = connect(path)
            try:
                return load_topic(conn)
            finally:
                conn.close()

        loaded = await writers.thread_for(path).run_in(asyncio.get_running_loop(), load)
        return self._topic_log(loaded, path)

    def _topic_log(self, loaded: LoadedTopic, path: Path) -> TopicLog:
        assert self._writers is not None and self._readers is not None
        return TopicLog(
            loaded.meta,
            loaded.partitions,
            loaded.producers,
            path,
            self._writers,
            self._readers,
            self._announcer,
            self._queue_limits,
        )

    @staticmethod
    def ensure_data_dir_free(data_dir: Path) -> None:
        """Raise `DataDirLocked` if another server owns `data_dir` (a check before start-up)."""
        DataDir.ensure_free(data_dir)

    async def close(self) -> None:
        """Let queued writes commit, then close every file and end the threads."""
        topics, self._topics = list(self._topics.values()), {}
        closing = [topic.close() for topic in topics]
        if self._groups is not None:
            closing.append(self._groups.close())
            self._groups = None
        await asyncio.gather(*closing, return_exceptions=True)
        if self._writers is not None:
            await self._writers.stop()
            self._writers = None
        if self._readers is not None:
            await self._readers.close()
            self._readers = None
        self._dir.release()

    async def check_writable(self) -> None:
        if not self._dir.owned or self._readers is None:
            raise Unavailable("storage is not open")
        try:
            await self._readers.run(self._dir.probe)
        except OSError as exc:
            raise Unavailable(f"data dir is not writable: {exc.strerror}") from exc

    def _live_writers(self) -> WriterPool:
        if self._writers is None:
            raise Unavailable("storage is not open")
        return self._writers

    def _live_readers(self) -> ReaderPool:
        if self._readers is None:
            raise Unavailable("storage is not open")
        return self._readers

    # --- topics -------------------------------------------------------------------------------
    def _topic(self, name: str) -> TopicLog:
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

    @contextlib.asynccontextmanager
    async def _exclusive(self, name: str) -> AsyncIterator[None]:
        """Serialise create/alter/delete of one topic name (other names proceed in parallel)."""
        entry = self._name_locks.get(name)
        if entry is None:
            entry = self._name_locks[name] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._name_locks[name]

    def list_topics(self) -> list[TopicMeta]:
        return [self._topics[name].meta for name in sorted(self._topics)]

    def get_topic(self, name: str) -> TopicMeta:
        return self._topic(name).meta

    async def create_topic(self, name: str, partitions: int, config: dict[str, Any]) -> TopicMeta:
        # Shielded: a creation that has started finishes, registering the topic, even when its
        # caller is cancelled (a Kafka client that disconnects while its Metadata request
        # auto-creates a topic). Cancelled half-way, the file would be in place with no topic
        # for it, and every later creation of that name would fail.
        return await asyncio.shield(self._create_topic(name, partitions, config))

    async def _create_topic(self, name: str, partitions: int, config: dict[str, Any]) -> TopicMeta:
        async with self._exclusive(name):
            self._raise_if_broken(name)
            if name in self._topics:
                raise TopicExists(name)
            writers = self._live_writers()
            meta = TopicMeta(name, partitions, dict(config), int(time.time() * 1000))
            path = self._dir.topic_db(name)

            def create() -> None:
                # Built in tmp/ and renamed into place: a crash or a failure mid-way never
                # leaves a half-made topic behind (nor the staging dir).
                with self._dir.staging() as staging:
                    durable = self.sync == "full"
                    initialise_topic_db(staging / "log.db", meta, durable)
                    self._dir.publish(staging, name, durable)

            try:
                await writers.thread_for(path).run_in(asyncio.get_running_loop(), create)
            except (sqlite3.Error, OSError) as exc:
                raise Unavailable(f"cannot create topic '{name}': {exc}", {"topic": name}) from exc
            states = [PartitionState(p, 0, 0, 0) for p in range(partitions)]
            self._topics[name] = self._topic_log(LoadedTopic(meta, states, {}), path)
            return meta

    async def update_topic(
        self, name: str, partitions: int | None, config: dict[str, Any] | None
    ) -> TopicMeta:
        async with self._exclusive(name):
            topic = self._topic(name)
            meta = topic.meta
            new = replace(
                meta,
                partitions=max(partitions or meta.partitions, meta.partitions),
                config=meta.config if config is None else dict(config),
            )
            job = AlterJob(asyncio.get_running_loop().create_future(), new, meta.partitions)
            result: TopicMeta = await cleaning.run_job(topic, job)
            return result

    async def delete_topic(self, name: str) -> None:
        async with self._exclusive(name):
            readers = self._live_readers()
            if name not in self._broken:
                topic = self._topic(name)
                del self._topics[name]
                await topic.close()  # commits already queued finish first
                for group in self._live_groups().groups_on(name):
                    await self.delete_committed_offsets(group, name)
            # (deleting is also how an operator gives up on a file that cannot be opened)
            try:
                await readers.run(lambda: self._dir.remove(self._dir.topics / name))
            except OSError as exc:  # still on disk: say so until a delete succeeds
                self._broken[name] = f"deleting it failed: {exc}"
                raise Unavailable(f"cannot delete topic '{name}': {exc}", {"topic": name}) from exc
            self._broken.pop(name, None)
            self._announce_topic_deleted(name)

    # --- partitions ---------------------------------------------------------------------------
    def partition_state(self, topic: str, partition: int) -> PartitionState:
        return self._topic(topic).check_partition(partition)

    def append(
        self, topic: str, batch: AppendBatch, wait: float = 5.0
    ) -> asyncio.Future[list[AppendedRecord]]:
        return self._topic(topic).append(batch, wait)

    def producer_history(self, topic: str, producer_id: str) -> ProducerWindow:
        return self._topic(topic).producers.get(producer_id) or ProducerWindow()

    async def read(
        self, topic: str, partition: int, offset: int, limit: int, max_bytes: int
    ) -> list[StoredRecord]:
        return await self._topic(topic).read(partition, offset, limit, max_bytes)

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp: int) -> int | None:
        return await self._topic(topic).offset_for_timestamp(partition, timestamp)

    # --- retention and compaction -------------------------------------------------------------
    async def retention_point(
        self, topic: str, partition: int, before_timestamp: int | None, max_bytes: int | None
    ) -> int:
        return await cleaning.retention_point(
            self._topic(topic), partition, before_timestamp, max_bytes
        )

    async def delete_before(self, topic: str, partition: int, offset: int, limit: int) -> int:
        log_ = self._topic(topic)
        log_.check_partition(partition)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        count: int = await cleaning.run_job(
            log_, cleaning.DeleteBeforeJob(future, partition, offset, limit)
        )
        return count

    async def compact(
        self,
        topic: str,
        partition: int,
        from_offset: int,
        to_offset: int,
        tombstones_before: int,
    ) -> int:
        log_ = self._topic(topic)
        log_.check_partition(partition)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        job = cleaning.CompactJob(future, partition, from_offset, to_offset, tombstones_before)
        count: int = await cleaning.run_job(log_, job)
        return count

    async def reclaim_space(self, topic: str) -> int:
        log_ = self._topic(topic)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        remaining: int = await cleaning.run_job(log_, cleaning.ReclaimJob(future))
        return remaining

    # --- consumer group offsets ---------------------------------------------------------------
    def _live_groups(self) -> GroupOffsets:
        if self._groups is None:
            raise Unavailable("storage is not open")
        return self._groups

    def committed_offsets(self, group: str | None = None) -> list[CommittedOffset]:
        if self._groups is None:
            return []
        return self._groups.committed_offsets(group)

    async def commit_offsets(
        self,
        group: str,
        topic: str,
        offsets: Mapping[int, int],
        metadata: Mapping[int, str] | None = None,
    ) -> None:
        await self._live_groups().commit(group, topic, offsets, metadata)

    async def delete_committed_offsets(self, group: str, topic: str | None = None) -> None:
        await self._live_groups().delete(group, topic)

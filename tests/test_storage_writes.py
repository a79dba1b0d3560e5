"""The one-writer-per-file engine under concurrency and real faults: concurrent group commits,
a full write queue, a full or read-only disk, a topic deleted while it is being written."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import sqlite3
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from eddy.broker.events import Acked, Event
from eddy.broker.metrics import Metrics
from eddy.broker.producer import Producer
from eddy.broker.publisher import PublishSession, submitter
from eddy.models.errors import TopicNotFound, Unavailable
from eddy.models.log import AppendedRecord, StoredRecord, ValueFormat
from eddy.storage import PRODUCER_WINDOW, AppendBatch, NewRecord, SQLiteEngine
from eddy.storage.topic_log import QueueLimits
from tests.conftest import fill_disk, tmpfs


def rec(partition: int, value: bytes = b'"v"', key: str | None = "k") -> NewRecord:
    return NewRecord(partition, 1000, key, value, ValueFormat.JSON, {})


async def open_engine(path: Path, **options: object) -> SQLiteEngine:
    engine = SQLiteEngine(path, **options)  # type: ignore[arg-type]
    await engine.open()
    return engine


def disk_offsets(data: Path) -> dict[tuple[str, str, int], int]:
    with sqlite3.connect(data / "groups.db") as conn:
        return {
            (g, t, p): o
            for g, t, p, o in conn.execute(
                "SELECT group_name, topic, partition, next_offset FROM group_offsets"
            )
        }


def remount(mount_point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A disk that really fills up."""
    with tmpfs(tmp_path / "fs", "4m") as mount_point:
        yield mount_point


async def test_concurrent_commits_are_all_durable_in_call_order(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 4, {})
    rng = random.Random(7)
    calls = [
        (f"g{rng.randrange(10)}", {p: rng.randrange(1000) for p in rng.sample(range(4), 2)})
        for _ in range(600)
    ]
    await asyncio.gather(*(engine.commit_offsets(g, "t", offsets) for g, offsets in calls))
    expected: dict[tuple[str, str, int], int] = {}
    for group, offsets in calls:  # commits apply in call order: the last call wins
        for p, o in offsets.items():
            expected[(group, "t", p)] = o
    in_memory = {(c.group, c.topic, c.partition): c.offset for c in engine.committed_offsets()}
    assert in_memory == expected
    await engine.close()
    assert disk_offsets(tmp_path) == expected
    engine = await open_engine(tmp_path)
    reopened = {(c.group, c.topic, c.partition): c.offset for c in engine.committed_offsets()}
    assert reopened == expected
    await engine.delete_committed_offsets("g1", "t")
    assert not engine.committed_offsets("g1")
    await engine.close()
    assert not [k for k in disk_offsets(tmp_path) if k[0] == "g1"]


async def test_a_failed_commit_changes_nothing_and_the_next_one_works(small_fs: Path) -> None:
    data = small_fs / "data"
    engine = await open_engine(data)
    await engine.create_topic("t", 1, {})
    await engine.commit_offsets("g", "t", {0: 1})
    filler = fill_disk(small_fs)
    rows = {p: p for p in range(1)}
    failures = 0
    for i in range(200):  # a commit needs WAL space: sooner or later one fails
        try:
            await engine.commit_offsets(f"group-{i}-{'x' * 2000}", "t", rows)
        except Unavailable:
            failures += 1
            break
    assert failures == 1
    committed = {(c.group, c.partition): c.offset for c in engine.committed_offsets()}
    filler.unlink()
    await engine.commit_offsets("g", "t", {0: 2})
    assert [c.offset for c in engine.committed_offsets("g")] == [2]
    await engine.close()
    on_disk = {(g, p): o for (g, _, p), o in disk_offsets(data).items()}
    assert on_disk == {**committed, ("g", 0): 2}  # memory claimed nothing the disk lacks


class Recorder:
    """A LogListener that checks the engine's state when it is told of a commit."""

    def __init__(self, engine: SQLiteEngine) -> None:
        self.engine = engine
        self.commits: list[list[tuple[int, int]]] = []

    def on_commit(self, topic: str, records: Sequence[StoredRecord]) -> None:
        for r in records:  # already visible when announced
            assert self.engine.high_watermark(topic, r.partition) > r.offset
        self.commits.append([(r.partition, r.offset) for r in records])

    def on_partitions_added(self, topic: str, partitions: int) -> None:
        assert self.engine.get_topic(topic).partitions == partitions

    def on_topic_deleted(self, topic: str) -> None:
        pass


async def test_concurrent_appends_share_commits_and_stay_dense(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    recorder = Recorder(engine)
    engine.add_listener(recorder)
    await engine.create_topic("t", 3, {})
    futures = [engine.append("t", AppendBatch([rec(i % 3), rec((i + 1) % 3)])) for i in range(300)]
    results = await asyncio.gather(*futures)
    offsets: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for appended in results:
        for a in appended:
            offsets[a.partition].append(a.offset)
    assert all(v == list(range(200)) for v in offsets.values())  # dense, in call order
    assert len(recorder.commits) < 300  # group commit: many requests per transaction
    assert sum(len(c) for c in recorder.commits) == 600
    await engine.update_topic("t", 4, None)
    assert (await engine.append("t", AppendBatch([rec(3)])))[0].offset == 0
    await engine.close()


async def test_a_full_write_queue_refuses_after_the_wait_with_a_retry_hint(
    tmp_path: Path,
) -> None:
    engine = await open_engine(tmp_path, queue_limits=QueueLimits(records=10, bytes=1 << 20))
    await engine.create_topic("t", 1, {})
    # Another process holds the database's write lock: the writer cannot commit meanwhile.
    blocker = sqlite3.connect(tmp_path / "topics" / "t" / "log.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    first = engine.append("t", AppendBatch([rec(0)] * 6))
    second = engine.append("t", AppendBatch([rec(0)] * 4))  # 10 pending: the queue is full
    refused = engine.append("t", AppendBatch([rec(0)]), wait=0.05)
    with pytest.raises(Unavailable) as excinfo:
        await refused
    assert excinfo.value.retry_after is not None and excinfo.value.retry_after > 0
    blocker.execute("ROLLBACK")
    blocker.close()
    assert [a.offset for a in await first] == list(range(6))
    assert [a.offset for a in await second] == list(range(6, 10))
    assert (await engine.append("t", AppendBatch([rec(0)])))[0].offset == 10  # room again
    await engine.close()


async def test_a_waiting_batch_goes_in_when_room_frees_up_in_order(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path, queue_limits=QueueLimits(records=4, bytes=1 << 20))
    await engine.create_topic("t", 1, {})
    blocker = sqlite3.connect(tmp_path / "topics" / "t" / "log.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    futures = [engine.append("t", AppendBatch([rec(0)] * 2), wait=30) for _ in range(6)]
    await asyncio.sleep(0.05)
    blocker.execute("ROLLBACK")
    blocker.close()
    results = await asyncio.gather(*futures)
    assert [a.offset for appended in results for a in appended] == list(range(12))
    await engine.close()


async def test_a_failed_alter_rolls_back_and_the_next_append_works(small_fs: Path) -> None:
    data = small_fs / "data"
    engine = await open_engine(data)
    await engine.create_topic("t", 1, {})
    filler = fill_disk(small_fs)
    with pytest.raises(Unavailable):
        await engine.update_topic("t", 1000, {"retention.ms": 5})  # 999 tables do not fit
    meta = engine.get_topic("t")
    assert meta.partitions == 1 and meta.config == {}
    filler.unlink()
    assert (await engine.append("t", AppendBatch([rec(0)])))[0].offset == 0
    assert (await engine.update_topic("t", 2, None)).partitions == 2
    await engine.close()
    engine = await open_engine(data)
    assert engine.get_topic("t").partitions == 2 and engine.high_watermark("t", 0) == 1
    await engine.close()


async def test_a_failed_create_leaves_nothing_behind(small_fs: Path) -> None:
    data = small_fs / "data"
    engine = await open_engine(data)
    filler = fill_disk(small_fs)
    with pytest.raises(Unavailable):
        await engine.create_topic("t", 500, {})
    assert list((data / "tmp").iterdir()) == []
    assert not (data / "topics" / "t").exists()
    with pytest.raises(TopicNotFound):
        engine.get_topic("t")
    filler.unlink()
    await engine.create_topic("t", 2, {})
    assert (await engine.append("t", AppendBatch([rec(1)])))[0].offset == 0
    await engine.close()


async def test_a_read_only_data_dir_is_refused_at_open_and_leaves_no_thread(
    small_fs: Path,
) -> None:
    data = small_fs / "data"
    engine = await open_engine(data)
    await engine.create_topic("t", 1, {})
    await engine.close()
    remount(small_fs, "ro")
    try:
        with pytest.raises(OSError):
            await open_engine(data)
        assert not [t for t in threading.enumerate() if t.name.startswith("eddy-")]
    finally:
        remount(small_fs, "rw")
    engine = await open_engine(data)
    assert engine.get_topic("t").partitions == 1
    await engine.close()


async def test_a_topic_deleted_while_it_is_written(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 2, {})
    futures: list[asyncio.Future[list[AppendedRecord]]] = []
    for i in range(200):
        futures.append(engine.append("t", AppendBatch([rec(i % 2)] * 5)))
    deletion = asyncio.ensure_future(engine.delete_topic("t"))
    await asyncio.sleep(0)
    with pytest.raises(TopicNotFound):
        engine.append("t", AppendBatch([rec(0)]))
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    await deletion
    # each batch was either committed before the deletion or refused as not found, whole
    assert all(isinstance(o, list | TopicNotFound) for o in outcomes), outcomes
    assert not (tmp_path / "topics" / "t").exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    await engine.create_topic("t", 1, {})  # the name is free again, the new topic is empty
    assert (await engine.append("t", AppendBatch([rec(0)])))[0].offset == 0
    assert [r.offset for r in await engine.read("t", 0, 0, 10, 1 << 20)] == [0]
    await engine.close()


async def test_a_file_corrupted_while_open_gives_unavailable_for_that_topic_only(
    tmp_path: Path,
) -> None:
    engine = await open_engine(tmp_path, max_open_files=4)  # idle files are closed quickly
    await engine.create_topic("bad", 1, {})
    await engine.create_topic("good", 1, {})
    await engine.append("bad", AppendBatch([rec(0)]))
    for i in range(8):  # touch other files so that bad's connections are closed
        await engine.create_topic(f"other{i}", 1, {})
        await engine.append(f"other{i}", AppendBatch([rec(0)]))
        await engine.read(f"other{i}", 0, 0, 1, 1 << 20)
    for name in ("log.db-wal", "log.db-shm"):
        (tmp_path / "topics" / "bad" / name).unlink(missing_ok=True)
    (tmp_path / "topics" / "bad" / "log.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(Unavailable):
        await engine.append("bad", AppendBatch([rec(0)]))
    with pytest.raises(Unavailable):
        await engine.read("bad", 0, 0, 1, 1 << 20)
    assert (await engine.append("good", AppendBatch([rec(0)])))[0].offset == 0
    await engine.delete_topic("bad")
    await engine.close()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_ten_thousand_topics_use_bounded_threads_and_descriptors(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "1g") as fs:  # file creation speed is the disk's, not ours
        await ten_thousand_topics(fs / "data")


async def ten_thousand_topics(data: Path) -> None:
    # Earlier tests in this process may leave descriptors in garbage cycles (a socket, a
    # connection); the 10,000 creations below allocate enough to trigger a full collection,
    # which closes them mid-test and makes the count end below where it began (seen once in CI:
    # 39 after, 43 before; this is the likely cause, not a proven one). Collected first, the
    # count is this engine's alone. Not at the end:
    # a descriptor the engine leaves to the collector is a leak the last assertion must see.
    gc.collect()
    threads_before, fds_before = threading.active_count(), open_descriptors()
    engine = await open_engine(data, sync="normal")
    names = [f"topic-{i:05d}" for i in range(10_000)]
    for start in range(0, len(names), 500):  # in batches: creations run in parallel
        await asyncio.gather(*(engine.create_topic(n, 1, {}) for n in names[start : start + 500]))
        assert threading.active_count() - threads_before <= 8  # 4 writers, 4 readers
        assert open_descriptors() - fds_before <= 3 * 256 + 16  # the connection cache bound
    sample = names[::10]  # a thousand of them are written and read
    await asyncio.gather(*(engine.append(n, AppendBatch([rec(0)])) for n in sample))
    await asyncio.gather(*(engine.read(n, 0, 0, 1, 1 << 20) for n in sample))
    assert threading.active_count() - threads_before <= 8
    assert open_descriptors() - fds_before <= 3 * 256 + 16
    await engine.close()
    assert threading.active_count() == threads_before
    engine = await open_engine(data, sync="normal")  # and they all open again
    assert len(engine.list_topics()) == 10_000
    assert threading.active_count() - threads_before <= 8
    assert open_descriptors() - fds_before <= 3 * 256 + 16
    assert engine.high_watermark(names[1230], 0) == 1
    await engine.close()
    assert threading.active_count() == threads_before
    assert open_descriptors() == fds_before


class Collect:
    """An AnswerSink keeping the offsets of the acks the session sends."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.others: list[Event] = []

    async def answer(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, Acked):
                self.offsets.append(event.appended.offset)
            else:
                self.others.append(event)


class Frames:
    """A FrameSource handing out the client's frames as fast as the session takes them."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames
        self.pulled = 0

    async def receive(self, limit: int) -> list[str | bytes]:
        taken: list[str | bytes] = [*self.frames[self.pulled : self.pulled + limit]]
        self.pulled += len(taken)
        return taken


async def test_a_full_write_queue_stops_reading_a_publishing_socket(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path, queue_limits=QueueLimits(records=2, bytes=1 << 20))
    meta = await engine.create_topic("t", 1, {})
    producer = Producer(engine, Metrics(), queue_timeout=30)
    config = {"max.message.bytes": 1_000_000, "cleanup.policy": "delete"}
    blocker = sqlite3.connect(tmp_path / "topics" / "t" / "log.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer cannot commit: the queue fills up
    incoming = Frames([json.dumps({"id": i, "value": i}) for i in range(20)])
    sink = Collect()
    submit = submitter(producer, lambda: (meta, config), lambda: None, PRODUCER_WINDOW)
    session = PublishSession("t", submit, sink, 3, None)
    running = asyncio.ensure_future(session.run(incoming))
    await asyncio.sleep(0.2)  # give the session every chance to read on
    # nothing committed, so the session stopped reading at its cap of 3 records in flight; not
    # the 20 the client sent
    assert incoming.pulled <= 3 and sink.offsets == []
    blocker.execute("ROLLBACK")
    blocker.close()
    assert await asyncio.wait_for(running, 30) is None  # the client's frames ran out
    assert sink.offsets == list(range(20)) and sink.others == []  # all acked, in order
    await engine.close()

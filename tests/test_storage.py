"""The SQLite engine on a real database file in a temp dir."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from eddy.models.errors import PartitionNotFound, TopicExists, TopicNotFound, Unavailable
from eddy.models.log import AppendedRecord, ProducerSequence, ValueFormat
from eddy.storage import AppendBatch, DataDirLocked, NewRecord, SQLiteEngine
from eddy.storage.schema import SCHEMA_VERSION


def rec(partition: int, value: bytes | None, key: str | None = "k", ts: int = 1000) -> NewRecord:
    return NewRecord(partition, ts, key, value, ValueFormat.JSON, {"h": "v"} if value else {})


async def append(
    engine: SQLiteEngine, topic: str, records: list[NewRecord]
) -> list[AppendedRecord]:
    """One request's records, appended as one batch."""
    return await engine.append(topic, AppendBatch(records))


def storage_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("eddy-"))


async def open_engine(path: Path) -> SQLiteEngine:
    engine = SQLiteEngine(path)
    await engine.open()
    return engine


async def test_append_assigns_dense_offsets_per_partition(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 2, {})
    appended = await append(engine, "t", [rec(0, b"1"), rec(1, b"2"), rec(0, b"3")])
    assert [(a.partition, a.offset) for a in appended] == [(0, 0), (1, 0), (0, 1)]
    state = engine.partition_state("t", 0)
    assert (state.log_start_offset, state.high_watermark) == (0, 2)
    assert state.size_bytes == 2 * (len("k") + 1 + len("h") + len("v"))
    records = await engine.read("t", 0, 0, 10, 1 << 20)
    assert [(r.offset, r.value, r.headers) for r in records] == [
        (0, b"1", {"h": "v"}),
        (1, b"3", {"h": "v"}),
    ]
    await engine.close()
    await engine.close()  # closing twice is harmless


async def test_one_file_per_topic_one_table_per_partition(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("prices.v1", 3, {"retention.ms": 1000})
    await engine.close()
    db = tmp_path / "topics" / "prices.v1" / "log.db"
    with sqlite3.connect(db) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert {"p0", "p1", "p2", "topic", "partitions"} <= tables
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        pk = [r for r in conn.execute('PRAGMA table_info("p0")') if r[5] == 1]
        assert pk[0][1] == "offset" and pk[0][2] == "INTEGER"


async def test_state_survives_reopen(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 1, {"cleanup.policy": "compact"})
    await append(engine, "t", [rec(0, b"1"), rec(0, b"2")])
    await engine.close()
    engine = await open_engine(tmp_path)
    assert engine.get_topic("t").config == {"cleanup.policy": "compact"}
    assert engine.high_watermark("t", 0) == 2
    assert (await append(engine, "t", [rec(0, b"3")]))[0].offset == 2
    await engine.close()


async def test_offsets_are_never_reused_after_all_records_are_deleted(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 1, {})
    await append(engine, "t", [rec(0, b"1"), rec(0, b"2")])
    await engine.close()
    # Remove every record behind the engine's back (as retention will).
    with sqlite3.connect(tmp_path / "topics" / "t" / "log.db") as conn:
        conn.execute('DELETE FROM "p0"')
    engine = await open_engine(tmp_path)
    assert (await append(engine, "t", [rec(0, b"3")]))[0].offset == 2
    await engine.close()


async def test_topic_errors(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 1, {})
    with pytest.raises(TopicExists):
        await engine.create_topic("t", 1, {})
    with pytest.raises(TopicNotFound):
        await append(engine, "nope", [rec(0, b"1")])
    with pytest.raises(PartitionNotFound):
        await append(engine, "t", [rec(0, b"1"), rec(5, b"1")])
    assert engine.high_watermark("t", 0) == 0  # the failed batch left nothing behind
    await engine.delete_topic("t")
    assert not (tmp_path / "topics" / "t").exists()
    with pytest.raises(TopicNotFound):
        engine.get_topic("t")
    await engine.close()


async def test_partition_increase_and_config_update(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 1, {})
    meta = await engine.update_topic("t", 3, {"retention.ms": 5})
    assert meta.partitions == 3 and meta.config == {"retention.ms": 5}
    assert (await append(engine, "t", [rec(2, b"1")]))[0].offset == 0
    await engine.close()
    engine = await open_engine(tmp_path)
    assert engine.get_topic("t").partitions == 3
    await engine.close()


async def test_read_limits_and_max_bytes(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 1, {})
    await append(engine, "t", [rec(0, b"x" * 100, ts=i) for i in range(10)])
    assert len(await engine.read("t", 0, 0, 3, 1 << 20)) == 3
    assert [r.offset for r in await engine.read("t", 0, 7, 100, 1 << 20)] == [7, 8, 9]
    # max_bytes smaller than one record still returns that one record
    assert len(await engine.read("t", 0, 0, 100, 1)) == 1
    assert len(await engine.read("t", 0, 0, 100, 250)) == 2
    assert await engine.offset_for_timestamp("t", 0, 4) == 4
    assert await engine.offset_for_timestamp("t", 0, 99) is None
    await engine.close()


async def test_second_engine_on_same_dir_is_refused(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    with pytest.raises(DataDirLocked, match="in use by another Eddy server"):
        await open_engine(tmp_path)
    await engine.close()
    other = await open_engine(tmp_path)  # free again once the first one closed
    await other.close()


async def test_group_commit_batches_and_producer_history_survive_reopen(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("t", 2, {})
    results = await asyncio.gather(
        engine.append("t", AppendBatch([rec(0, b"1"), rec(1, b"2")], ProducerSequence("p1", 7))),
        engine.append("t", AppendBatch([rec(0, b"3")])),
        engine.append("t", AppendBatch([rec(1, b"4")], ProducerSequence("p2", 0))),
    )
    assert [[(a.partition, a.offset) for a in r] for r in results] == [
        [(0, 0), (1, 0)],
        [(0, 1)],
        [(1, 1)],
    ]
    for sequence in range(8, 20):
        await engine.append("t", AppendBatch([rec(0, b"x")], ProducerSequence("p1", sequence)))
    await engine.close()
    engine = await open_engine(tmp_path)
    history = engine.producer_history("t", "p1")
    assert [e.sequence for e in history] == list(range(7, 20))  # within the window: all
    last = history.get(19)
    assert last is not None and [(a.partition, a.offset) for a in last.appended] == [(0, 13)]
    assert [e.sequence for e in engine.producer_history("t", "p2")] == [0]
    assert len(engine.producer_history("t", "nobody")) == 0
    await engine.close()


async def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("old", 1, {})
    await append(engine, "old", [rec(0, b"1")])
    await engine.close()
    with sqlite3.connect(tmp_path / "topics" / "old" / "log.db") as conn:  # as Eddy 0.1 left it
        conn.execute("DROP TABLE producers")
        conn.execute("PRAGMA user_version=1")
    engine = await open_engine(tmp_path)
    assert engine.high_watermark("old", 0) == 1
    await engine.append("old", AppendBatch([rec(0, b"2")], ProducerSequence("p", 0)))
    assert [e.sequence for e in engine.producer_history("old", "p")] == [0]
    await engine.close()
    with sqlite3.connect(tmp_path / "topics" / "old" / "log.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# A topic file as Eddy with schema version 2 wrote it (its SQL, verbatim): headers are always
# a JSON object there.
VERSION_2_TOPIC = """
PRAGMA auto_vacuum=INCREMENTAL;
PRAGMA journal_mode=WAL;
CREATE TABLE topic (name TEXT NOT NULL, partitions INTEGER NOT NULL,
    config TEXT NOT NULL, created_at INTEGER NOT NULL);
INSERT INTO topic VALUES ('v2', 2, '{}', 1764000000000);
CREATE TABLE partitions (partition INTEGER PRIMARY KEY,
    log_start_offset INTEGER NOT NULL, high_watermark INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL);
CREATE TABLE "p0" ("offset" INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL, key TEXT,
    value BLOB, value_format INTEGER NOT NULL, headers BLOB, size INTEGER NOT NULL);
CREATE TABLE "p1" ("offset" INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL, key TEXT,
    value BLOB, value_format INTEGER NOT NULL, headers BLOB, size INTEGER NOT NULL);
INSERT INTO partitions VALUES (0, 0, 2, 24), (1, 0, 0, 0);
INSERT INTO "p0" VALUES (0, 1000, 'k', CAST('1' AS BLOB), 0, CAST('{"a":"1","b":"2"}' AS BLOB), 6);
INSERT INTO "p0" VALUES (1, 1001, NULL, CAST('"x"' AS BLOB), 0, NULL, 3);
CREATE TABLE IF NOT EXISTS producers (producer_id TEXT NOT NULL, sequence INTEGER NOT NULL,
    appended BLOB NOT NULL, committed_at INTEGER NOT NULL, PRIMARY KEY (producer_id, sequence));
PRAGMA user_version=2;
"""


async def test_a_version_2_data_dir_opens_and_reads_back_the_same(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)  # lays out the data dir as it always has
    await engine.close()
    (tmp_path / "topics" / "v2").mkdir()
    conn = sqlite3.connect(tmp_path / "topics" / "v2" / "log.db")
    conn.executescript(VERSION_2_TOPIC)
    conn.close()
    engine = await open_engine(tmp_path)
    assert [t.name for t in engine.list_topics()] == ["v2"]
    assert engine.high_watermark("v2", 0) == 2
    records = await engine.read("v2", 0, 0, 10, 1 << 20)
    assert [(r.offset, r.key, r.value, r.headers, r.size) for r in records] == [
        (0, "k", b"1", {"a": "1", "b": "2"}, 6),
        (1, None, b'"x"', {}, 3),
    ]
    # new records in the same file keep their headers exactly
    exact = (("a", "1"), ("a", None), ("b", b"\xff\x00"))
    await append(engine, "v2", [NewRecord(0, 1002, "k", b"2", ValueFormat.JSON, exact)])
    await engine.close()
    engine = await open_engine(tmp_path)
    records = await engine.read("v2", 0, 0, 10, 1 << 20)
    assert [r.headers for r in records] == [{"a": "1", "b": "2"}, {}, exact]
    assert records[2].size == 1 + 1 + (1 + 1) + 1 + (1 + 2)
    await engine.close()
    with sqlite3.connect(tmp_path / "topics" / "v2" / "log.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


async def test_a_file_from_a_newer_eddy_is_refused_not_misread(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("new", 1, {})
    await engine.close()
    with sqlite3.connect(tmp_path / "topics" / "new" / "log.db") as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    engine = await open_engine(tmp_path)
    with pytest.raises(Unavailable, match="topic 'new' is unavailable"):
        engine.get_topic("new")
    await engine.close()


async def test_a_corrupt_topic_file_does_not_keep_other_topics_down(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.create_topic("good", 1, {})
    await engine.create_topic("bad", 1, {})
    await engine.close()
    (tmp_path / "topics" / "bad" / "log.db").write_bytes(b"this is not a database" * 100)
    engine = await open_engine(tmp_path)
    threads = storage_threads()
    assert [t.name for t in engine.list_topics()] == ["good"]
    await append(engine, "good", [rec(0, b"1")])  # the good one works
    for attempt in (lambda: engine.get_topic("bad"), lambda: engine.partition_state("bad", 0)):
        with pytest.raises(Unavailable, match="topic 'bad' is unavailable"):
            attempt()
    with pytest.raises(Unavailable):
        await engine.create_topic("bad", 1, {})
    # the failed open left no thread behind (it would keep the process alive)
    assert storage_threads() == threads
    await engine.delete_topic("bad")  # the operator gives up on it
    with pytest.raises(TopicNotFound):
        engine.get_topic("bad")
    await engine.create_topic("bad", 1, {})
    await engine.close()


async def test_a_cancelled_topic_creation_still_registers_the_topic(tmp_path: Path) -> None:
    """A Kafka client that disconnects while its Metadata request auto-creates a topic cancels
    the creation's caller; the file is made all the same, so the topic must be too (before,
    the name was left blocked: every later creation failed with 'Directory not empty')."""
    engine = await open_engine(tmp_path)
    creating = asyncio.create_task(engine.create_topic("orphan", 2, {}))
    await asyncio.sleep(0)  # the creation is under way in the writer thread
    creating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await creating
    with pytest.raises(TopicExists):  # waits for the first creation, which finished
        await engine.create_topic("orphan", 2, {})
    assert engine.get_topic("orphan").partitions == 2
    await append(engine, "orphan", [rec(1, b"1")])
    await engine.close()

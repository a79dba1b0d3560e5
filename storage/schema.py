"""The SQLite files' schemas, migrations, connection settings and start-up loading.

A topic database holds the table ``topic`` (its one row: name, partition count, config,
creation time), ``partitions`` (per partition: log start offset, high watermark, size), one
table ``p<N>`` per partition whose ``offset`` column is the INTEGER PRIMARY KEY, and
``producers`` (the idempotent producers' remembered requests). Offsets come from
``partitions.high_watermark``, never from ``max(offset)+1``, so they are not reused even after
every record of a partition has been deleted. ``groups.db`` holds ``group_offsets``.

Everything here is plain `sqlite3`, run in a writer or reader thread.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from eddy.models.log import AppendedRecord, CommittedOffset, PartitionState, TopicMeta
from eddy.storage.engine import ProducerEntry, ProducerWindow

SyncPolicy = Literal["full", "normal"]
# 1: no producers table. 2: a record's `headers` is always a JSON object. 3: it may also be a
# JSON array of [name, value] pairs (headers.py: repeated names, null or non-UTF-8 values).
# Version 2 rows are valid version 3 rows, so the migration only records the version; it
# exists so that an older Eddy refuses a file it would misread instead of serving it.
SCHEMA_VERSION = 3
CREATE_PRODUCERS = (
    "CREATE TABLE IF NOT EXISTS producers (producer_id TEXT NOT NULL, sequence INTEGER NOT NULL, "
    "appended BLOB NOT NULL, committed_at INTEGER NOT NULL, PRIMARY KEY (producer_id, sequence))"
)
# groups.db has a version of its own (PRAGMA user_version), apart from the topic databases'.
# 0: no metadata column (Eddy before commit metadata was kept).
GROUPS_SCHEMA_VERSION = 1
CREATE_GROUP_OFFSETS = (
    "CREATE TABLE group_offsets (group_name TEXT NOT NULL, "
    "topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, "
    "committed_at INTEGER NOT NULL, metadata TEXT NOT NULL DEFAULT '', "
    "PRIMARY KEY (group_name, topic, partition))"
)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def partition_table(partition: int) -> str:
    return quote_identifier(f"p{int(partition)}")


@dataclass(frozen=True)
class Connector:
    """Opens connections with Eddy's settings (WAL; fsync per commit with sync=full)."""

    sync: SyncPolicy

    def __call__(self, path: Path) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT). Connections
        # move between the reader pool's threads, never used by two at once.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.sync.upper()}")
            conn.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            conn.close()  # a file that is not a database must not keep a descriptor open
            raise
        return conn


def encode_appended(appended: Sequence[AppendedRecord]) -> bytes:
    return orjson.dumps([[a.partition, a.offset, a.timestamp] for a in appended])


def decode_appended(blob: bytes) -> tuple[AppendedRecord, ...]:
    return tuple(AppendedRecord(*item) for item in orjson.loads(blob))


def add_partitions(conn: sqlite3.Connection, numbers: Iterable[int]) -> None:
    for number in numbers:
        conn.execute(
            f'CREATE TABLE {partition_table(number)} ("offset" INTEGER PRIMARY KEY, '
            "timestamp INTEGER NOT NULL, key TEXT, value BLOB, "
            "value_format INTEGER NOT NULL, headers BLOB, size INTEGER NOT NULL)"
        )
        conn.execute("INSERT INTO partitions VALUES (?, 0, 0, 0)", (number,))


def initialise_topic_db(path: Path, meta: TopicMeta, durable: bool) -> None:
    """Create a new topic database at `path` (in the staging dir, which a crash discards:
    so no fsync while building it, one at the end if `durable`)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # auto_vacuum must be chosen before the first table exists; incremental lets
        # retention give space back to the filesystem in small steps.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "CREATE TABLE topic (name TEXT NOT NULL, partitions INTEGER NOT NULL, "
            "config TEXT NOT NULL, created_at INTEGER NOT NULL)"
        )
        conn.execute(
            "INSERT INTO topic VALUES (?, ?, ?, ?)",
            (meta.name, meta.partitions, orjson.dumps(meta.config).decode(), meta.created_at),
        )
        conn.execute(
            "CREATE TABLE partitions (partition INTEGER PRIMARY KEY, "
            "log_start_offset INTEGER NOT NULL, high_watermark INTEGER NOT NULL, "
            "size_bytes INTEGER NOT NULL)"
        )
        add_partitions(conn, range(meta.partitions))
        conn.execute(CREATE_PRODUCERS)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    finally:
        conn.close()  # checkpoints the WAL into the file and removes it
    if durable:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring an older topic database to SCHEMA_VERSION (in one transaction)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == SCHEMA_VERSION:
        return
    if version not in (1, 2):
        raise RuntimeError(f"unsupported schema version {version}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version == 1:  # written by Eddy before the idempotent producer
            conn.execute(CREATE_PRODUCERS)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@dataclass
class LoadedTopic:
    meta: TopicMeta
    partitions: list[PartitionState]
    producers: dict[str, ProducerWindow]


def load_topic(conn: sqlite3.Connection) -> LoadedTopic:
    """Migrate if needed, then read what the engine keeps in memory."""
    migrate(conn)
    name, partitions, config, created_at = conn.execute(
        "SELECT name, partitions, config, created_at FROM topic"
    ).fetchone()
    states = [
        PartitionState(*row)
        for row in conn.execute(
            "SELECT partition, log_start_offset, high_watermark, size_bytes FROM partitions "
            "ORDER BY partition"
        )
    ]
    producers: dict[str, ProducerWindow] = {}
    for producer_id, sequence, appended in conn.execute(
        "SELECT producer_id, sequence, appended FROM producers ORDER BY producer_id, sequence"
    ):
        producers.setdefault(producer_id, ProducerWindow()).add(
            ProducerEntry(sequence, decode_appended(appended))
        )
    meta = TopicMeta(name, partitions, orjson.loads(config), created_at)
    return LoadedTopic(meta, states, producers)


def migrate_groups(conn: sqlite3.Connection) -> None:
    """Create groups.db's table, or bring an older one to GROUPS_SCHEMA_VERSION (one
    transaction; the committed offsets are kept, with "" as their metadata)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == GROUPS_SCHEMA_VERSION:
        return
    if version != 0:
        raise RuntimeError(f"unsupported groups.db schema version {version}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'group_offsets'"
        ).fetchone()
        if exists is None:
            conn.execute(CREATE_GROUP_OFFSETS)
        else:  # version 0: written by Eddy before commit metadata was kept
            conn.execute("ALTER TABLE group_offsets ADD COLUMN metadata TEXT NOT NULL DEFAULT ''")
        conn.execute(f"PRAGMA user_version={GROUPS_SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def load_group_offsets(conn: sqlite3.Connection) -> list[CommittedOffset]:
    """Migrate groups.db if needed, then read every committed offset."""
    migrate_groups(conn)
    return [
        CommittedOffset(*row)
        for row in conn.execute(
            "SELECT group_name, topic, partition, next_offset, committed_at, metadata "
            "FROM group_offsets"
        )
    ]

"""What a Kafka fetch of records that came in as a Kafka batch costs, three ways (issue 20).

    .venv/bin/python -m bench.kafka_fetch_paths

- **rebuild**: read the rows (SQLite, `StoredRecord`s) and build a new v2 batch (what a fetch
  does without kept batches);
- **cache**: the batch as produced, kept in memory (routers/kafka/batch_cache.py);
- **stored batch**: the batch as produced, kept in SQLite beside the rows (a blob per batch
  in the same transaction), read back by base offset: the produce-side cost (extra bytes
  written and fsynced) and the fetch-side cost.
CPU per record from `time.process_time`, in this process, on one ~1,000-record batch of the
benchmark's records (~60-byte JSON values), repeated.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from bench.sections.http_produce import batch_records
from eddy.models.log import StoredRecord, ValueFormat
from eddy.routers.kafka.batch_cache import BatchCache
from eddy.routers.kafka.records import build_batch, read_produced

RECORDS = 1000


def produced_batch() -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 2**31 - 1)
    now = int(time.time() * 1000)
    for i, (key, value) in enumerate(batch_records(RECORDS, 0)):
        builder.append(i, now, key.encode(), value, [])
    return bytes(builder.build())


def per_record_us(fn: object, rounds: int = 200) -> float:
    assert callable(fn)
    fn()
    started = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - started) / rounds / RECORDS * 1e6


def main() -> None:
    data = produced_batch()
    drafts = read_produced(data, 0).drafts
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "log.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            'CREATE TABLE p0 ("offset" INTEGER PRIMARY KEY, timestamp INTEGER, key TEXT, '
            "value BLOB, value_format INTEGER, headers BLOB, size INTEGER)"
        )
        conn.execute("CREATE TABLE b0 (base INTEGER PRIMARY KEY, end_offset INTEGER, data BLOB)")
        rows = [(i, d.timestamp, d.key, d.value, 1, None, 80) for i, d in enumerate(drafts)]
        conn.executemany("INSERT INTO p0 VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        next_base = [RECORDS]

        def rows_only() -> None:
            base = next_base[0]
            next_base[0] += RECORDS
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO p0 VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(base + r[0], *r[1:]) for r in rows],
            )
            conn.execute("COMMIT")

        def rows_and_batch() -> None:
            base = next_base[0]
            next_base[0] += RECORDS
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO p0 VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(base + r[0], *r[1:]) for r in rows],
            )
            conn.execute("INSERT INTO b0 VALUES (?, ?, ?)", (base, base + RECORDS, data))
            conn.execute("COMMIT")

        def rebuild() -> None:
            records = [
                StoredRecord(0, off, ts, key, value, ValueFormat(fmt), {}, size)
                for off, ts, key, value, fmt, _, size in conn.execute(
                    'SELECT * FROM p0 WHERE "offset" >= 0 ORDER BY "offset" LIMIT ?', (RECORDS,)
                )
            ]
            build_batch(records)

        def stored_batch() -> None:
            conn.execute("SELECT data FROM b0 WHERE base = ?", (RECORDS,)).fetchone()

        cache = BatchCache()
        cache.put("t", 0, 0, RECORDS, data, 1)

        def cached() -> None:
            cache.get("t", 0, 0, 1 << 20, 1)

        load = os.getloadavg()[0]
        print(f"load average {load:.2f}; one batch of {RECORDS} records, {len(data):,} bytes")
        print(f"produce, rows only:               {per_record_us(rows_only, 50):7.3f} µs/record")
        print(
            f"produce, rows + the batch blob:   {per_record_us(rows_and_batch, 50):7.3f} µs/record"
        )
        print(f"fetch, rebuild from rows:         {per_record_us(rebuild):7.3f} µs/record")
        print(f"fetch, batch stored in SQLite:    {per_record_us(stored_batch):7.3f} µs/record")
        print(f"fetch, batch kept in memory:      {per_record_us(cached):7.3f} µs/record")


if __name__ == "__main__":
    main()

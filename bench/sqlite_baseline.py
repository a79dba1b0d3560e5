"""Baseline for batch produce: raw SQLite appends, 1,000 rows per transaction.

The same table shape as one of Eddy's partitions, WAL mode, `synchronous` FULL (or NORMAL to
match `--sync normal`), `executemany` of each batch in its own transaction. No network, no JSON
parsing, no event loop: the floor Eddy's storage sits on.
"""

from __future__ import annotations

import multiprocessing.connection
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import child_main, self_cpu_seconds


@dataclass(frozen=True)
class SqliteSpec:
    db_path: str
    synchronous: str  # FULL or NORMAL
    batch: list[tuple[str, bytes]]  # (key, value) of one batch's records
    warmup: float
    duration: float


@dataclass
class SqliteResult:
    records: int
    transactions: int
    latencies_ns: list[int]  # per transaction
    cpu_seconds: float
    wall_seconds: float


def _run(spec: SqliteSpec) -> SqliteResult:
    path = Path(spec.db_path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={spec.synchronous}")
        conn.execute(
            'CREATE TABLE p0 ("offset" INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL, '
            "key TEXT, value BLOB, value_format INTEGER NOT NULL, headers BLOB, "
            "size INTEGER NOT NULL)"
        )
        sql = "INSERT INTO p0 VALUES (?, ?, ?, ?, ?, ?, ?)"
        sizes = [len(key.encode()) + len(value) for key, value in spec.batch]
        offset = 0
        records = transactions = 0
        latencies: list[int] = []
        start = time.perf_counter_ns()
        measure_from = start + int(spec.warmup * 1e9)
        measure_to = measure_from + int(spec.duration * 1e9)
        cpu_from = 0.0
        measuring = False
        while True:
            began = time.perf_counter_ns()
            if not measuring and began >= measure_from:
                measuring, cpu_from = True, self_cpu_seconds()
            if began >= measure_to:
                break
            now_ms = time.time_ns() // 1_000_000
            rows = [
                (offset + i, now_ms, key, value, 1, None, sizes[i])
                for i, (key, value) in enumerate(spec.batch)
            ]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
            offset += len(rows)
            if measuring:
                latencies.append(time.perf_counter_ns() - began)
                records += len(rows)
                transactions += 1
        cpu = self_cpu_seconds() - cpu_from
        wall = (time.perf_counter_ns() - measure_from) / 1e9
    finally:
        conn.close()
    return SqliteResult(records, transactions, latencies, cpu, wall)


def sqlite_worker(conn: multiprocessing.connection.Connection, spec: SqliteSpec) -> None:
    child_main(conn, lambda: _run(spec))

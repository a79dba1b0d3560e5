"""The storage engine alone: 1,000-record batches from 4 concurrent tasks vs sqlite3 executemany.

    .venv/bin/python -m bench.engine_batch            # 5 s per measurement, 2 repetitions

Isolates what `SQLiteEngine.append` costs (the queue, the writer thread's group commit, offsets,
idempotence bookkeeping, the in-memory state and the commit announcement) from HTTP and JSON
validation, which `bench.run --only batch` includes. Baseline: Python `sqlite3` in one thread,
WAL, the same `synchronous`, a table shaped like an Eddy partition, `executemany` of 1,000 rows
per transaction. Both run in this process, one after the other, alternating; CPU is this
process's CPU seconds per wall-clock second.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from eddy.models.log import ValueFormat
from eddy.storage import AppendBatch, NewRecord, SQLiteEngine

BATCH = 1000
CLIENTS = 4


def records(batch: int) -> list[NewRecord]:
    return [
        NewRecord(
            0,
            1_764_000_000_000,
            f"key-{batch * BATCH + i}",
            b'{"price": 187.3, "n": %d, "pad": "xxxxxxxxxxxxxxxxxxxx"}' % (batch * BATCH + i),
            ValueFormat.JSON,
            {},
        )
        for i in range(BATCH)
    ]


def measure_sqlite(
    tmp: Path, sync: str, seconds: float, batch: list[NewRecord]
) -> tuple[float, float]:
    conn = sqlite3.connect(tmp / f"baseline-{time.monotonic_ns()}.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync.upper()}")
    conn.execute(
        'CREATE TABLE p ("offset" INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL, key TEXT, '
        "value BLOB, value_format INTEGER NOT NULL, headers BLOB, size INTEGER NOT NULL)"
    )
    done = offset = 0
    start, cpu = time.monotonic(), time.process_time()
    while time.monotonic() < start + seconds:
        rows = [
            (offset + i, r.timestamp, r.key, r.value, 0, None, len(r.value or b""))
            for i, r in enumerate(batch)
        ]
        offset += len(rows)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO p VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        done += len(rows)
    elapsed = time.monotonic() - start
    conn.close()
    return done / elapsed, (time.process_time() - cpu) / elapsed


async def measure_engine(
    tmp: Path, sync: str, seconds: float, batch: list[NewRecord]
) -> tuple[float, float]:
    engine = SQLiteEngine(tmp / f"eddy-{time.monotonic_ns()}", sync)  # type: ignore[arg-type]
    await engine.open()
    await engine.create_topic("t", 1, {})
    done = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await engine.append("t", AppendBatch(batch))
            done += len(batch)

    start, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    elapsed = time.monotonic() - start
    used = time.process_time() - cpu
    await engine.close()
    return done / elapsed, used / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    batch = records(0)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="eddy-bench-engine-") as name:
        tmp = Path(name)
        for sync in ("full", "normal"):
            for _ in range(args.repeat):
                with open("/proc/loadavg") as f:
                    load = f.read().split()[0]
                base, base_cpu = measure_sqlite(tmp, sync, args.seconds, batch)
                eddy, eddy_cpu = asyncio.run(measure_engine(tmp, sync, args.seconds, batch))
                rows.append(
                    f"| synchronous={sync.upper()} | {base:,.0f} rec/s (CPU {base_cpu:.2f}) | "
                    f"{eddy:,.0f} rec/s (CPU {eddy_cpu:.2f}) | **{eddy / base:.2f}x** | {load} |"
                )
    print(
        f"\n| {BATCH:,}-record batches | sqlite3 executemany, 1 thread | "
        f"SQLiteEngine.append, {CLIENTS} tasks | Engine / baseline | Load avg (2 CPUs) |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

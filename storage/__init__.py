"""Storage: the `Engine` interface the broker talks to, and its SQLite implementation.

The value types an engine hands out (records, offsets, partition state) are the log's own and
live in `eddy.models.log`, so the transports can name them without depending on storage.
"""

from eddy.storage.engine import (
    PRODUCER_HISTORY,
    PRODUCER_WINDOW,
    AppendBatch,
    Engine,
    LogListener,
    NewRecord,
    ProducerEntry,
    ProducerWindow,
    record_size,
)
from eddy.storage.sqlite_engine import DataDirLocked, SQLiteEngine

__all__ = [
    "PRODUCER_HISTORY",
    "PRODUCER_WINDOW",
    "AppendBatch",
    "DataDirLocked",
    "Engine",
    "LogListener",
    "NewRecord",
    "ProducerEntry",
    "ProducerWindow",
    "SQLiteEngine",
    "record_size",
]

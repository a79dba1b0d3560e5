"""Storage: the `Engine` interface the broker talks to, and its SQLite implementation."""

from storage.engine import (
    AppendedRecord,
    CommittedOffset,
    Engine,
    NewRecord,
    PartitionState,
    StoredRecord,
    TopicMeta,
    ValueFormat,
)
from storage.sqlite_engine import DataDirLocked, SQLiteEngine

__all__ = [
    "AppendedRecord",
    "CommittedOffset",
    "DataDirLocked",
    "Engine",
    "NewRecord",
    "PartitionState",
    "SQLiteEngine",
    "StoredRecord",
    "TopicMeta",
    "ValueFormat",
]

"""Storage: the `Engine` interface the broker talks to, and its SQLite implementation."""

from storage.engine import (
    AppendedRecord,
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
    "DataDirLocked",
    "Engine",
    "NewRecord",
    "PartitionState",
    "SQLiteEngine",
    "StoredRecord",
    "TopicMeta",
    "ValueFormat",
]

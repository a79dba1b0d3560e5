"""Storage: the `Engine` interface the broker talks to, and its SQLite implementation."""

from storage.engine import (
    PRODUCER_HISTORY,
    AppendBatch,
    AppendedRecord,
    CommittedOffset,
    Engine,
    LogListener,
    NewRecord,
    PartitionState,
    ProducerEntry,
    ProducerSequence,
    StoredRecord,
    TopicMeta,
    ValueFormat,
)
from storage.sqlite_engine import DataDirLocked, SQLiteEngine

__all__ = [
    "PRODUCER_HISTORY",
    "AppendBatch",
    "AppendedRecord",
    "CommittedOffset",
    "DataDirLocked",
    "Engine",
    "LogListener",
    "NewRecord",
    "PartitionState",
    "ProducerEntry",
    "ProducerSequence",
    "SQLiteEngine",
    "StoredRecord",
    "TopicMeta",
    "ValueFormat",
]

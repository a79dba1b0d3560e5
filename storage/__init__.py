"""Storage: the `Engine` interface the broker talks to, and its SQLite implementation."""

from eddy.storage.engine import (
    PRODUCER_HISTORY,
    PRODUCER_WINDOW,
    AppendBatch,
    AppendedRecord,
    CommittedOffset,
    Engine,
    LogListener,
    NewRecord,
    PartitionState,
    ProducerEntry,
    ProducerSequence,
    ProducerWindow,
    StoredRecord,
    TopicMeta,
    ValueFormat,
    record_size,
)
from eddy.storage.headers import HeaderPairs, Headers, HeaderValue, exact_headers
from eddy.storage.sqlite_engine import DataDirLocked, SQLiteEngine

__all__ = [
    "PRODUCER_HISTORY",
    "PRODUCER_WINDOW",
    "AppendBatch",
    "AppendedRecord",
    "CommittedOffset",
    "DataDirLocked",
    "Engine",
    "HeaderPairs",
    "HeaderValue",
    "Headers",
    "LogListener",
    "NewRecord",
    "PartitionState",
    "ProducerEntry",
    "ProducerSequence",
    "ProducerWindow",
    "SQLiteEngine",
    "StoredRecord",
    "TopicMeta",
    "ValueFormat",
    "exact_headers",
    "record_size",
]

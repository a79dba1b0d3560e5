"""Reads below the transports: a partition checked for reading (authorized, existing, its
state and config), and Kafka-style offset look-ups (earliest, latest, last record, by time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from eddy.models.errors import OffsetOutOfRange
from eddy.models.log import PartitionState, TopicMeta
from eddy.storage import Engine

OffsetQuery = Literal["earliest", "latest", "max_timestamp"] | int  # int: a timestamp (ms)
NOT_FOUND = -1


@dataclass(frozen=True, slots=True)
class ReadablePartition:
    """A partition the caller may read, as it was when checked (`Broker.partition_for_read`):
    what the read services take, so that nothing is read unchecked."""

    meta: TopicMeta
    state: PartitionState
    config: dict[str, Any]

    @property
    def topic(self) -> str:
        return self.meta.name

    @property
    def partition(self) -> int:
        return self.state.partition

    def check_offset(self, offset: int) -> None:
        """Raise `OffsetOutOfRange` unless log start <= offset <= high watermark."""
        state = self.state
        if not state.log_start_offset <= offset <= state.high_watermark:
            raise OffsetOutOfRange(
                self.topic, self.partition, offset, state.log_start_offset, state.high_watermark
            )


async def look_up_offset(
    engine: Engine, readable: ReadablePartition, at: OffsetQuery
) -> tuple[int, int]:
    """(offset, timestamp) for a query; -1 for what there is none of. `max_timestamp` answers
    the last record (Kafka: the one with the largest timestamp); a timestamp, the first record
    at or after it."""
    topic, partition, state = readable.topic, readable.partition, readable.state
    if at == "earliest":
        return state.log_start_offset, NOT_FOUND
    if at == "latest":
        return state.high_watermark, NOT_FOUND
    if at == "max_timestamp":
        if state.high_watermark > state.log_start_offset:
            last = await engine.read(topic, partition, state.high_watermark - 1, 1, 1)
            if last:
                return last[0].offset, last[0].timestamp
        return NOT_FOUND, NOT_FOUND
    found = await engine.offset_for_timestamp(topic, partition, at)
    if found is None:
        return NOT_FOUND, NOT_FOUND
    first = await engine.read(topic, partition, found, 1, 1)
    return found, first[0].timestamp if first else at

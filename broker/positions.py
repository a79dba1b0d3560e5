"""Subscription parameters and start offsets: pure logic, no I/O. (The transports parse their
query strings into `SubscribeParams`.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from models.errors import OffsetOutOfRange, PartitionNotFound
from storage import PartitionState

StartFrom = Literal["earliest", "latest"]


@dataclass(frozen=True)
class SubscribeParams:
    start_from: StartFrom = "latest"
    offsets: Mapping[int, int] | None = None  # partition -> next offset to deliver
    partitions: frozenset[int] | None = None  # None: all
    keys: frozenset[str] | None = None  # None: every key
    group: str | None = None
    auto_commit: bool = False


@dataclass(frozen=True)
class StartPosition:
    offset: int
    reset: bool = False  # the asked offset was removed by retention: starting at log start


def start_positions(
    topic: str, states: Sequence[PartitionState], params: SubscribeParams
) -> dict[int, StartPosition]:
    """Where delivery starts on each subscribed partition.

    An explicit offset wins; one below the log start (removed by retention) starts at the log
    start with reset=True; one above the high watermark is an error. Other partitions start at
    the log start (`earliest`) or the high watermark (`latest`).
    """
    count = len(states)
    wanted = params.partitions if params.partitions is not None else frozenset(range(count))
    for partition in sorted(wanted | frozenset(params.offsets or ())):
        if partition >= count:
            raise PartitionNotFound(topic, partition, count)
    positions: dict[int, StartPosition] = {}
    for partition in sorted(wanted):
        state = states[partition]
        asked = (params.offsets or {}).get(partition)
        if asked is None:
            offset = (
                state.log_start_offset if params.start_from == "earliest" else state.high_watermark
            )
            positions[partition] = StartPosition(offset)
        elif asked > state.high_watermark:
            raise OffsetOutOfRange(
                topic, partition, asked, state.log_start_offset, state.high_watermark
            )
        elif asked < state.log_start_offset:
            positions[partition] = StartPosition(state.log_start_offset, reset=True)
        else:
            positions[partition] = StartPosition(asked)
    return positions

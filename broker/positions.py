"""Subscription parameters and start offsets: pure logic, no I/O. (The transports parse their
query strings into `SubscribeParams`; `since=` lookups are done by the broker beforehand and
handed in as plain offsets.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from eddy.models.errors import OffsetOutOfRange, PartitionNotFound
from eddy.models.log import PartitionState

StartFrom = Literal["earliest", "latest"]
OnSlow = Literal["close", "conflate"]


@dataclass(frozen=True)
class SubscribeParams:
    """What a subscriber asked for, in domain values. Every transport fills the first fields;
    `group` and `auto_commit` are for WebSocket consumer-group members only."""

    start_from: StartFrom = "latest"
    offsets: Mapping[int, int] | None = None  # partition -> next offset to deliver
    partitions: frozenset[int] | None = None  # None: all
    keys: frozenset[str] | None = None  # None: every key
    since: int | None = None  # ms: partitions without a position start at this time
    on_slow: OnSlow = "close"
    max_rate: float | None = None  # record frames per second, None: no cap
    group: str | None = None
    auto_commit: bool = False


@dataclass(frozen=True)
class StartPosition:
    offset: int
    reset: bool = False  # the asked offset was removed by retention: starting at log start


def default_start(
    state: PartitionState, start_from: StartFrom, since_offset: int | None = None
) -> StartPosition:
    """Where a partition with no asked (or committed) position starts: at the `since=` lookup's
    offset if there was one (kept within what the log holds now), else by `from`."""
    if since_offset is not None:
        return StartPosition(min(max(since_offset, state.log_start_offset), state.high_watermark))
    if start_from == "earliest":
        return StartPosition(state.log_start_offset)
    return StartPosition(state.high_watermark)


def start_positions(
    topic: str,
    states: Sequence[PartitionState],
    params: SubscribeParams,
    since_offsets: Mapping[int, int] | None = None,
) -> dict[int, StartPosition]:
    """Where delivery starts on each subscribed partition.

    An explicit offset wins; one below the log start (removed by retention) starts at the log
    start with reset=True; one above the high watermark is an error. Other partitions start at
    their `since_offsets` entry (the first offset at or after `since=`, found by the caller), or
    else at the log start (`earliest`) or the high watermark (`latest`).
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
            since_offset = (since_offsets or {}).get(partition)
            positions[partition] = default_start(state, params.start_from, since_offset)
        elif asked > state.high_watermark:
            raise OffsetOutOfRange(
                topic, partition, asked, state.log_start_offset, state.high_watermark
            )
        elif asked < state.log_start_offset:
            positions[partition] = StartPosition(state.log_start_offset, reset=True)
        else:
            positions[partition] = StartPosition(asked)
    return positions


def partitions_to_look_up(params: SubscribeParams, count: int) -> list[int]:
    """The partitions whose start a `since=` lookup decides (subscribed, valid, no offset)."""
    if params.since is None:
        return []
    wanted = params.partitions if params.partitions is not None else range(count)
    asked = params.offsets or {}
    return sorted(p for p in wanted if p < count and p not in asked)

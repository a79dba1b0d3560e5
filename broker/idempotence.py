"""The idempotent producer's sequence rule (Kafka's, per topic and producer id). Pure logic.

A producer numbers its requests. The first may use any number; after that, last + 1 is
appended; a number among the last `window` committed (or still being committed) is a retry and
gets the original answer without appending anything; any other number is out of order. A
request that fails does not use up its number. REST uses a window of PRODUCER_HISTORY (5); a
WebSocket publisher one as large as what it may have in flight (PRODUCER_WINDOW), so that
after a reconnect every resend of a committed record gets its original ack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eddy.storage import ProducerEntry, ProducerWindow


@dataclass(frozen=True)
class Append:
    """A new request: append it. `after`: the sequence it follows, for the engine's check in
    the commit (None: sequence - 1, Eddy's numbering)."""

    after: int | None = None


@dataclass(frozen=True)
class Retry:
    """A request seen before: answer like the original, append nothing."""

    entry: ProducerEntry | None  # committed original; None: the original is still in flight


@dataclass(frozen=True)
class OutOfOrder:
    expected: int


@dataclass(frozen=True)
class Duplicate:
    """Kafka's rule: a batch older than the remembered ones (committed long ago)."""


Decision = Append | Retry | OutOfOrder | Duplicate
SequenceRule = Callable[[ProducerWindow, dict[int, Any], int, int], Decision]
KAFKA_SEQUENCE_SPAN = 2**31  # Kafka's sequences are int32 and wrap to 0


def check_sequence(
    committed: ProducerWindow, in_flight: dict[int, Any], sequence: int, window: int
) -> Decision:
    """`in_flight`: sequences queued but not yet committed, oldest first (all newer than the
    committed ones)."""
    if sequence in in_flight:
        return Retry(None)
    last_committed = committed.last
    if last_committed is not None and last_committed - window < sequence <= last_committed:
        entry = committed.get(sequence)
        if entry is not None:
            return Retry(entry)
    last = next(reversed(in_flight)) if in_flight else last_committed
    if last is None or sequence == last + 1:
        return Append()
    return OutOfOrder(last + 1)


def check_record_sequence(
    committed: ProducerWindow, in_flight: dict[int, Any], sequence: int, window: int
) -> Decision:
    """Kafka's idempotent producers number records, not requests (per producer id, epoch and
    partition: the caller keys `committed` by them): a batch's base sequence must follow the
    last committed batch's last record. A base sequence of one of the remembered batches (Kafka
    keeps 5) is a retry, answered with its original offsets; an older one is a duplicate; any
    other is out of order. `window` is unused (the remembered batches are the window)."""
    if sequence in in_flight:
        return Retry(None)
    entry = committed.get(sequence)
    if entry is not None:
        return Retry(entry)
    if in_flight:  # the previous batch is still being committed (its size is not known here)
        previous = next(reversed(in_flight))
        return Append(previous) if sequence > previous else Duplicate()
    last_sequence = committed.last
    if last_sequence is None:
        return Append()  # a producer's first batch (Kafka's clients start at 0)
    last = committed.get(last_sequence)
    assert last is not None
    expected = (last.sequence + len(last.appended)) % KAFKA_SEQUENCE_SPAN
    if sequence == expected:
        return Append(last_sequence)
    behind = (expected - sequence) % KAFKA_SEQUENCE_SPAN
    if behind < KAFKA_SEQUENCE_SPAN // 2:
        return Duplicate()
    return OutOfOrder(expected)

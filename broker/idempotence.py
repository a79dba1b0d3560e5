"""The idempotent producer's sequence rule (Kafka's, per topic and producer id). Pure logic.

A producer numbers its requests. The first may use any number; after that, last + 1 is
appended; a number among the last `window` committed (or still being committed) is a retry and
gets the original answer without appending anything; any other number is out of order. A
request that fails does not use up its number. REST uses a window of PRODUCER_HISTORY (5); a
WebSocket publisher one as large as what it may have in flight (PRODUCER_WINDOW), so that
after a reconnect every resend of a committed record gets its original ack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage import ProducerEntry, ProducerWindow


@dataclass(frozen=True)
class Append:
    """A new request: append it."""


@dataclass(frozen=True)
class Retry:
    """A request seen before: answer like the original, append nothing."""

    entry: ProducerEntry | None  # committed original; None: the original is still in flight


@dataclass(frozen=True)
class OutOfOrder:
    expected: int


Decision = Append | Retry | OutOfOrder


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

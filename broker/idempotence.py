"""The idempotent producer's sequence rule (Kafka's, per topic and producer id). Pure logic.

A producer numbers its requests. The first may use any number; after that, last + 1 is
appended; a number among the last PRODUCER_HISTORY committed (or still being committed) is a
retry and gets the original answer without appending anything; any other number is out of
order. A request that fails does not use up its number.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from storage import ProducerEntry


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
    committed: Sequence[ProducerEntry], in_flight: Collection[int], sequence: int
) -> Decision:
    if sequence in in_flight:
        return Retry(None)
    for entry in committed:
        if entry.sequence == sequence:
            return Retry(entry)
    seen = [e.sequence for e in committed] + list(in_flight)
    if not seen or sequence == max(seen) + 1:
        return Append()
    return OutOfOrder(max(seen) + 1)

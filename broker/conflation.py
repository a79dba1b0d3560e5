"""Records a subscription holds back, conflated per key, and the slots of `max_rate=`: plain
state, no asyncio, no I/O (the clock is passed in).

A subscription whose records cannot go out as they come (its connection is full and it asked
for `on_slow=conflate`, or it has `max_rate=`) keeps them in a `Backlog` instead of writing them:

- `add` takes the next record of a partition, in offset order. A keyed record replaces the
  unsent one of the same key on that partition: the older one is dropped (it counts as passed,
  and is never sent) and the replacement carries how many records of its key it stands for
  (`conflated`). Keyless records are all kept, and their bytes counted (`keyless_bytes`): the
  driver ends a subscription they alone overflow.
- `take(n)` hands out the next `n` (or all) in arrival order, which per partition is offset
  order. With a limit it works through batches: the unsent records at the moment a batch is
  formed, in order; records that arrive meanwhile join the next batch (conflated among
  themselves), so a key that changes faster than the slots come cannot push the others back
  for ever, nor be pushed back for ever itself: every key's newest value goes out within two
  batches. (Replacing inside the batch being sent would move the key behind newer records of
  other keys, which would break per-partition order or starve it.)
- `first_offset(p)` is the oldest unsent offset of a partition: everything below it has been
  sent or conflated away, which is what a resume position must say.

`RateBudget` is a token bucket for `max_rate`: `rate` tokens a second, at most `capacity` saved
up, one spent per record frame.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

BURST_SECONDS = 0.25  # a rate bucket saves up at most this many seconds' worth...
MIN_BURST = 2.0  # ...and at least this many frames (timer lateness must not lose slots)


@dataclass(slots=True)
class Unsent(Generic[T]):
    seq: int  # arrival order
    partition: int
    offset: int
    key: str | None
    size: int
    item: T
    conflated: int  # earlier records of its key this one replaced (never sent)


def _seq(unsent: Unsent[T]) -> int:
    return unsent.seq


class Backlog(Generic[T]):
    def __init__(self) -> None:
        self._seq = 0
        # Keyed records not in a batch yet, by (partition, key); re-inserted on replacement,
        # so the dict's order is arrival order.
        self._open: dict[tuple[int, str], Unsent[T]] = {}
        self._open_keyless: list[Unsent[T]] = []
        self._batch: deque[Unsent[T]] = deque()
        self.keyless_bytes = 0
        self.dropped = 0  # records conflated away, in all

    def __len__(self) -> int:
        return len(self._open) + len(self._open_keyless) + len(self._batch)

    def add(self, partition: int, offset: int, key: str | None, size: int, item: T) -> None:
        """The next record of `partition` (offsets increase per partition)."""
        self._seq += 1
        if key is None:
            self._open_keyless.append(Unsent(self._seq, partition, offset, None, size, item, 0))
            self.keyless_bytes += size
            return
        slot = (partition, key)
        older = self._open.pop(slot, None)
        conflated = 0
        if older is not None:
            conflated = older.conflated + 1
            self.dropped += 1
        self._open[slot] = Unsent(self._seq, partition, offset, key, size, item, conflated)

    def take(self, limit: int | None = None) -> list[Unsent[T]]:
        """The next `limit` (None: all) unsent records, in arrival order; they leave."""
        out: list[Unsent[T]] = []
        while limit is None or len(out) < limit:
            if not self._batch:
                if not self._open and not self._open_keyless:
                    break
                self._batch = deque(heapq.merge(self._open.values(), self._open_keyless, key=_seq))
                self._open, self._open_keyless = {}, []
            batch = self._batch
            count = len(batch) if limit is None else min(limit - len(out), len(batch))
            for _ in range(count):
                unsent = batch.popleft()
                if unsent.key is None:
                    self.keyless_bytes -= unsent.size
                out.append(unsent)
        return out

    def first_offset(self, partition: int) -> int | None:
        """The oldest unsent offset of `partition` (None: nothing of it is held back)."""
        for unsent in self._batch:  # every batch entry arrived before every open one
            if unsent.partition == partition:
                return unsent.offset
        first: int | None = None
        for unsent in (*self._open.values(), *self._open_keyless):
            if unsent.partition == partition and (first is None or unsent.offset < first):
                first = unsent.offset
        return first

    def discard(self, partition: int) -> None:
        """Forget what is held back of `partition` (it was revoked)."""
        kept = [u for u in self._open_keyless if u.partition != partition]
        self.keyless_bytes -= sum(u.size for u in self._open_keyless if u.partition == partition)
        self.keyless_bytes -= sum(
            u.size for u in self._batch if u.partition == partition and u.key is None
        )
        self._open_keyless = kept
        self._open = {k: u for k, u in self._open.items() if k[0] != partition}
        self._batch = deque(u for u in self._batch if u.partition != partition)


class RateBudget:
    """At most `rate` record frames a second (a token bucket on the caller's clock)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(MIN_BURST, rate * BURST_SECONDS)
        self._tokens = 1.0  # the first record goes out at once
        self._at = now

    def available(self, now: float) -> int:
        """Frames that may go out now."""
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
        return int(self._tokens)

    def spend(self, frames: int) -> None:
        self._tokens -= frames

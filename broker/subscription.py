"""What one subscription has to deliver next: plain state, no asyncio, no sockets.

Per assigned partition a subscription keeps the next offset to hand to its connection and
whether the partition is *live* (written from the partition's in-memory tail right after each
commit, whatever the reader's pace: the overflow policy guards the connection) or *replaying*
(catching up on older records at the reader's pace). A driver (`broker/subscriber.py`) runs
it over a connection:

- `assign` / `revoke` change the partitions (consumer groups rebalance at any time). Every
  (re)assignment gets a new epoch, so a storage read that was in flight when its partition was
  revoked is thrown away (`replayed` ignores it).
- `poll(tails)` says what the live partitions have to send now and moves their positions past
  it: everything from the next offset to the end of the tail. A live partition whose next
  offset the tail no longer holds (it fell behind by more than the tail keeps) goes back to
  replaying, so nothing is ever skipped.
- `replay_next()` names the next read (from the tail if it still holds the position, else from
  storage); `replayed(...)` takes its result. When the position reaches the end of the tail,
  the partition turns live in the same step (no await in between: nothing committed meanwhile
  can slip by), and the next `poll` continues from there.
- Records that a `keys` filter leaves out still move the position (they count as delivered for
  auto-commit), as do records removed by retention before a replay read reached them.
- While `buffering` (the connection is full and the policy conflates, or the subscription is
  paced by `max_rate=`), `poll` puts the live records in the `backlog` (`conflation.py`,
  conflated per key) instead of handing them over; a paced subscription's replays go there too.
  The driver takes them out as the connection drains or the rate allows. `next_offsets` stops
  at the oldest record still held back, so a resume position never skips one.

Positions only ever move forward within one assignment, and every record between the start and
the position has been offered exactly once: the property tests in `tests/test_subscription.py`
check that no interleaving loses or repeats a record.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from eddy.broker.conflation import Backlog
from eddy.broker.tail import PartitionTail, TailEntry
from eddy.models.log import StoredRecord


@dataclass(slots=True)
class _Cursor:
    next_offset: int
    epoch: int
    live: bool = False
    tail: PartitionTail | None = None  # the partition's tail, once it is live


@dataclass(frozen=True, slots=True)
class ReplayRead:
    """A storage read a replaying partition needs: records from `offset` on."""

    partition: int
    offset: int
    epoch: int


# Records of one partition to hand to the connection now: (partition, tail, start, end,
# entries): the tail's records from `start` to `end`, all of them (`entries` None) or only the
# ones in `entries`. A plain tuple: one is made per subscriber and commit on the hot path.
Delivery = tuple[int, PartitionTail, int, int, Sequence[TailEntry] | None]


class Keyed(Protocol):
    """A record or a tail entry: what the subscription needs to know of it."""

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> str | None: ...


R = TypeVar("R", bound=Keyed)


class Tails(Protocol):
    def get(self, partition: int) -> PartitionTail | None: ...


class Overflow(enum.Enum):
    """What a subscription whose connection holds too much unsent data does."""

    CLOSE = "close"  # end it (WebSocket close 4408): the client resumes by offset
    # Hold live records back, conflated per key, until the connection drains (on_slow=conflate)
    CONFLATE = "conflate"


class OverflowPolicy(Protocol):
    """Swappable: what `on_slow=` asked for."""

    def on_overflow(self, subscription: Subscription, buffered: int) -> Overflow: ...


class CloseWhenFull:
    def on_overflow(self, subscription: Subscription, buffered: int) -> Overflow:
        return Overflow.CLOSE


class ConflateWhenFull:
    def on_overflow(self, subscription: Subscription, buffered: int) -> Overflow:
        return Overflow.CONFLATE


class Subscription:
    def __init__(self, keys: frozenset[str] | None = None, paced: bool = False) -> None:
        self.keys = keys
        self._cursors: dict[int, _Cursor] = {}
        self._epochs = itertools.count(1)
        # Paced (max_rate=): every record goes through the backlog, replays too.
        self.paced = paced
        self.buffering = paced  # live records go to the backlog instead of out
        self.backlog: Backlog[Keyed] | None = Backlog() if paced else None
        # Set when a partition starts (or falls back to) replaying: the driver starts a reader.
        self.replay_pending = False

    # --- assignment -------------------------------------------------------------------------
    @property
    def partitions(self) -> set[int]:
        return set(self._cursors)

    def assign(self, positions: Mapping[int, int], tails: Tails) -> None:
        """Make `positions` (partition -> start offset) the assigned partitions: revoke the
        others; partitions already assigned continue where they are; new ones start at their
        offset, live if the tail holds it, else replaying."""
        for partition in [p for p in self._cursors if p not in positions]:
            self.revoke(partition)
        for partition, offset in positions.items():
            if partition not in self._cursors:
                cursor = _Cursor(offset, next(self._epochs))
                self._cursors[partition] = cursor
                self._go_live_if_tail_holds(partition, cursor, tails)

    def revoke(self, partition: int) -> None:
        self._cursors.pop(partition, None)
        if self.backlog is not None:
            self.backlog.discard(partition)

    def next_offsets(self) -> dict[int, int]:
        """Per assigned partition, the offset after the last record handed over (or skipped, or
        conflated away): the oldest one held back in the backlog, if any."""
        offsets = {p: c.next_offset for p, c in self._cursors.items()}
        backlog = self.backlog
        if backlog:
            for partition in offsets:
                first = backlog.first_offset(partition)
                if first is not None:
                    offsets[partition] = first
        return offsets

    def is_live(self, partition: int) -> bool:
        cursor = self._cursors.get(partition)
        return cursor is not None and cursor.live

    def _go_live_if_tail_holds(self, partition: int, cursor: _Cursor, tails: Tails) -> None:
        # Live only at the end: records behind it, even ones the tail still holds, are caught up
        # by the replay reader at the client's pace (it reads the tail when it can).
        tail = tails.get(partition)
        cursor.live = tail is not None and cursor.next_offset == tail.end
        cursor.tail = tail
        if not cursor.live:
            self.replay_pending = True

    # --- live ---------------------------------------------------------------------------------
    def poll(self, tails: Tails) -> list[Delivery]:
        """What the live partitions send now (positions move past it). While buffering, that
        goes to the backlog and nothing is returned."""
        out: list[Delivery] = []
        backlog = self.backlog if self.buffering else None
        for partition, cursor in self._cursors.items():
            tail = cursor.tail
            if not cursor.live or tail is None:
                continue
            offset, end = cursor.next_offset, tail.end
            if offset == end:
                continue
            if offset < tail.start or offset > end:
                cursor.live = False  # fell behind what the tail keeps: read from storage
                self.replay_pending = True
                continue
            cursor.next_offset = end
            keys = self.keys
            if backlog is not None:
                for e in tail.entries(offset):
                    if keys is None or e.key in keys:
                        backlog.add(partition, e.offset, e.key, e.record.size, e)
            elif keys is None:
                out.append((partition, tail, offset, end, None))
            else:
                chosen = [e for e in tail.entries(offset) if e.key in keys]
                if chosen:
                    out.append((partition, tail, offset, end, chosen))
        return out

    def start_buffering(self) -> None:
        """The connection is full (on_slow=conflate): hold live records back from now on."""
        if self.backlog is None:
            self.backlog = Backlog()
        self.buffering = True

    def stop_buffering(self) -> None:
        """The backlog went out and the connection has room: live records go straight out
        again (a paced subscription always buffers)."""
        self.buffering = self.paced

    # --- replay -------------------------------------------------------------------------------
    def replay_next(self) -> ReplayRead | None:
        """The next storage read to do (lowest replaying partition first), or None."""
        for partition in sorted(self._cursors):
            cursor = self._cursors[partition]
            if not cursor.live:
                return ReplayRead(partition, cursor.next_offset, cursor.epoch)
        return None

    def replayed(
        self,
        read: ReplayRead,
        records: Sequence[R],
        high_watermark_before: int,
        tails: Tails,
    ) -> list[R]:
        """The result of `read` (records, or tail entries, at offset >= read.offset, in order,
        read when the high watermark was `high_watermark_before`): the ones to send (a paced
        subscription puts them in its backlog instead). Stale reads (revoked or reassigned
        meanwhile) give nothing."""
        cursor = self._cursors.get(read.partition)
        if cursor is None or cursor.epoch != read.epoch or cursor.live:
            return []
        if cursor.next_offset != read.offset:
            return []  # another read already moved it (not done by the driver, but harmless)
        chosen: list[R] = []
        keys = self.keys
        for record in records:
            if record.offset < cursor.next_offset:
                continue
            cursor.next_offset = record.offset + 1
            if keys is None or record.key in keys:
                chosen.append(record)
        if not records:
            # Nothing at or after the offset when the read began: anything below that high
            # watermark was removed (retention, compaction). Never skip past it.
            cursor.next_offset = max(cursor.next_offset, high_watermark_before)
        self._go_live_if_tail_holds(read.partition, cursor, tails)
        if self.paced and self.backlog is not None:
            for r in chosen:
                self.backlog.add(read.partition, r.offset, r.key, _size(r), r)
            return []
        return chosen


def _size(item: Keyed) -> int:
    """What a held-back record weighs against the limit (a tail entry: its record's size)."""
    if isinstance(item, TailEntry):
        return item.record.size
    return item.size if isinstance(item, StoredRecord) else 0

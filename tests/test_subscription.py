"""The subscription state and the partition tail: pure logic, tested directly.

The property tests run random interleavings of commits, live polls, storage replays (also ones
that complete late, after their partition was revoked or reassigned), assignments, revocations,
conflation (the backlog of `on_slow=conflate` and `max_rate=`, released a few records at a time)
and retention against a model log, and check that per assignment every record is delivered at
most once, in offset order, and that none is lost (a record may only be missing if the keys
filter leaves it out, retention removed it before anyone read it, or a newer record of its key
replaced it, which then says so in its `conflated` count), and that positions never go back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eddy.broker.subscription import Keyed, ReplayRead, Subscription
from eddy.broker.tail import PartitionTail
from eddy.models.log import StoredRecord, ValueFormat

TOPIC = "t"
PARTITIONS = 3


def record(partition: int, offset: int, key: str | None) -> StoredRecord:
    return StoredRecord(partition, offset, 0, key, b"1", ValueFormat.JSON, {})


class Upper:
    """A test encoder: distinct bytes per record."""

    def record(self, topic: str, record: StoredRecord) -> bytes:
        return f"[{record.partition}:{record.offset}]".encode()


ENCODER = Upper()


# --- the tail -------------------------------------------------------------------------------
def test_tail_keeps_the_newest_records_and_encodes_each_once() -> None:
    tail = PartitionTail(TOPIC, 10, max_records=3)
    tail.append([record(0, o, None) for o in range(10, 15)])
    assert (tail.start, tail.end, len(tail)) == (12, 15, 3)
    assert [e.offset for e in tail.entries(13)] == [13, 14]
    assert tail.joined(12, ENCODER) == b"[0:12][0:13][0:14]"
    first = tail.entries(12)[0]
    assert first.encoded(TOPIC, ENCODER) is first.encoded(TOPIC, ENCODER)
    assert tail.joined(12, ENCODER) is tail.joined(12, ENCODER)  # one join per position
    tail.append([record(0, 15, None)])
    assert tail.joined(13, ENCODER) == b"[0:13][0:14][0:15]"


def test_tail_restarts_at_a_gap() -> None:
    tail = PartitionTail(TOPIC, 0)
    tail.append([record(0, 0, None), record(0, 1, None)])
    tail.append([record(0, 5, None)])  # records 2-4 were never announced to this tail
    assert (tail.start, tail.end) == (5, 6)


def test_tail_bounds_bytes() -> None:
    tail = PartitionTail(TOPIC, 0, max_records=1000, max_bytes=1000)
    big = StoredRecord(0, 0, 0, None, b"x" * 400, ValueFormat.JSON, {})
    tail.append(
        [
            big,
            *(StoredRecord(0, o, 0, None, b"x" * 400, ValueFormat.JSON, {}) for o in range(1, 10)),
        ]
    )
    assert tail.end == 10 and len(tail) == 2
    many = PartitionTail(TOPIC, 0, max_records=10)
    for offset in range(2000):  # the list is compacted as entries are evicted
        many.append([record(0, offset, None)])
    assert (many.start, many.end) == (1990, 2000)
    assert [e.offset for e in many.entries(1995)] == [1995, 1996, 1997, 1998, 1999]


# --- the subscription: random interleavings --------------------------------------------------
KEYS = ["a", "b", None]
Op = tuple[Any, ...]

operation = st.one_of(
    st.tuples(
        st.just("commit"),
        st.integers(0, PARTITIONS - 1),
        st.lists(st.sampled_from(KEYS), min_size=1, max_size=4),
    ),
    st.tuples(st.just("poll")),
    st.tuples(st.just("replay"), st.integers(1, 3)),
    st.tuples(st.just("start_read"), st.integers(1, 3)),
    st.tuples(st.just("finish_read")),
    st.tuples(
        st.just("assign"),
        st.lists(st.tuples(st.integers(0, PARTITIONS - 1), st.integers(0, 30)), max_size=3),
    ),
    st.tuples(st.just("revoke"), st.integers(0, PARTITIONS - 1)),
    st.tuples(st.just("retention"), st.integers(0, PARTITIONS - 1), st.integers(1, 4)),
    st.tuples(st.just("buffer")),
    st.tuples(st.just("release"), st.integers(1, 4)),
    st.tuples(st.just("release_all")),
)


@dataclass
class Segment:
    """One assignment of one partition: where it started and what it delivered."""

    partition: int
    start: int
    delivered: list[int] = field(default_factory=list)
    open: bool = True
    conflated: dict[int, int] = field(default_factory=dict)  # offset -> its `conflated` count
    position: int = -1  # the last next_offsets() seen for it (they never go back)


class Model:
    def __init__(self, keys: frozenset[str] | None, tail_records: int, paced: bool = False) -> None:
        self.log: list[list[StoredRecord]] = [[] for _ in range(PARTITIONS)]
        self.log_start = [0] * PARTITIONS
        self.tails = {
            p: PartitionTail(TOPIC, 0, max_records=tail_records) for p in range(PARTITIONS)
        }
        self.sub = Subscription(keys, paced=paced)
        self.keys = keys
        self.segments: list[Segment] = []
        self.current: dict[int, Segment] = {}
        self.in_flight: list[tuple[ReplayRead, Sequence[Keyed], int]] = []

    def hwm(self, partition: int) -> int:
        return len(self.log[partition])

    def deliver(self, partition: int, offsets: list[int]) -> None:
        segment = self.current.get(partition)
        assert segment is not None, f"delivered partition {partition}, which is not assigned"
        segment.delivered.extend(offsets)

    def release(self, limit: int | None) -> bool:
        """As the driver does when the connection drains or a rate slot comes."""
        backlog = self.sub.backlog
        if backlog is None:
            return False
        taken = backlog.take(limit)
        for unsent in taken:
            self.deliver(unsent.partition, [unsent.offset])
            segment = self.current[unsent.partition]
            segment.conflated[unsent.offset] = unsent.conflated
        if not backlog:
            self.sub.stop_buffering()
        return bool(taken)

    def note_positions(self) -> None:
        for partition, position in self.sub.next_offsets().items():
            segment = self.current[partition]
            assert position >= segment.position, f"position of {partition} went back"
            segment.position = position

    def read(self, read: ReplayRead, limit: int) -> tuple[Sequence[Keyed], int]:
        """As the driver reads: from the tail while it holds the position, else from storage."""
        tail = self.tails[read.partition]
        if tail.start <= read.offset < tail.end:
            return tail.entries(read.offset)[:limit], tail.end
        start = max(read.offset, self.log_start[read.partition])
        return self.log[read.partition][start : start + limit], self.hwm(read.partition)

    def apply(self, read: ReplayRead, records: Sequence[Keyed], hwm_before: int) -> None:
        chosen = self.sub.replayed(read, records, hwm_before, self.tails)
        if chosen:
            self.deliver(read.partition, [r.offset for r in chosen])

    def poll(self) -> bool:
        deliveries = self.sub.poll(self.tails)
        for partition, tail, start, end, entries in deliveries:
            if entries is None:
                assert self.keys is None
                offsets = list(range(start, end))
                assert tail.joined(start, ENCODER) == b"".join(
                    ENCODER.record(TOPIC, r) for r in self.log[partition][start:end]
                )
            else:
                offsets = [e.offset for e in entries]
            self.deliver(partition, offsets)
        return bool(deliveries)

    def run(self, op: Op) -> None:
        kind = op[0]
        if kind == "commit":
            partition, keys = op[1], op[2]
            base = self.hwm(partition)
            new = [record(partition, base + i, k) for i, k in enumerate(keys)]
            self.log[partition].extend(new)
            self.tails[partition].append(new)
        elif kind == "poll":
            self.poll()
        elif kind == "replay":
            read = self.sub.replay_next()
            if read is not None:
                self.apply(read, *self.read(read, op[1]))
        elif kind == "start_read":
            read = self.sub.replay_next()
            if read is not None:
                self.in_flight.append((read, *self.read(read, op[1])))
        elif kind == "finish_read":
            if self.in_flight:
                self.apply(*self.in_flight.pop(0))
        elif kind == "assign":
            positions: dict[int, int] = {}
            for partition, offset in op[1]:
                positions[partition] = min(
                    max(offset, self.log_start[partition]), self.hwm(partition)
                )
            kept = self.sub.partitions
            for partition in list(self.current):
                if partition not in positions:
                    self.close(partition)
            self.sub.assign(positions, self.tails)
            for partition, offset in positions.items():
                if partition not in kept:
                    segment = Segment(partition, offset)
                    self.segments.append(segment)
                    self.current[partition] = segment
        elif kind == "revoke":
            if op[1] in self.current:
                self.close(op[1])
            self.sub.revoke(op[1])
        elif kind == "retention":
            partition = op[1]
            self.log_start[partition] = min(self.log_start[partition] + op[2], self.hwm(partition))
        elif kind == "buffer":
            self.sub.start_buffering()
        elif kind == "release":
            self.release(op[1])
        elif kind == "release_all":
            self.release(None)
        self.note_positions()

    def close(self, partition: int) -> None:
        """The partition's assignment ends: its segment keeps the position it had reached."""
        segment = self.current.pop(partition)
        segment.open = False
        segment.position = self.sub.next_offsets()[partition]

    def drain(self) -> None:
        for _ in range(10_000):
            progressed = self.poll()
            progressed = self.release(None) or progressed
            read = self.sub.replay_next()
            if read is not None:
                self.apply(read, *self.read(read, 5))
                progressed = True
            if not progressed:
                return
        raise AssertionError("delivery never settled")

    def check(self) -> None:
        for segment in self.segments:
            p = segment.partition
            got = segment.delivered
            assert got == sorted(set(got)), f"repeated or out of order on {p}: {got}"
            assert all(o >= segment.start for o in got), "delivered before the start"
            # What the segment had passed: everything, once drained; a closed one, up to its
            # position then (what a resume or the next group member starts from).
            end = self.hwm(p) if segment.open else segment.position
            delivered = set(got)
            dropped: dict[str | None, int] = {}  # per key: dropped since its last delivery
            # ...and per key, records retention removed meanwhile: the tail may have had them
            # (and conflated them), or not
            removed: dict[str | None, int] = {}
            for r in self.log[p][segment.start :]:
                wanted = self.keys is None or r.key in self.keys
                if not wanted:
                    assert r.offset not in delivered, f"delivered {r.offset}, keys= left it out"
                elif r.offset in delivered:
                    conflated = segment.conflated.get(r.offset, 0)
                    least = dropped.get(r.key, 0)
                    most = least + removed.get(r.key, 0)
                    assert least <= conflated <= most, f"wrong count on {p}:{r.offset}"
                    dropped[r.key] = removed[r.key] = 0
                elif r.offset < end and r.offset >= self.log_start[p]:
                    # Only a newer record of its key may take its place: delivered, or at or
                    # after the position (where the next reader starts).
                    assert r.key is not None, f"lost keyless record {p}:{r.offset}"
                    later = [
                        x.offset
                        for x in self.log[p][r.offset + 1 :]
                        if x.key == r.key and (x.offset in delivered or x.offset >= end)
                    ]
                    assert later, f"lost record {p}:{r.offset}"
                    dropped[r.key] = dropped.get(r.key, 0) + 1
                elif r.offset < end:
                    removed[r.key] = removed.get(r.key, 0) + 1
            if segment.open:
                assert self.sub.next_offsets()[p] == self.hwm(p)


@settings(max_examples=400, deadline=None)
@given(
    ops=st.lists(operation, max_size=60),
    keys=st.sampled_from([None, frozenset({"a"}), frozenset({"a", "b"})]),
    tail_records=st.integers(1, 6),
    paced=st.booleans(),
)
def test_no_interleaving_loses_or_repeats_a_record(
    ops: list[Op],
    keys: frozenset[str] | None,
    tail_records: int,
    paced: bool,
) -> None:
    model = Model(keys, tail_records, paced)
    model.run(("assign", [(0, 0), (1, 0)]))
    for op in ops:
        model.run(op)
    # Reads still in flight complete after everything else (stale ones must be ignored).
    while model.in_flight:
        model.run(("finish_read",))
    model.drain()
    model.check()


def test_a_position_the_tail_no_longer_holds_is_replayed_from_storage() -> None:
    model = Model(None, tail_records=2)
    model.run(("assign", [(0, 0)]))
    for _ in range(3):
        model.run(("commit", 0, ["a", "b"]))
    model.run(("poll",))  # the tail holds only 4 and 5: nothing from it, read storage
    assert model.current[0].delivered == []
    assert model.sub.replay_next() == ReplayRead(0, 0, 1)
    model.run(("replay", 3))
    assert model.current[0].delivered == [0, 1, 2]
    model.run(("replay", 3))  # reaches the tail: live from here, in the same step
    assert model.sub.is_live(0)
    model.run(("poll",))
    assert model.current[0].delivered == [0, 1, 2, 3, 4, 5]


def test_a_replay_read_that_completes_after_reassignment_is_ignored() -> None:
    model = Model(None, tail_records=1)
    model.run(("commit", 0, ["a", "a", "a"]))
    model.run(("assign", [(0, 0)]))
    model.run(("start_read", 3))
    model.run(("revoke", 0))
    model.run(("assign", [(0, 1)]))
    model.run(("finish_read",))  # read for the old assignment: nothing delivered
    assert model.current[0].delivered == []
    model.drain()
    assert model.current[0].delivered == [1, 2]


def test_skipped_keys_move_the_position() -> None:
    model = Model(frozenset({"a"}), tail_records=10)
    model.run(("assign", [(0, 0)]))
    model.run(("commit", 0, ["b", "a", "b"]))
    model.run(("poll",))
    assert model.current[0].delivered == [1]
    assert model.sub.next_offsets() == {0: 3}

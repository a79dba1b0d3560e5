"""The backlog of held-back records (per-key conflation) and the `max_rate` token bucket: pure
logic, tested directly with random sequences of records, takes and revocations."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eddy.broker.conflation import Backlog, RateBudget, Unsent

KEYS = ["a", "b", "c", None]
PARTITIONS = 2

step = st.one_of(
    st.tuples(st.just("add"), st.integers(0, PARTITIONS - 1), st.sampled_from(KEYS)),
    st.tuples(st.just("take"), st.integers(1, 3)),
    st.tuples(st.just("take_all")),
    st.tuples(st.just("discard"), st.integers(0, PARTITIONS - 1)),
)


@settings(max_examples=500, deadline=None)
@given(steps=st.lists(step, max_size=80))
def test_conflation_keeps_the_latest_value_of_every_key_and_counts_what_it_drops(
    steps: list[tuple[Any, ...]],
) -> None:
    backlog: Backlog[str] = Backlog()
    next_offset = [0] * PARTITIONS
    added: dict[int, list[tuple[int, str | None]]] = defaultdict(list)  # per partition
    taken: list[Unsent[str]] = []
    discarded_before: dict[int, int] = {}  # partition -> offsets below this were revoked
    for s in steps:
        if s[0] == "add":
            p, key = s[1], s[2]
            offset = next_offset[p]
            next_offset[p] += 1
            backlog.add(p, offset, key, 10, f"{p}:{offset}")
            added[p].append((offset, key))
        elif s[0] == "take":
            out = backlog.take(s[1])
            assert len(out) <= s[1]
            assert len(out) == s[1] or not backlog  # a limit is used up unless nothing is left
            taken += out
        elif s[0] == "take_all":
            taken += backlog.take()
            assert not backlog
        else:
            backlog.discard(s[1])
            discarded_before[s[1]] = next_offset[s[1]]
        for p in range(PARTITIONS):  # the oldest unsent offset: nothing below it is waiting
            first = backlog.first_offset(p)
            assert first is None or first < next_offset[p]
    held_keyless = backlog.keyless_bytes
    rest = backlog.take()
    assert held_keyless == 10 * sum(1 for u in rest if u.key is None)
    assert backlog.keyless_bytes == 0
    taken += rest
    taken_keys = [u.item for u in taken]
    assert len(taken_keys) == len(set(taken_keys)), "a record was taken twice"
    for p in range(PARTITIONS):
        mine = [u for u in taken if u.partition == p]
        offsets = [u.offset for u in mine]
        assert offsets == sorted(offsets), f"partition {p} out of order"
        cut = discarded_before.get(p, 0)
        log = added[p]
        # Replaying the log after the last revocation: every dropped record is counted by the
        # next taken one of its key, keyless ones are never dropped, and the last record of
        # every key is taken.
        got = {u.offset: u for u in mine}
        dropped: dict[str | None, int] = defaultdict(int)
        for offset, key in log:
            if offset < cut:
                continue  # revoked meanwhile: taken or not, what it held back is forgotten
            if offset in got:
                assert got[offset].key == key
                assert got[offset].conflated == dropped[key], f"wrong count at {p}:{offset}"
                dropped[key] = 0
            else:
                assert key is not None, f"keyless record {p}:{offset} was dropped"
                dropped[key] += 1
        last_of_key = {key: offset for offset, key in log}
        for key, offset in last_of_key.items():
            if offset >= cut:
                assert offset in got, f"the latest record of {key!r} on {p} was lost"


@settings(max_examples=200, deadline=None)
@given(
    changes=st.lists(st.sampled_from(["hot", "x", "y", "z"]), min_size=1, max_size=200),
    every=st.integers(1, 5),
)
def test_a_key_that_changes_faster_than_the_slots_cannot_starve_the_others(
    changes: list[str], every: int
) -> None:
    """One record per slot taken while records keep coming: each key's pending value goes out
    within two batches (at most 2 x keys slots), however often the others change."""
    backlog: Backlog[int] = Backlog()
    arrivals: dict[str, list[tuple[int, int]]] = defaultdict(list)  # key -> (offset, slot)
    slot = 0
    for offset, key in enumerate(changes):
        backlog.add(0, offset, key, 10, offset)
        arrivals[key].append((offset, slot))
        if offset % every == 0:
            slot += 1
            for unsent in backlog.take(1):
                assert unsent.key is not None
                covered = [s for o, s in arrivals[unsent.key] if o <= unsent.offset]
                arrivals[unsent.key] = [
                    (o, s) for o, s in arrivals[unsent.key] if o > unsent.offset
                ]
                assert slot - min(covered) <= 2 * 4, f"{unsent.key} waited too long"


def test_rate_budget_allows_the_rate_and_a_small_burst() -> None:
    budget = RateBudget(5, now=0.0)
    assert budget.available(0.0) == 1  # the first frame goes out at once
    budget.spend(1)
    assert budget.available(0.1) == 0
    assert budget.available(0.2) == 1
    budget.spend(1)
    assert budget.available(100.0) == 2  # an idle subscription saves up only a little
    sent, now = 0, 100.0
    while now < 110.0:  # a tick every 50 ms for 10 s, always something to send
        now += 0.05
        n = budget.available(now)
        budget.spend(n)
        sent += n
    assert 50 <= sent <= 52

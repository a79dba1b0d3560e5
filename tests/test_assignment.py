"""Consumer-group assignment rules (pure logic)."""

from __future__ import annotations

import itertools
import random

from eddy.broker.assignment import assign_partitions


def check_valid(partitions: int, members: list[str], result: dict[str, set[int]]) -> None:
    assert set(result) == set(members)
    owned = [p for parts in result.values() for p in parts]
    assert sorted(owned) == list(range(partitions))  # covering and disjoint
    counts = [len(parts) for parts in result.values()]
    assert max(counts) - min(counts) <= 1  # balanced


def test_every_partition_has_exactly_one_balanced_owner() -> None:
    for partitions, size in itertools.product(range(0, 13), range(1, 8)):
        members = [f"m{i}" for i in range(size)]
        check_valid(partitions, members, assign_partitions(partitions, members, {}))


def test_no_members_no_assignment() -> None:
    assert assign_partitions(4, [], {}) == {}


def test_sticky_when_a_member_joins() -> None:
    first = assign_partitions(4, ["a", "b"], {})
    second = assign_partitions(4, ["a", "b", "c"], first)
    check_valid(4, ["a", "b", "c"], second)
    # a and b only give partitions away; nothing moves between them
    assert second["a"] <= first["a"] and second["b"] <= first["b"]


def test_sticky_when_a_member_leaves() -> None:
    first = assign_partitions(6, ["a", "b", "c"], {})
    second = assign_partitions(6, ["a", "c"], first)
    check_valid(6, ["a", "c"], second)
    assert first["a"] <= second["a"] and first["c"] <= second["c"]


def test_random_sequences_of_joins_and_leaves_stay_valid_and_move_little() -> None:
    rng = random.Random(7)
    members: list[str] = []
    current: dict[str, set[int]] = {}
    for step in range(500):
        if members and (rng.random() < 0.4 or len(members) > 6):
            members.remove(rng.choice(members))
        else:
            members.append(f"m{step}")
        partitions = rng.choice([4, 4, 4, 7, 12])
        new = assign_partitions(partitions, members, current)
        if not members:
            assert new == {}
            continue
        check_valid(partitions, members, new)
        if partitions == 4 and members:
            for member in members:  # a surviving member keeps what its share allows
                kept = current.get(member, set()) & new[member]
                assert (
                    len(kept)
                    >= min(len(current.get(member, set()) & set(range(4))), len(new[member])) - 1
                )
        current = new

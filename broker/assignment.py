"""Partition assignment for consumer groups: balanced and sticky. Pure logic, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def assign_partitions(
    partitions: int, members: Sequence[str], previous: Mapping[str, set[int]]
) -> dict[str, set[int]]:
    """Give every partition to exactly one member, counts differing by at most one.

    Sticky: a member keeps as many of its previous partitions as its share allows, so a
    rebalance moves as few partitions as possible (a kept partition simply continues).
    Deterministic for the same inputs. Members are taken in the given order (join order).
    """
    if not members:
        return {}
    base, extra = divmod(partitions, len(members))
    # Members that already hold more get the "+1" slots first: fewer partitions move.
    by_holding = sorted(members, key=lambda m: (-len(previous.get(m, ())), members.index(m)))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_holding)}
    result: dict[str, set[int]] = {m: set() for m in members}
    taken: set[int] = set()
    for member in members:
        for partition in sorted(previous.get(member, ())):
            if (
                partition < partitions
                and partition not in taken
                and len(result[member]) < quota[member]
            ):
                result[member].add(partition)
                taken.add(partition)
    free = [p for p in range(partitions) if p not in taken]
    for member in members:
        while len(result[member]) < quota[member]:
            result[member].add(free.pop(0))
    return result

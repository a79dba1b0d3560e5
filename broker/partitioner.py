"""Choosing a partition for a record, exactly as Kafka's default partitioner does. Pure logic."""

from __future__ import annotations

import functools
import itertools

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as a signed 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    body_end = length - (length % 4)
    for i in range(0, body_end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = (h * _M) & _MASK32
        h ^= k
    tail = length % 4
    if tail == 3:
        h ^= data[body_end + 2] << 16
    if tail >= 2:
        h ^= data[body_end + 1] << 8
    if tail >= 1:
        h ^= data[body_end]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@functools.lru_cache(maxsize=65_536)
def partition_for_key(key: str, partitions: int) -> int:
    """``(murmur2(utf8(key)) & 0x7fffffff) % partitions``: where Kafka would put this key.

    Cached: keys repeat (symbols, customer ids) and murmur2 in Python costs microseconds."""
    if partitions == 1:
        return 0
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


class RoundRobin:
    """Spreads keyless records evenly over a topic's partitions."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next_partition(self, partitions: int) -> int:
        return next(self._counter) % partitions

"""The partitioner must put every key exactly where Kafka's default partitioner would."""

from __future__ import annotations

import random
import string
from collections import Counter

from kafka.partitioner.default import murmur2 as kafka_murmur2

from eddy.broker.partitioner import RoundRobin, murmur2, partition_for_key


def random_keys(count: int) -> list[str]:
    rng = random.Random(42)
    alphabet = string.ascii_letters + string.digits + "-_.:/ éü€中文😀"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def test_murmur2_matches_kafka_python_on_many_keys() -> None:
    for key in random_keys(20_000):
        data = key.encode("utf-8")
        # kafka-python returns the hash's 32 bits unsigned; Java (and Eddy) read them signed
        assert murmur2(data) & 0xFFFFFFFF == kafka_murmur2(data), key


def test_known_java_values() -> None:
    # Values from Kafka's own UtilsTest (org.apache.kafka.common.utils.UtilsTest#testMurmur2)
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        bytes([ord("a"), ord("b"), ord("c")]): 479470107,
    }
    for data, expected in cases.items():
        assert murmur2(data) == expected


def test_partition_for_key_uses_positive_hash_modulo() -> None:
    for key in random_keys(2_000):
        for partitions in (1, 3, 7, 12):
            expected = (kafka_murmur2(key.encode()) & 0x7FFFFFFF) % partitions
            assert partition_for_key(key, partitions) == expected


def test_round_robin_spreads_evenly() -> None:
    rr = RoundRobin()
    counts = Counter(rr.next_partition(4) for _ in range(400))
    assert counts == {0: 100, 1: 100, 2: 100, 3: 100}

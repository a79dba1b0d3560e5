"""The idempotent producer's sequence rule, as pure logic."""

from __future__ import annotations

from broker.idempotence import Append, OutOfOrder, Retry, check_sequence
from storage import AppendedRecord, ProducerEntry


def entry(sequence: int) -> ProducerEntry:
    return ProducerEntry(sequence, (AppendedRecord(0, sequence * 10, 1),))


def test_first_request_may_use_any_sequence() -> None:
    assert check_sequence([], [], 17) == Append()


def test_next_sequence_appends_and_others_are_out_of_order() -> None:
    committed = [entry(3), entry(4)]
    assert check_sequence(committed, [], 5) == Append()
    assert check_sequence(committed, [], 7) == OutOfOrder(5)
    assert check_sequence(committed, [], 1) == OutOfOrder(5)


def test_recent_sequences_are_retries_with_the_original_result() -> None:
    committed = [entry(s) for s in range(3, 8)]
    assert check_sequence(committed, [], 3) == Retry(entry(3))
    assert check_sequence(committed, [], 7) == Retry(entry(7))


def test_in_flight_sequences_count() -> None:
    committed = [entry(3)]
    assert check_sequence(committed, [4], 4) == Retry(None)
    assert check_sequence(committed, [4], 5) == Append()
    assert check_sequence(committed, [4, 5], 5) == Retry(None)
    assert check_sequence(committed, [4], 6) == OutOfOrder(5)
    assert check_sequence([], [9], 10) == Append()

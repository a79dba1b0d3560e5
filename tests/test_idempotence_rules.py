"""The idempotent producer's sequence rule, as pure logic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eddy.broker.idempotence import Append, OutOfOrder, Retry, check_sequence
from eddy.models.log import AppendedRecord
from eddy.storage import PRODUCER_HISTORY, PRODUCER_WINDOW, ProducerEntry, ProducerWindow


def entry(sequence: int, records: int = 1) -> ProducerEntry:
    return ProducerEntry(
        sequence, tuple(AppendedRecord(0, sequence * 10 + i, 1) for i in range(records))
    )


def window(*sequences: int) -> ProducerWindow:
    remembered = ProducerWindow()
    for sequence in sequences:
        remembered.add(entry(sequence))
    return remembered


def test_first_request_may_use_any_sequence() -> None:
    assert check_sequence(window(), {}, 17, 5) == Append()


def test_next_sequence_appends_and_others_are_out_of_order() -> None:
    committed = window(3, 4)
    assert check_sequence(committed, {}, 5, 5) == Append()
    assert check_sequence(committed, {}, 7, 5) == OutOfOrder(5)
    assert check_sequence(committed, {}, 1, 5) == OutOfOrder(5)


def test_recent_sequences_are_retries_with_the_original_result() -> None:
    committed = window(*range(3, 8))
    assert check_sequence(committed, {}, 3, 5) == Retry(entry(3))
    assert check_sequence(committed, {}, 7, 5) == Retry(entry(7))


def test_the_window_bounds_retries() -> None:
    committed = window(*range(100))
    assert check_sequence(committed, {}, 94, 5) == OutOfOrder(100)  # REST: the last five
    assert check_sequence(committed, {}, 95, 5) == Retry(entry(95))
    assert check_sequence(committed, {}, 0, PRODUCER_WINDOW) == Retry(entry(0))  # WebSocket


def test_in_flight_sequences_count() -> None:
    committed = window(3)
    assert check_sequence(committed, {4: None}, 4, 5) == Retry(None)
    assert check_sequence(committed, {4: None}, 5, 5) == Append()
    assert check_sequence(committed, {4: None, 5: None}, 5, 5) == Retry(None)
    assert check_sequence(committed, {4: None}, 6, 5) == OutOfOrder(5)
    assert check_sequence(window(), {9: None}, 10, 5) == Append()


@given(st.lists(st.integers(1, 3000), min_size=1, max_size=300))
def test_the_window_keeps_the_newest_and_bounds_the_records(sizes: list[int]) -> None:
    remembered = ProducerWindow()
    for sequence, size in enumerate(sizes):
        remembered.add(entry(sequence, size))
    kept = [e.sequence for e in remembered]
    assert kept == list(range(len(sizes) - len(kept), len(sizes)))  # the newest, contiguous
    assert len(kept) >= min(len(sizes), PRODUCER_HISTORY)
    records = sum(len(e.appended) for e in remembered)
    assert len(kept) <= PRODUCER_HISTORY or (
        len(kept) <= PRODUCER_WINDOW and records <= PRODUCER_WINDOW
    )
    assert remembered.last == len(sizes) - 1 and remembered.first == kept[0]

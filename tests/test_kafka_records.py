"""Pure parts of the Kafka listener: record batches both ways, the value mapping, and Kafka's
idempotent-producer sequence rule."""

from __future__ import annotations

from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from hypothesis import given
from hypothesis import strategies as st

from eddy.broker.idempotence import Append, Duplicate, OutOfOrder, Retry, check_record_sequence
from eddy.models.log import AppendedRecord, StoredRecord, ValueFormat
from eddy.routers.kafka.records import build_batch, read_produced, value_format
from eddy.storage import ProducerEntry, ProducerWindow

text = st.text(st.characters(codec="utf-8"), max_size=20)
records = st.lists(
    st.tuples(
        st.none() | text,
        st.none() | st.binary(max_size=40),
        st.dictionaries(text, text, max_size=3),
        st.integers(0, 2**41),
        st.integers(1, 3),  # offset step: compaction leaves gaps
    ),
    min_size=1,
    max_size=30,
)


@given(records)
def test_stored_records_survive_a_batch_round_trip(rows: list[tuple[Any, ...]]) -> None:
    stored, offset = [], 7
    for key, value, headers, timestamp, step in rows:
        stored.append(StoredRecord(0, offset, timestamp, key, value, ValueFormat.BINARY, headers))
        offset += step
    batch = read_produced(build_batch(stored), 0)
    assert [(d.key, d.value, d.headers, d.timestamp) for d in batch.drafts] == [
        (r.key, r.value, r.headers, r.timestamp) for r in stored
    ]


def test_compressed_batches_from_the_codec_are_read() -> None:
    for codec in (1, 2, 3, 4):  # gzip, snappy, lz4, zstd
        builder = DefaultRecordBatchBuilder(2, codec, 0, 42, 3, 10, 2**20)
        for i in range(5):
            builder.append(i, 1_700_000_000_000 + i, b"k", b'{"n":%d}' % i, [("h", b"v")])
        batch = read_produced(bytes(builder.build()), 2)
        assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (42, 3, 10)
        assert [d.value for d in batch.drafts] == [b'{"n":%d}' % i for i in range(5)]
        assert {d.partition for d in batch.drafts} == {2}
        assert {d.value_format for d in batch.drafts} == {ValueFormat.JSON}


def test_value_mapping() -> None:
    assert value_format(b'{"a": 1}') is ValueFormat.JSON
    assert value_format(b"123") is ValueFormat.JSON
    assert value_format(b'"text"') is ValueFormat.JSON
    assert value_format(b"text") is ValueFormat.BINARY
    assert value_format(b'{\n  "a": 1\n}') is ValueFormat.BINARY  # line breaks stay binary
    assert value_format(b"\xff") is ValueFormat.BINARY
    assert value_format(b"NaN") is ValueFormat.BINARY


def window(*batches: tuple[int, int]) -> ProducerWindow:
    """Committed batches as (base sequence, record count)."""
    w = ProducerWindow()
    offset = 0
    for sequence, count in batches:
        w.add(
            ProducerEntry(sequence, tuple(AppendedRecord(0, offset + i, 0) for i in range(count)))
        )
        offset += count
    return w


def test_kafka_sequence_rule() -> None:
    committed = window((0, 3), (3, 2))
    assert check_record_sequence(ProducerWindow(), {}, 0, 5) == Append()
    assert check_record_sequence(committed, {}, 5, 5) == Append(3)
    assert check_record_sequence(committed, {}, 3, 5) == Retry(committed.get(3))
    assert check_record_sequence(committed, {}, 7, 5) == OutOfOrder(5)
    assert check_record_sequence(committed, {}, 1, 5) == Duplicate()
    assert check_record_sequence(committed, {5: object()}, 5, 5) == Retry(None)
    assert check_record_sequence(committed, {5: object()}, 9, 5) == Append(5)
    wrapped = window((2**31 - 2, 2))
    assert check_record_sequence(wrapped, {}, 0, 5) == Append(2**31 - 2)

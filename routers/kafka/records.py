"""Record batches (Kafka's v2 format) to and from Eddy's records, with aiokafka's codec.

aiokafka's `record` package reads and builds v2 batches (CRC-32C, varints, gzip, snappy, lz4
and zstd through cramjam) in C; kio's own record module has no compression and truncates
timestamps to seconds, so it is not used for records.

Value mapping (the contract): a Kafka value is bytes. Valid UTF-8 JSON is stored as JSON, byte
for byte (so Kafka consumers read back exactly what was produced, and REST/WebSocket consumers
see it as `value`); anything else as binary (`value_base64`). JSON text with a raw line break
between its tokens is kept binary too: values are spliced into JSON lines and event streams
as they are stored, and a line break would split them. Keys must be UTF-8 (Eddy's keys are
text). Headers are kept exactly: order, repeated names, null values and bytes that are not UTF-8
(models/headers.py), so a Kafka consumer reads back the headers that were produced.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import cramjam
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from eddy.broker import RecordDraft, is_json_text
from eddy.models.errors import InvalidRequest
from eddy.models.headers import exact_headers, kafka_headers
from eddy.models.log import StoredRecord, ValueFormat
from eddy.routers.kafka.batch_cache import whole_batch

_BASE_OFFSET = struct.Struct(">q")
# A builder refuses appends past its batch size; a fetch's size is bounded by the read instead.
_NO_LIMIT = 2**31 - 1


class InvalidRecord(InvalidRequest):
    """A record Eddy cannot store (a key that is not UTF-8, a transactional batch)."""

    kafka_error = "invalid_record"


class CorruptBatch(InvalidRequest):
    """The bytes are not a valid record batch (bad CRC, truncated, unknown codec)."""

    kafka_error = "corrupt_message"


def value_format(value: bytes) -> ValueFormat:
    """JSON if `value` is valid UTF-8 JSON on one line, else binary."""
    if b"\n" in value or b"\r" in value:
        return ValueFormat.BINARY
    return ValueFormat.JSON if is_json_text(value) else ValueFormat.BINARY


def _text(data: bytes | None, what: str) -> str:
    try:
        return "" if data is None else data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRecord(f"{what} is not UTF-8 text; Eddy's keys are text") from None


@dataclass(frozen=True, slots=True)
class ProducedBatch:
    """The records of one partition's produce data, and the idempotent producer's numbering
    (producer_id -1: not idempotent)."""

    drafts: list[RecordDraft]
    producer_id: int
    producer_epoch: int
    base_sequence: int
    # The data itself when the stored records will be exactly what it says (one batch, see
    # routers/kafka/batch_cache.py), so fetches can be answered with it; else None.
    exact: bytes | None = None


def _check_magic(data: bytes) -> None:
    """Every batch in `data` says magic 2. aiokafka would read another magic as a legacy
    message set, and its C reader fails on some such bytes with a SystemError (a negative
    size) instead of a decoding error. Raises CorruptBatch."""
    position = 0
    while len(data) - position >= 17:  # offset, length, leader epoch: the magic byte follows
        if data[position + 16] != 2:
            raise CorruptBatch("only v2 record batches (magic 2) are accepted")
        length = int.from_bytes(data[position + 8 : position + 12], "big", signed=True)
        if length < 0:
            raise CorruptBatch("corrupt record batch: negative batch length")
        position += 12 + length


def read_produced(data: bytes, partition: int) -> ProducedBatch:
    """Decode a Produce request's records for one partition (one or more v2 batches).
    Raises CorruptBatch or InvalidRecord."""
    drafts: list[RecordDraft] = []
    producer_id, producer_epoch, base_sequence = -1, -1, -1
    new = tuple.__new__
    data = bytes(data)
    _check_magic(data)
    exact = whole_batch(data)
    try:
        batches = MemoryRecords(data)
        first = True
        while batches.has_next():
            batch = batches.next_batch()
            if not isinstance(batch, DefaultRecordBatch):
                raise CorruptBatch("only v2 record batches (magic 2) are accepted")
            if not batch.validate_crc():
                raise CorruptBatch("record batch CRC mismatch")
            if batch.is_transactional or batch.is_control_batch:
                raise InvalidRecord("transactions are not supported")
            if first:
                producer_id, producer_epoch = batch.producer_id, batch.producer_epoch
                base_sequence = batch.base_sequence
                first = False
            exact = exact and batch.timestamp_type == 0  # CreateTime: the producer's
            expected = batch.base_offset
            for record in batch:
                value = record.value
                timestamp = record.timestamp
                if exact and (timestamp is None or timestamp < 0 or record.offset != expected):
                    exact = False  # stored differently from the batch (see ProducedBatch)
                expected += 1
                drafts.append(
                    new(
                        RecordDraft,
                        (
                            None if record.key is None else _text(record.key, "key"),
                            value,
                            ValueFormat.JSON if value is None else value_format(value),
                            exact_headers(record.headers) if record.headers else {},
                            partition,
                            timestamp if timestamp is not None and timestamp >= 0 else None,
                        ),
                    )
                )
    except (CorruptRecordException, UnsupportedCodecError, struct.error, ValueError) as exc:
        raise CorruptBatch(f"corrupt record batch: {exc}") from None
    except (cramjam.DecompressionError, zlib.error, EOFError, OSError) as exc:
        # compressed bytes that do not decompress under the batch's codec (snappy, lz4 and
        # zstd decode through cramjam; gzip's errors are OSError, EOFError and zlib.error)
        raise CorruptBatch(f"corrupt record batch: cannot decompress it: {exc}") from None
    if not drafts:
        raise CorruptBatch("no records in the batch")
    return ProducedBatch(
        drafts, producer_id, producer_epoch, base_sequence, data if exact else None
    )


def build_batch(records: Sequence[StoredRecord]) -> bytes:
    """One uncompressed v2 batch of stored records (offsets kept, gaps allowed)."""
    base = records[0].offset
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, _NO_LIMIT)
    append = builder.append
    for r in records:
        key = None if r.key is None else r.key.encode()
        headers = kafka_headers(r.headers) if r.headers else []
        append(r.offset - base, r.timestamp, key, r.value, headers)
    data = builder.build()
    _BASE_OFFSET.pack_into(data, 0, base)  # the header's base offset is not under the CRC
    return bytes(data)

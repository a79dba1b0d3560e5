"""From what a client sent (JSON records or a raw body) to `RecordDraft`s for the producer."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, NamedTuple

import msgspec
import orjson
from pydantic import ValidationError

from eddy.broker.codec import check_text, decode_base64, dump_json, load_json, validation_error
from eddy.models.errors import InvalidRequest, UnsupportedMediaType
from eddy.models.headers import Headers, exact_headers, header_pairs
from eddy.models.log import ProducerSequence, ValueFormat
from eddy.models.records import MAX_INT32, MAX_INT64, ProduceBatch, ProducerRef, RecordIn

JSON_MEDIA_TYPES = ("application/json", "application/x-www-form-urlencoded")


class RecordDraft(NamedTuple):
    """A record as a client sent it, value encoded; partition and timestamp optional.
    (A named tuple: batches make a thousand of these per request, and a tuple is the cheapest
    immutable record to build.)"""

    key: str | None
    value: bytes | None
    value_format: ValueFormat
    headers: Headers
    partition: int | None = None
    timestamp: int | None = None


def draft_from_record(record: RecordIn) -> RecordDraft:
    if record.value_base64 is not None:
        if record.value is not None:
            raise InvalidRequest("give either value or value_base64, not both")
        value: bytes | None = decode_base64(record.value_base64)
        value_format = ValueFormat.BINARY
    else:
        value = None if record.value is None else dump_json(record.value)
        value_format = ValueFormat.JSON
    if record.key is not None:
        check_text(record.key, "key")
    # the list form becomes a dict again unless a dict would lose some of it
    sent = record.headers
    headers: Headers = sent if isinstance(sent, dict) else exact_headers(sent)
    for name, text in header_pairs(headers):
        check_text(name, "header name")
        if isinstance(text, str):
            check_text(text, f"header {name!r}")
    return RecordDraft(record.key, value, value_format, headers, record.partition, record.timestamp)


# A record object whose fields have exactly RecordIn's types, in range, and nothing that
# draft_from_record would refuse, becomes a draft here in one pass, without a model; it is the
# draft RecordIn.model_validate and draft_from_record make of it. On anything else (a coercion
# pydantic would do, an error to report) `plain_drafts` gives up and the whole body goes
# through the models, so their answers and error messages stay the only ones.
RECORD_FIELDS = frozenset(RecordIn.model_fields)
_BATCH_FIELDS = frozenset(ProduceBatch.model_fields)
_JSON, _BINARY = ValueFormat.JSON, ValueFormat.BINARY


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def plain_drafts(
    records: list[Any], text_is_valid: bool, fields: frozenset[str] = RECORD_FIELDS
) -> list[RecordDraft] | None:
    """The drafts of `records` if each is plain (see above), else None. `text_is_valid`: the
    parser guarantees every string is valid Unicode (orjson refuses lone surrogates). `fields`:
    the names a record may have (a model extending RecordIn allows more; the caller checks its
    own fields' values)."""
    drafts = []
    dumps = orjson.dumps
    new = tuple.__new__  # a RecordDraft without its Python-level __new__: half the cost
    for record in records:
        if type(record) is not dict or not fields.issuperset(record):
            return None
        key = record.get("key")
        headers = record.get("headers")
        partition = record.get("partition")
        timestamp = record.get("timestamp")
        if (
            (key is not None and type(key) is not str)
            or (
                partition is not None
                and (type(partition) is not int or not 0 <= partition <= MAX_INT32)
            )
            or (
                timestamp is not None
                and (type(timestamp) is not int or not 0 <= timestamp <= MAX_INT64)
            )
        ):
            return None
        if headers is None:
            if "headers" in record:
                return None
            headers = {}
        elif type(headers) is not dict or not all(
            type(k) is str and type(v) is str for k, v in headers.items()
        ):
            return None
        if not text_is_valid and not all(
            map(_valid_text, [*([] if key is None else [key]), *headers, *headers.values()])
        ):
            return None
        value_base64 = record.get("value_base64")
        value_format = _JSON
        try:
            if value_base64 is None:
                value = record.get("value")
                # A copy of orjson's bytes: orjson builds them in a malloc'd buffer it shrinks,
                # and a thousand such blocks freed together after the commit make malloc give
                # pages back to the kernel and fault them in again for the next batch (measured
                # ~3 us a record); the copy is a small-object (pymalloc) bytes, and orjson's
                # block is reused at once.
                encoded = None if value is None else bytes(memoryview(dumps(value)))
            elif type(value_base64) is str and record.get("value") is None:
                encoded = base64.b64decode(value_base64, validate=True)
                value_format = _BINARY
            else:
                return None
        except (orjson.JSONEncodeError, binascii.Error, ValueError):
            return None
        drafts.append(new(RecordDraft, (key, encoded, value_format, headers, partition, timestamp)))
    return drafts


# Batch bodies read and checked in one pass by msgspec, without a dict per record. orjson +
# `plain_drafts` was about half of the event loop's time per 1,000-record batch (py-spy, 4
# clients posting batches); msgspec decodes the body straight into typed structs, checking
# types and ranges in C as it parses: 0.92 us a record with each value re-encoded by orjson
# (the stored form stays the value's compact JSON) against 1.5 us. Only for bodies that start
# `{"records"` and records that are plain as above; anything else, or anything msgspec refuses
# (malformed JSON, a lone surrogate, an integer orjson cannot encode, ...), goes the usual
# way, whose answers and error messages stay the only ones (tests/test_drafts.py).
_Partition = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT32)]
_Timestamp = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    key: str | None = None
    value: Any = None
    value_base64: str | None = None
    headers: dict[str, str] | msgspec.UnsetType = msgspec.UNSET  # an explicit null is not plain
    partition: _Partition | None = None
    timestamp: _Timestamp | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    records: list[_Record]
    producer: Any = None


_decode = msgspec.json.Decoder(_Batch).decode
BATCH_PREFIX = b'{"records"'


def _struct_draft(r: _Record) -> RecordDraft | None:
    """A decoded plain record's draft (None: not plain after all, e.g. bad base64)."""
    value = r.value
    try:
        if r.value_base64 is None:
            # A copy of orjson's bytes (see plain_drafts: a small-object bytes, not orjson's
            # malloc'd buffer)
            encoded = None if value is None else bytes(memoryview(orjson.dumps(value)))
            value_format = _JSON
        elif value is None:
            encoded = base64.b64decode(r.value_base64, validate=True)
            value_format = _BINARY
        else:
            return None
    except (orjson.JSONEncodeError, binascii.Error, ValueError):
        return None
    headers = r.headers
    return tuple.__new__(
        RecordDraft,
        (
            r.key,
            encoded,
            value_format,
            {} if headers is msgspec.UNSET else headers,
            r.partition,
            r.timestamp,
        ),
    )


def batch_drafts(body: bytes) -> tuple[list[RecordDraft], Any] | None:
    """The drafts of a plain batch body and its `producer` as sent (None if absent), or None
    if the body is not a plain batch (then the caller reads it the usual way)."""
    try:
        batch = _decode(body)
    except (msgspec.DecodeError, RecursionError):  # (DecodeError includes ValidationError)
        return None
    records = batch.records
    if not records:
        return None
    drafts: list[RecordDraft] = []
    add, draft_of = drafts.append, _struct_draft
    for r in records:
        draft = draft_of(r)
        if draft is None:
            return None
        add(draft)
    return drafts, batch.producer


class _Frame(_Record, forbid_unknown_fields=True):
    """A WebSocket publish frame (models.frames.PublishFrame)."""

    id: str | int | None = None
    sequence: Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)] | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode


def frame_draft(frame: str) -> tuple[str | int | None, RecordDraft, int | None] | None:
    """A plain publish frame's id, draft and sequence, or None (then the caller reads it the
    usual way, which words any error)."""
    try:
        decoded = _decode_frame(frame)
    except (msgspec.DecodeError, RecursionError):  # (a value nested too deeply)
        return None
    draft = _struct_draft(decoded)
    return None if draft is None else (decoded.id, draft, decoded.sequence)


def _fast_drafts(
    data: dict[str, Any], text_is_valid: bool
) -> tuple[list[RecordDraft], ProducerSequence | None] | None:
    if "records" not in data:
        single = plain_drafts([data], text_is_valid)
        return None if single is None else (single, None)
    records = data["records"]
    if not _BATCH_FIELDS.issuperset(data) or type(records) is not list or not records:
        return None
    drafts = plain_drafts(records, text_is_valid)
    if drafts is None:
        return None
    if data.get("producer") is None:
        return drafts, None
    try:
        producer = ProducerRef.model_validate(data["producer"])
    except ValidationError:
        return None  # the whole batch's validation reports it, with its location
    return drafts, _producer(producer)


def _batch_with_producer(body: bytes) -> tuple[list[RecordDraft], ProducerSequence | None] | None:
    fast = batch_drafts(body)
    if fast is None:
        return None
    drafts, producer = fast
    if producer is None:
        return drafts, None
    try:
        return drafts, _producer(ProducerRef.model_validate(producer))
    except ValidationError:
        return None  # the whole batch's validation reports it, with its location


def _producer(producer: ProducerRef | None) -> ProducerSequence | None:
    return None if producer is None else ProducerSequence(producer.id, producer.sequence)


def drafts_from_body(
    body: bytes, content_type: str, key: str | None, partition: int | None
) -> tuple[list[RecordDraft], ProducerSequence | None]:
    """Parse a produce request body by its media type.

    application/json: one record object or {"records": [...]}; text/plain: the body is one
    record's value (a JSON string); application/octet-stream: the body is one binary value.
    """
    media_type = content_type.split(";", 1)[0].strip().lower() or "application/json"
    # `curl -d` labels bodies as a form unless told otherwise; Eddy has no form input, so such a
    # body is read as the JSON it almost certainly is.
    if media_type in JSON_MEDIA_TYPES or media_type.endswith("+json"):
        if key is not None or partition is not None:
            raise InvalidRequest("?key= and ?partition= apply to raw bodies; put them in the JSON")
        if body.startswith(BATCH_PREFIX):
            batch_fast = _batch_with_producer(body)
            if batch_fast is not None:
                return batch_fast
        data, text_is_valid = load_json(body)
        if not isinstance(data, dict):
            raise InvalidRequest('body must be a record object or {"records": [...]}')
        fast = _fast_drafts(data, text_is_valid)
        if fast is not None:
            return fast
        try:
            if "records" in data:
                batch = ProduceBatch.model_validate(data)
                return [draft_from_record(r) for r in batch.records], _producer(batch.producer)
            return [draft_from_record(RecordIn.model_validate(data))], None
        except ValidationError as exc:
            raise validation_error(exc) from None
    if media_type == "text/plain":
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(
                "text/plain body is not valid UTF-8; send bytes as application/octet-stream"
            ) from None
        # Kept as the text's own bytes (a JSON string to REST and WebSocket readers), so Kafka
        # clients read back exactly the body that was sent.
        return [RecordDraft(key, body, ValueFormat.TEXT, {}, partition)], None
    if media_type == "application/octet-stream":
        return [RecordDraft(key, body, ValueFormat.BINARY, {}, partition)], None
    raise UnsupportedMediaType(
        f"unsupported Content-Type '{media_type}'",
        {"supported": ["application/json", "text/plain", "application/octet-stream"]},
    )

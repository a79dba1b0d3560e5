"""From what a client sent (JSON records or a raw body) to `RecordDraft`s for the producer."""

from __future__ import annotations

import base64
import binascii
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from eddy.broker.codec import check_text, decode_base64, dump_json, load_json, validation_error
from eddy.models.errors import InvalidRequest, UnsupportedMediaType
from eddy.models.records import MAX_INT32, MAX_INT64, ProduceBatch, ProducerRef, RecordIn
from eddy.storage import Headers, ProducerSequence, ValueFormat, exact_headers
from eddy.storage.headers import header_pairs

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

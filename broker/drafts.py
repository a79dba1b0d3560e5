"""From what a client sent (JSON records or a raw body) to `RecordDraft`s for the producer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from broker.codec import check_text, decode_base64, dump_json, parse_json, validation_error
from models.errors import InvalidRequest, UnsupportedMediaType
from models.records import MAX_INT32, MAX_INT64, ProduceBatch, ProducerRef, RecordIn
from storage import ProducerSequence, ValueFormat

JSON_MEDIA_TYPES = ("application/json", "application/x-www-form-urlencoded")


@dataclass(frozen=True, slots=True)
class RecordDraft:
    """A record as a client sent it, value encoded; partition and timestamp optional."""

    key: str | None
    value: bytes | None
    value_format: ValueFormat
    headers: dict[str, str]
    partition: int | None = None
    timestamp: int | None = None


def draft_from_record(record: RecordIn) -> RecordDraft:
    return _draft(
        record.key,
        record.value,
        record.value_base64,
        record.headers,
        record.partition,
        record.timestamp,
    )


def _draft(
    key: str | None,
    value: Any,
    value_base64: str | None,
    headers: dict[str, str],
    partition: int | None,
    timestamp: int | None,
) -> RecordDraft:
    if value_base64 is not None:
        if value is not None:
            raise InvalidRequest("give either value or value_base64, not both")
        encoded: bytes | None = decode_base64(value_base64)
        value_format = ValueFormat.BINARY
    else:
        encoded = None if value is None else dump_json(value)
        value_format = ValueFormat.JSON
    if key is not None:
        check_text(key, "key")
    for name, text in headers.items():
        check_text(name, "header name")
        check_text(text, f"header {name!r}")
    return RecordDraft(key, encoded, value_format, headers, partition, timestamp)


# The fields of RecordIn. A record object that uses exactly these types is taken as it is (what
# RecordIn.model_validate would return for it, field by field); anything else (a missing type,
# a coercion pydantic would do, a range error) goes through the models, so their answers and
# error messages stay the only ones.
_RECORD_FIELDS = frozenset(RecordIn.model_fields)
_BATCH_FIELDS = frozenset(ProduceBatch.model_fields)
_Fields = tuple[str | None, Any, str | None, dict[str, str], int | None, int | None]
_NO_HEADERS: dict[str, str] = {}  # a marker: "headers" was not given


def _exact_int(value: Any, maximum: int) -> bool:
    return value is None or (type(value) is int and 0 <= value <= maximum)


def _plain_record(data: Any) -> _Fields | None:
    """The fields of a record object if it needs no validation beyond type checks, else None."""
    if type(data) is not dict or not _RECORD_FIELDS.issuperset(data):
        return None
    key = data.get("key")
    value_base64 = data.get("value_base64")
    headers = data.get("headers", _NO_HEADERS)
    partition = data.get("partition")
    timestamp = data.get("timestamp")
    if (
        (key is not None and type(key) is not str)
        or (value_base64 is not None and type(value_base64) is not str)
        or not _exact_int(partition, MAX_INT32)
        or not _exact_int(timestamp, MAX_INT64)
    ):
        return None
    if headers is _NO_HEADERS:
        headers = {}
    elif type(headers) is not dict or not all(
        type(k) is str and type(v) is str for k, v in headers.items()
    ):
        return None
    return key, data.get("value"), value_base64, headers, partition, timestamp


def _plain_batch(data: dict[str, Any]) -> list[_Fields] | None:
    """Every record's fields if all the batch's records need no more than type checks."""
    records = data["records"]
    if not _BATCH_FIELDS.issuperset(data) or type(records) is not list or not records:
        return None
    out = []
    for record in records:
        fields = _plain_record(record)
        if fields is None:
            return None
        out.append(fields)
    return out


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
        data = parse_json(body)
        if not isinstance(data, dict):
            raise InvalidRequest('body must be a record object or {"records": [...]}')
        # Validate everything before building any draft (a type error anywhere in the batch is
        # the answer even if an earlier record has, say, both value and value_base64).
        if "records" in data:
            plain_batch = _plain_batch(data)
            if plain_batch is not None:
                try:
                    producer = (
                        None
                        if data.get("producer") is None
                        else ProducerRef.model_validate(data["producer"])
                    )
                except ValidationError:
                    pass  # the whole batch's validation reports it, with its location
                else:
                    return [_draft(*fields) for fields in plain_batch], _producer(producer)
        else:
            plain = _plain_record(data)
            if plain is not None:
                return [_draft(*plain)], None
        try:
            if "records" in data:
                batch = ProduceBatch.model_validate(data)
                return [draft_from_record(r) for r in batch.records], _producer(batch.producer)
            return [draft_from_record(RecordIn.model_validate(data))], None
        except ValidationError as exc:
            raise validation_error(exc) from None
    if media_type == "text/plain":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(
                "text/plain body is not valid UTF-8; send bytes as application/octet-stream"
            ) from None
        return [RecordDraft(key, dump_json(text), ValueFormat.JSON, {}, partition)], None
    if media_type == "application/octet-stream":
        return [RecordDraft(key, body, ValueFormat.BINARY, {}, partition)], None
    raise UnsupportedMediaType(
        f"unsupported Content-Type '{media_type}'",
        {"supported": ["application/json", "text/plain", "application/octet-stream"]},
    )

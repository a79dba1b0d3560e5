"""From what a client sent (JSON records or a raw body) to `RecordDraft`s for the producer."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from broker.codec import check_text, decode_base64, dump_json, parse_json, validation_error
from models.errors import InvalidRequest, UnsupportedMediaType
from models.records import ProduceBatch, RecordIn
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
    for name, text in record.headers.items():
        check_text(name, "header name")
        check_text(text, f"header {name!r}")
    return RecordDraft(
        record.key, value, value_format, record.headers, record.partition, record.timestamp
    )


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
        try:
            if "records" in data:
                batch = ProduceBatch.model_validate(data)
                producer = batch.producer
                return [draft_from_record(r) for r in batch.records], (
                    None if producer is None else ProducerSequence(producer.id, producer.sequence)
                )
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

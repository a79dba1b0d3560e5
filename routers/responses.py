"""The error responses each operation declares in the OpenAPI document.

Every error body has the contract's one shape (`ErrorResponse`); what differs per operation is
which statuses it can answer and, per status, which codes. `errors(...)` builds FastAPI's
`responses=` declaration from sample errors, so every example is a real error the server
raises (the same class, code, status and message format), and a status lists all its codes.
"""

from __future__ import annotations

from typing import Any

from eddy.models.errors import (
    EddyError,
    ErrorResponse,
    Forbidden,
    GroupActive,
    GroupNotFound,
    InvalidRequest,
    OffsetOutOfRange,
    OutcomeUnknown,
    OutOfOrderSequence,
    PartitionNotFound,
    PayloadTooLarge,
    RateLimited,
    RecordTooLarge,
    TopicExists,
    TopicLimitReached,
    TopicNotFound,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)

Responses = dict[int | str, dict[str, Any]]

# One sample per error an operation can answer, worded as the broker words it.
INVALID = InvalidRequest(
    "body.partitions: Input should be greater than or equal to 1",
    {
        "errors": [
            {"loc": ["body", "partitions"], "msg": "Input should be greater than or equal to 1"}
        ]
    },
)
TOPIC_NOT_FOUND = TopicNotFound("prices")
PARTITION_NOT_FOUND = PartitionNotFound("prices", 7, 3)
GROUP_NOT_FOUND = GroupNotFound("billing")
TOPIC_EXISTS = TopicExists("prices")
TOPIC_LIMIT = TopicLimitReached("prices", 10_000)
GROUP_ACTIVE = GroupActive("group 'billing' has members; stop them first", {"group": "billing"})
OUT_OF_ORDER = OutOfOrderSequence(
    "producer 'phone-42' sent sequence 19; expected 18 (or a retry of one of the last 5)",
    {"producer_id": "phone-42", "sequence": 19, "expected": 18},
)
OFFSET_OUT_OF_RANGE = OffsetOutOfRange("prices", 0, 99, 0, 42)
RECORD_TOO_LARGE = RecordTooLarge(
    "record 0 is 2097152 bytes; this topic's max.message.bytes is 1048576",
    {"index": 0, "size": 2097152, "max_message_bytes": 1048576},
)
PAYLOAD_TOO_LARGE = PayloadTooLarge("request body exceeds 16777216 bytes", {"limit": 16_777_216})
UNSUPPORTED_MEDIA_TYPE = UnsupportedMediaType(
    "unsupported Content-Type 'application/xml'",
    {"supported": ["application/json", "text/plain", "application/octet-stream"]},
)
UNSUPPORTED_ENCODING = UnsupportedMediaType(
    "unsupported Content-Encoding 'br'", {"supported": ["gzip", "deflate", "identity"]}
)
UNAUTHORIZED = Unauthorized("missing or invalid credentials", {"reason": "invalid API key"})
FORBIDDEN = Forbidden("not allowed to write topic 'prices'", {"action": "write"})
RATE_LIMITED = RateLimited("produce rate limit of 100 requests/s reached", 0.25)
UNAVAILABLE = Unavailable("data dir is not writable: No space left on device")
BUSY = Unavailable(
    "topic 'prices' has too many writes pending; retry later",
    {"topic": "prices", "retry_after_seconds": 1},
    retry_after=1,
)
OUTCOME_UNKNOWN = OutcomeUnknown(
    "the Kafka cluster has not acknowledged the records sent to 'prices' within 5 s: they may "
    "be stored (now or once it is back) or not; a retry may store them twice",
    {"topic": "prices", "timeout_seconds": 5},
    retry_after=1,
)

_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 1},
}
_HEADER_DESCRIPTIONS = {"WWW-Authenticate": "The scheme to authenticate with"}


def _description(samples: list[EddyError]) -> str:
    """A status's description, from its errors' classes (each code once)."""
    described = {type(e).code: type(e).description for e in samples}
    if len(described) == 1:
        return next(iter(described.values()))
    return "; ".join(f"{code}: {text}" for code, text in described.items())


def _headers(samples: list[EddyError]) -> dict[str, Any]:
    """The headers app/errors.py adds to error responses of these errors (one status's)."""
    headers: dict[str, Any] = {}
    for sample in samples:
        for name, value in sample.http_headers.items():
            headers[name] = {
                "description": _HEADER_DESCRIPTIONS[name],
                "required": all(name in e.http_headers for e in samples),
                "schema": {"type": "string", "example": value},
            }
    retrying = [e.retry_after is not None for e in samples]
    if any(retrying):
        # Required only when every error of this status carries it (429 always does; a 503 only
        # when waiting is known to help).
        headers["Retry-After"] = {**_RETRY_AFTER, "required": all(retrying)}
    return headers


def _examples(samples: list[EddyError]) -> dict[str, Any]:
    """One named example per sample: its code (numbered when a code comes twice)."""
    examples: dict[str, Any] = {}
    for sample in samples:
        same = sum(1 for e in samples[: samples.index(sample)] if e.code == sample.code)
        name = sample.code if same == 0 else f"{sample.code}_{same + 1}"
        examples[name] = {"summary": sample.message, "value": sample.to_body()}
    return examples


def errors(*samples: EddyError) -> Responses:
    """FastAPI `responses=` for these errors: per status the error shape, one example per code
    and the headers the server sends with it."""
    by_status: dict[int, list[EddyError]] = {}
    for sample in samples:
        by_status.setdefault(sample.http_status, []).append(sample)
    responses: Responses = {}
    for status, group in sorted(by_status.items()):
        response: dict[str, Any] = {
            "model": ErrorResponse,
            "description": _description(group),
            "content": {"application/json": {"examples": _examples(group)}},
        }
        headers = _headers(group)
        if headers:
            response["headers"] = headers
        responses[status] = response
    return responses


# Every operation that identifies its caller can answer these (when access control is on).
AUTH = (UNAUTHORIZED, FORBIDDEN)

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
_DESCRIPTIONS = {
    401: "Missing or invalid credentials (access control on)",
    403: "Valid credentials without the permission (the body does not reveal whether the "
    "topic exists)",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported Content-Type or Content-Encoding",
    416: "Offset out of range (details: log_start_offset, high_watermark)",
    422: "Invalid request",
    429: "Produce rate limit reached (--produce-rate-limit)",
    503: "Storage unavailable or overloaded",
}


def _headers(status: int, samples: list[EddyError]) -> dict[str, Any]:
    """The headers app/errors.py adds to an error response of this status."""
    if status == 401:
        return {
            "WWW-Authenticate": {
                "description": "The scheme to authenticate with",
                "required": True,
                "schema": {"type": "string", "example": 'Bearer realm="eddy"'},
            }
        }
    retrying = [isinstance(e, RateLimited | Unavailable) and e.retry_after for e in samples]
    if any(retrying):
        # Required only when every error of this status carries it (429 always does; a 503 only
        # when waiting is known to help).
        return {"Retry-After": {**_RETRY_AFTER, "required": all(retrying)}}
    return {}


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
            "description": _DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"examples": _examples(group)}},
        }
        headers = _headers(status, group)
        if headers:
            response["headers"] = headers
        responses[status] = response
    return responses


# Every operation that identifies its caller can answer these (when access control is on).
AUTH = (UNAUTHORIZED, FORBIDDEN)

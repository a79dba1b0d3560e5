"""Eddy's error tree and the one JSON shape every error takes.

    EddyError                       code              HTTP
    ├── InvalidRequest              invalid_request   422
    ├── NotFound
    │   ├── TopicNotFound           topic_not_found   404
    │   ├── PartitionNotFound       partition_not_found 404
    │   └── RouteNotFound           not_found         404
    ├── MethodNotAllowed            method_not_allowed 405
    │   └── GroupNotFound           group_not_found   404
    ├── TopicExists                 topic_exists      409
    ├── GroupActive                 group_active      409
    ├── TopicLimitReached           topic_limit_reached 409
    ├── NotAssigned                 not_assigned      409
    ├── OutOfOrderSequence          out_of_order_sequence 409
    ├── OffsetOutOfRange            offset_out_of_range 416
    ├── RecordTooLarge              record_too_large  413
    ├── PayloadTooLarge             payload_too_large 413
    ├── Unauthorized                unauthorized      401
    ├── Forbidden                   forbidden         403
    ├── RateLimited                 rate_limited      429
    ├── UnsupportedMediaType        unsupported_media_type 415
    ├── Unavailable                 unavailable       503
    │   └── OutcomeUnknown          outcome_unknown   503   (Kafka engine: sent, not acked)
    ├── MalformedRequest            malformed_request 400   (HTTP only: bad framing)
    ├── RequestTimeout              request_timeout   408   (HTTP only: head too slow)
    └── HeadersTooLarge             headers_too_large 431   (HTTP only: head too large)

Every layer raises these; ``app/errors.py`` turns them into responses in exactly one place and
the WebSocket transport turns them into error frames and close codes (one table in
``routers/ws/close_codes.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field


class EddyError(Exception):
    """Base class: carries the contract's error code and HTTP status."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        """The contract's JSON error shape."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def to_frame(self, **extra: Any) -> dict[str, Any]:
        """The WebSocket error frame (`extra`: e.g. the publish frame's `id`)."""
        return {
            "type": "error",
            **extra,
            "code": self.code,
            "message": self.message,
            "details": self.details,
        }


class InvalidRequest(EddyError):
    code = "invalid_request"
    http_status = 422


class TopicNotFound(EddyError):
    code = "topic_not_found"
    http_status = 404

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic '{topic}' does not exist", {"topic": topic})


class PartitionNotFound(EddyError):
    code = "partition_not_found"
    http_status = 404

    def __init__(self, topic: str, partition: int, partitions: int) -> None:
        super().__init__(
            f"topic '{topic}' has no partition {partition} (it has {partitions})",
            {"topic": topic, "partition": partition, "partitions": partitions},
        )


class RouteNotFound(EddyError):
    code = "not_found"
    http_status = 404


class MethodNotAllowed(EddyError):
    code = "method_not_allowed"
    http_status = 405


class TopicExists(EddyError):
    code = "topic_exists"
    http_status = 409

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic '{topic}' already exists", {"topic": topic})


class GroupNotFound(EddyError):
    code = "group_not_found"
    http_status = 404

    def __init__(self, group: str) -> None:
        super().__init__(f"consumer group '{group}' does not exist", {"group": group})


class GroupActive(EddyError):
    code = "group_active"
    http_status = 409


class TopicLimitReached(EddyError):
    """--max-topics exist already: creating another (explicitly or by auto-create) is refused."""

    code = "topic_limit_reached"
    http_status = 409

    def __init__(self, topic: str, limit: int) -> None:
        super().__init__(
            f"cannot create topic '{topic}': the server's limit of {limit} topics is reached",
            {"topic": topic, "max_topics": limit},
        )


class NotAssigned(EddyError):
    """A commit for a partition the member does not own (any more)."""

    code = "not_assigned"
    http_status = 409


class OutOfOrderSequence(EddyError):
    """An idempotent producer skipped or reused a sequence number."""

    code = "out_of_order_sequence"
    http_status = 409


class DuplicateSequence(EddyError):
    """An idempotent Kafka producer resent a batch committed long ago (Kafka's
    DUPLICATE_SEQUENCE_NUMBER)."""

    code = "duplicate_sequence"
    http_status = 409


class OffsetOutOfRange(EddyError):
    code = "offset_out_of_range"
    http_status = 416

    def __init__(
        self, topic: str, partition: int, offset: int, log_start_offset: int, high_watermark: int
    ) -> None:
        super().__init__(
            f"offset {offset} is out of range for {topic}/{partition} "
            f"(valid: {log_start_offset}..{high_watermark})",
            {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "log_start_offset": log_start_offset,
                "high_watermark": high_watermark,
            },
        )


class RecordTooLarge(EddyError):
    code = "record_too_large"
    http_status = 413


class Unauthorized(EddyError):
    code = "unauthorized"
    http_status = 401


class Forbidden(EddyError):
    code = "forbidden"
    http_status = 403


class RateLimited(EddyError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, {"retry_after_seconds": round(retry_after, 3)})
        self.retry_after = retry_after


class PayloadTooLarge(EddyError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(EddyError):
    code = "unsupported_media_type"
    http_status = 415


class Unavailable(EddyError):
    code = "unavailable"
    http_status = 503

    def __init__(
        self, message: str, details: dict[str, Any] | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after  # seconds, when waiting is known to help (Retry-After)


class OutcomeUnknown(Unavailable):
    """The Kafka engine handed the records to its cluster and got no acknowledgement within
    --kafka-produce-timeout (the connection was lost, or the cluster is away): they may be
    stored, now or once the cluster is back, or not at all. A plain retry may store them twice
    (unlike `unavailable`, which says they were not sent). WebSocket: an error frame with the
    publish's `id` (the connection stays open); close code 1011 where an error closes one."""

    code = "outcome_unknown"


class MalformedRequest(EddyError):
    """The request's framing cannot be trusted (e.g. HTTP/1.0 with Transfer-Encoding)."""

    code = "malformed_request"
    http_status = 400


class RequestTimeout(EddyError):
    """The client did not send its request head in time (slowloris)."""

    code = "request_timeout"
    http_status = 408


class HeadersTooLarge(EddyError):
    """The request head has more bytes or more headers than the server accepts."""

    code = "headers_too_large"
    http_status = 431


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable error code", examples=["topic_not_found"])
    message: str = Field(description="What went wrong, for humans")
    details: dict[str, Any] = Field(default_factory=dict, description="Code-specific fields")


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorBody

"""Eddy's error tree, each error's codes on every transport, and the one JSON shape they take.

    EddyError                code                   HTTP  WebSocket  Kafka
    ├── InvalidRequest       invalid_request        422   4400       INVALID_REQUEST
    ├── TopicNotFound        topic_not_found        404   4404       UNKNOWN_TOPIC_OR_PARTITION
    ├── PartitionNotFound    partition_not_found    404   4400       UNKNOWN_TOPIC_OR_PARTITION
    ├── RouteNotFound        not_found              404   4404       INVALID_REQUEST
    ├── MethodNotAllowed     method_not_allowed     405   4400       INVALID_REQUEST
    ├── TopicExists          topic_exists           409   4400       TOPIC_ALREADY_EXISTS
    ├── GroupNotFound        group_not_found        404   4400       GROUP_ID_NOT_FOUND
    ├── GroupActive          group_active           409   4400       NON_EMPTY_GROUP
    ├── TopicLimitReached    topic_limit_reached    409   4400       POLICY_VIOLATION
    ├── NotAssigned          not_assigned           409   4400       ILLEGAL_GENERATION
    ├── OutOfOrderSequence   out_of_order_sequence  409   4400       OUT_OF_ORDER_SEQUENCE_NUMBER
    ├── DuplicateSequence    duplicate_sequence     409   4400       DUPLICATE_SEQUENCE_NUMBER
    ├── OffsetOutOfRange     offset_out_of_range    416   4400       OFFSET_OUT_OF_RANGE
    ├── RecordTooLarge       record_too_large       413   4400       MESSAGE_TOO_LARGE
    ├── Unauthorized         unauthorized           401   4401       *_AUTHORIZATION_FAILED
    ├── Forbidden            forbidden              403   4403       *_AUTHORIZATION_FAILED
    ├── RateLimited          rate_limited           429   4429       THROTTLING_QUOTA_EXCEEDED
    ├── PayloadTooLarge      payload_too_large      413   1009       RECORD_LIST_TOO_LARGE
    ├── UnsupportedMediaType unsupported_media_type 415   4400       INVALID_REQUEST
    ├── Unavailable          unavailable            503   1011       KAFKA_STORAGE_ERROR
    │   └── OutcomeUnknown   outcome_unknown        503   1011       REQUEST_TIMED_OUT
    ├── MalformedRequest     malformed_request      400   (HTTP only: bad framing)
    ├── RequestTimeout       request_timeout        408   (HTTP only: head too slow)
    └── HeadersTooLarge      headers_too_large      431   (HTTP only: head too large)

Each class states its codes as data (`code`, `http_status`, `ws_close_code`, `kafka_error`: a
Kafka error code's name, `description`: for the OpenAPI document); a subclass that keeps its
parent's code refines it and inherits the rest. Every table the transports use is derived from
these: app/errors.py (HTTP responses), routers/responses.py (the OpenAPI declarations),
routers/ws/close_codes.py and routers/kafka/errors.py; tests/test_error_table.py checks that
every class states all of them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

CLOSE_MESSAGE_TOO_BIG = 1009  # RFC 6455
CLOSE_INTERNAL_ERROR = 1011  # RFC 6455


class EddyError(Exception):
    """Base class: the contract's error code and what each transport answers with it."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    ws_close_code: ClassVar[int] = CLOSE_INTERNAL_ERROR
    kafka_error: ClassVar[str] = "unknown_server_error"  # kio's `ErrorCode` member name
    # Access errors name what was refused: a group's differs from a topic's on Kafka.
    kafka_group_error: ClassVar[str | None] = None
    description: ClassVar[str] = "Internal error"
    # Headers an HTTP response of this error carries (Retry-After is added from `retry_after`).
    http_headers: ClassVar[dict[str, str]] = {}
    retry_after: float | None = None  # seconds, when waiting is known to help (Retry-After)

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
    ws_close_code = 4400
    kafka_error = "invalid_request"
    description = "Invalid request"


class TopicNotFound(EddyError):
    code = "topic_not_found"
    http_status = 404
    ws_close_code = 4404
    kafka_error = "unknown_topic_or_partition"
    description = "The topic does not exist"

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic '{topic}' does not exist", {"topic": topic})


class PartitionNotFound(EddyError):
    code = "partition_not_found"
    http_status = 404
    ws_close_code = 4400
    kafka_error = "unknown_topic_or_partition"
    description = "The topic has no such partition"

    def __init__(self, topic: str, partition: int, partitions: int) -> None:
        super().__init__(
            f"topic '{topic}' has no partition {partition} (it has {partitions})",
            {"topic": topic, "partition": partition, "partitions": partitions},
        )


class RouteNotFound(EddyError):
    code = "not_found"
    http_status = 404
    ws_close_code = 4404
    kafka_error = "invalid_request"
    description = "No route at this path"


class MethodNotAllowed(EddyError):
    code = "method_not_allowed"
    http_status = 405
    ws_close_code = 4400
    kafka_error = "invalid_request"
    description = "The path does not serve this method (Allow lists those it does)"


class TopicExists(EddyError):
    code = "topic_exists"
    http_status = 409
    ws_close_code = 4400
    kafka_error = "topic_already_exists"
    description = "The topic exists already"

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic '{topic}' already exists", {"topic": topic})


class GroupNotFound(EddyError):
    code = "group_not_found"
    http_status = 404
    ws_close_code = 4400
    kafka_error = "group_id_not_found"
    description = "The consumer group does not exist"

    def __init__(self, group: str) -> None:
        super().__init__(f"consumer group '{group}' does not exist", {"group": group})


class GroupActive(EddyError):
    code = "group_active"
    http_status = 409
    ws_close_code = 4400
    kafka_error = "non_empty_group"
    description = "The group has members; stop them first"


class TopicLimitReached(EddyError):
    """--max-topics exist already: creating another (explicitly or by auto-create) is refused."""

    code = "topic_limit_reached"
    http_status = 409
    ws_close_code = 4400
    kafka_error = "policy_violation"
    description = "The server's limit of topics (--max-topics) is reached"

    def __init__(self, topic: str, limit: int) -> None:
        super().__init__(
            f"cannot create topic '{topic}': the server's limit of {limit} topics is reached",
            {"topic": topic, "max_topics": limit},
        )


class NotAssigned(EddyError):
    """A commit for a partition the member does not own (any more)."""

    code = "not_assigned"
    http_status = 409
    ws_close_code = 4400
    kafka_error = "illegal_generation"
    description = "The member does not own the partition (any more)"


class OutOfOrderSequence(EddyError):
    """An idempotent producer skipped or reused a sequence number."""

    code = "out_of_order_sequence"
    http_status = 409
    ws_close_code = 4400
    kafka_error = "out_of_order_sequence_number"
    description = "The idempotent producer skipped or reused a sequence number"


class DuplicateSequence(EddyError):
    """An idempotent Kafka producer resent a batch committed long ago (Kafka's
    DUPLICATE_SEQUENCE_NUMBER)."""

    code = "duplicate_sequence"
    http_status = 409
    ws_close_code = 4400
    kafka_error = "duplicate_sequence_number"
    description = "The idempotent producer resent a batch committed long ago"


class OffsetOutOfRange(EddyError):
    code = "offset_out_of_range"
    http_status = 416
    ws_close_code = 4400
    kafka_error = "offset_out_of_range"
    description = "Offset out of range (details: log_start_offset, high_watermark)"

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
    ws_close_code = 4400
    kafka_error = "message_too_large"
    description = "A record exceeds the topic's max.message.bytes"


class Unauthorized(EddyError):
    code = "unauthorized"
    http_status = 401
    ws_close_code = 4401
    kafka_error = "topic_authorization_failed"
    kafka_group_error = "group_authorization_failed"
    http_headers = {"WWW-Authenticate": 'Bearer realm="eddy"'}  # noqa: RUF012 (read only)
    description = "Missing or invalid credentials (access control on)"


class Forbidden(EddyError):
    code = "forbidden"
    http_status = 403
    ws_close_code = 4403
    kafka_error = "topic_authorization_failed"
    kafka_group_error = "group_authorization_failed"
    description = (
        "Valid credentials without the permission (the body does not reveal whether the "
        "topic exists)"
    )


class RateLimited(EddyError):
    code = "rate_limited"
    http_status = 429
    ws_close_code = 4429
    kafka_error = "throttling_quota_exceeded"
    description = "Produce rate limit reached (--produce-rate-limit)"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, {"retry_after_seconds": round(retry_after, 3)})
        self.retry_after = retry_after


class PayloadTooLarge(EddyError):
    code = "payload_too_large"
    http_status = 413
    ws_close_code = CLOSE_MESSAGE_TOO_BIG
    kafka_error = "record_list_too_large"
    description = "The request body or frame exceeds --max-request-bytes"


class UnsupportedMediaType(EddyError):
    code = "unsupported_media_type"
    http_status = 415
    ws_close_code = 4400
    kafka_error = "invalid_request"
    description = "Unsupported Content-Type or Content-Encoding"


class Unavailable(EddyError):
    code = "unavailable"
    http_status = 503
    ws_close_code = CLOSE_INTERNAL_ERROR
    kafka_error = "kafka_storage_error"
    description = "Storage unavailable or overloaded"

    def __init__(
        self, message: str, details: dict[str, Any] | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


class OutcomeUnknown(Unavailable):
    """The Kafka engine handed the records to its cluster and got no acknowledgement within
    --kafka-produce-timeout (the connection was lost, or the cluster is away): they may be
    stored, now or once the cluster is back, or not at all. A plain retry may store them twice
    (unlike `unavailable`, which says they were not sent). WebSocket: an error frame with the
    publish's `id` (the connection stays open); close code 1011 where an error closes one.
    Kafka's REQUEST_TIMED_OUT says the same to a Kafka producer (Kafka answers it when
    replication did not finish in time)."""

    code = "outcome_unknown"
    http_status = 503
    ws_close_code = CLOSE_INTERNAL_ERROR
    kafka_error = "request_timed_out"
    description = (
        "Kafka engine: sent to the cluster, not acknowledged within --kafka-produce-timeout "
        "(may be stored; a retry may duplicate)"
    )


class MalformedRequest(EddyError):
    """The request's framing cannot be trusted (e.g. HTTP/1.0 with Transfer-Encoding)."""

    code = "malformed_request"
    http_status = 400
    ws_close_code = 4400
    kafka_error = "corrupt_message"
    description = "The request's framing cannot be trusted"


class RequestTimeout(EddyError):
    """The client did not send its request head in time (slowloris)."""

    code = "request_timeout"
    http_status = 408
    ws_close_code = 4408
    kafka_error = "request_timed_out"
    description = "The request head did not arrive in time"


class HeadersTooLarge(EddyError):
    """The request head has more bytes or more headers than the server accepts."""

    code = "headers_too_large"
    http_status = 431
    ws_close_code = CLOSE_MESSAGE_TOO_BIG
    kafka_error = "invalid_request"
    description = "The request head is too large"


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable error code", examples=["topic_not_found"])
    message: str = Field(description="What went wrong, for humans")
    details: dict[str, Any] = Field(default_factory=dict, description="Code-specific fields")


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorBody

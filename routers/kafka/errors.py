"""Eddy's domain errors as Kafka error codes: the one table the handlers answer with."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from eddy.models.errors import (
    DuplicateSequence,
    EddyError,
    Forbidden,
    GroupActive,
    GroupNotFound,
    InvalidRequest,
    NotAssigned,
    OffsetOutOfRange,
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
)

_TABLE: tuple[tuple[type[EddyError], ErrorCode], ...] = (
    (TopicNotFound, ErrorCode.unknown_topic_or_partition),
    (PartitionNotFound, ErrorCode.unknown_topic_or_partition),
    (TopicExists, ErrorCode.topic_already_exists),
    (TopicLimitReached, ErrorCode.policy_violation),
    (OffsetOutOfRange, ErrorCode.offset_out_of_range),
    (RecordTooLarge, ErrorCode.message_too_large),
    (PayloadTooLarge, ErrorCode.record_list_too_large),
    (OutOfOrderSequence, ErrorCode.out_of_order_sequence_number),
    (DuplicateSequence, ErrorCode.duplicate_sequence_number),
    (GroupNotFound, ErrorCode.group_id_not_found),
    (GroupActive, ErrorCode.non_empty_group),
    (NotAssigned, ErrorCode.illegal_generation),
    (RateLimited, ErrorCode.throttling_quota_exceeded),
    (Unavailable, ErrorCode.kafka_storage_error),
    (InvalidRequest, ErrorCode.invalid_request),
)


def error_code(exc: EddyError, what: str = "topic") -> ErrorCode:
    """The Kafka code for a domain error. Access errors depend on what was refused: a topic,
    a group or (creating/deleting) the cluster's topics."""
    if isinstance(exc, Unauthorized | Forbidden):
        return (
            ErrorCode.group_authorization_failed
            if what == "group"
            else ErrorCode.topic_authorization_failed
        )
    for cls, code in _TABLE:
        if isinstance(exc, cls):
            return code
    return ErrorCode.unknown_server_error

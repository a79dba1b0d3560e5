"""Eddy's domain errors as Kafka error codes: each error class names its own (`kafka_error`,
models/errors.py, beside its HTTP status and WebSocket close code)."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from eddy.models.errors import EddyError


def error_code(exc: EddyError, what: str = "topic") -> ErrorCode:
    """The Kafka code for a domain error. Access errors depend on what was refused: a topic
    or a group."""
    if what == "group" and exc.kafka_group_error is not None:
        return ErrorCode[exc.kafka_group_error]
    return ErrorCode[exc.kafka_error]

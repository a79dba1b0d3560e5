"""Each error class states its code on every transport (HTTP status, WebSocket close code, Kafka
error code) as data, and the transports' tables are that data."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode

import eddy.broker.access
import eddy.routers.kafka.records  # defines error subclasses
from eddy.models.errors import EddyError
from eddy.routers.kafka.errors import error_code
from eddy.routers.ws.close_codes import error_close_code

OWN = ("code", "http_status", "ws_close_code", "kafka_error", "description")


def tree(cls: type[EddyError]) -> list[type[EddyError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *tree(sub)]
    return found


ERRORS = tree(EddyError)


def test_the_tree_is_all_found() -> None:
    names = {cls.__name__ for cls in ERRORS}
    assert {"TopicNotFound", "AuthenticationFailed", "CorruptBatch", "HeadersTooLarge"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_states_its_code_on_every_transport(cls: type[EddyError]) -> None:
    if "code" in vars(cls):
        missing = [name for name in OWN if name not in vars(cls)]
        assert not missing, f"{cls.__name__} does not state {missing}"
    else:
        # A refinement of its parent's error (same code): at most a more precise Kafka code.
        assert not {"http_status", "ws_close_code"} & set(vars(cls))
        assert any("code" in vars(base) for base in cls.__mro__[1:-1])
    assert 400 <= cls.http_status < 600
    assert cls.ws_close_code in (1008, 1009, 1011) or 4000 <= cls.ws_close_code < 5000
    assert ErrorCode[cls.kafka_error] is not ErrorCode.none
    if cls.kafka_group_error is not None:
        assert ErrorCode[cls.kafka_group_error] is not ErrorCode.none


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_the_transports_answer_with_the_class_codes(cls: type[EddyError]) -> None:
    error = cls.__new__(cls)  # the codes are the class's: no need for each one's arguments
    EddyError.__init__(error, "sample")
    assert error_close_code(error) == cls.ws_close_code
    assert error_code(error) == ErrorCode[cls.kafka_error]
    assert error_code(error, what="group") == ErrorCode[cls.kafka_group_error or cls.kafka_error]


def test_access_errors_name_what_was_refused_on_kafka() -> None:
    refused = eddy.broker.access.AuthenticationFailed("expired", "token expired")
    assert error_code(refused) is ErrorCode.topic_authorization_failed
    assert error_code(refused, what="group") is ErrorCode.group_authorization_failed

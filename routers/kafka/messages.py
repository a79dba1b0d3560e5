"""Kafka request/response messages through kio: the versions Eddy speaks, reading a request,
writing a response.

kio generates one frozen dataclass per API version from Kafka's own JSON schemas, with the
encoding details introspectable, so this module never hand-writes a field. Handlers are written
once for all versions of an API: they read requests by attribute (a field a version lacks is
read with `getattr` and a default) and describe responses as plain dicts, which `build` turns
into the version's dataclass, filling what a version has and the handler did not say with
Kafka's defaults (or the type's zero value).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import types
import typing
import uuid
from collections.abc import Mapping
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from eddy.routers.kafka import tagged

# API key -> (name, lowest, highest version Eddy answers). The highest is capped where a later
# version would need what Eddy does not have: topic ids (Fetch 13, Metadata 10+ answer them),
# batched group keys (FindCoordinator 4, OffsetFetch 8) or KIP-848 member epochs.
SUPPORTED: dict[int, tuple[str, int, int]] = {
    0: ("Produce", 3, 9),
    1: ("Fetch", 4, 12),
    2: ("ListOffsets", 1, 7),
    3: ("Metadata", 0, 9),
    8: ("OffsetCommit", 2, 8),
    9: ("OffsetFetch", 1, 7),
    10: ("FindCoordinator", 0, 3),
    11: ("JoinGroup", 0, 7),
    12: ("Heartbeat", 0, 4),
    13: ("LeaveGroup", 0, 4),
    14: ("SyncGroup", 0, 5),
    15: ("DescribeGroups", 0, 5),
    16: ("ListGroups", 0, 4),
    17: ("SaslHandshake", 1, 1),
    18: ("ApiVersions", 0, 3),
    19: ("CreateTopics", 2, 5),
    20: ("DeleteTopics", 1, 5),
    22: ("InitProducerId", 0, 4),
    32: ("DescribeConfigs", 1, 4),
    33: ("AlterConfigs", 0, 2),
    36: ("SaslAuthenticate", 0, 2),
    37: ("CreatePartitions", 0, 3),
    42: ("DeleteGroups", 0, 2),
    44: ("IncrementalAlterConfigs", 0, 1),
}
API_VERSIONS = 18
PRODUCE = 0


def supported(api_key: int, version: int) -> bool:
    entry = SUPPORTED.get(api_key)
    return entry is not None and entry[1] <= version <= entry[2]


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    api_key: int
    version: int
    correlation_id: int
    client_id: str | None
    body: Any  # the version's kio request dataclass


@functools.cache
def _request_codec(api_key: int, version: int) -> tuple[Any, Any]:
    cls = load_request_schema(api_key, version)
    return entity_reader(cls.__header_schema__), entity_reader(cls)


@functools.cache
def _response_codec(api_key: int, version: int) -> tuple[type[Any], Any, Any, Any]:
    cls = load_response_schema(api_key, version)
    header = cls.__header_schema__
    return cls, header, entity_writer(header), entity_writer(cls)


def read_request(frame: bytes) -> Request:
    """Decode a request frame (without its size prefix) of a supported API and version.
    Raises ValueError (or kio's errors) on bytes that do not decode."""
    api_key = int.from_bytes(frame[0:2], "big", signed=True)
    version = int.from_bytes(frame[2:4], "big", signed=True)
    read_header, read_body = _request_codec(api_key, version)
    try:
        header, size = read_header(frame, 0)
        body, _ = read_body(frame, size)
    except KeyError as error:
        if not tagged.is_unknown_tag(error):
            raise
        # A tag this version's schema lacks: Kafka's rule is to skip it (kio refuses it).
        cls = load_request_schema(api_key, version)
        header, size = tagged.read_entity(cls.__header_schema__, frame, 0)
        body, _ = tagged.read_entity(cls, frame, size)
    check_nulls(body)
    return Request(api_key, version, header.correlation_id, header.client_id, body)


# Per kio entity class: (field, may be null, is an array, the nested entity class or None).
_Shape = tuple[tuple[str, bool, bool, Any], ...]
_SHAPES: dict[type, _Shape] = {}


def _shape(cls: type) -> _Shape:
    known = _SHAPES.get(cls)
    if known is not None:
        return known
    hints = typing.get_type_hints(cls)
    shape: list[tuple[str, bool, bool, Any]] = []
    for entry in dataclasses.fields(cls):
        hint = hints[entry.name]
        args = typing.get_args(hint)
        nullable = type(None) in args
        if nullable:  # X | None: look at X
            hint = next(a for a in args if a is not type(None))
        is_array = typing.get_origin(hint) is tuple
        inner = typing.get_args(hint)[0] if is_array else hint
        nested = inner if dataclasses.is_dataclass(inner) else None
        text = isinstance(inner, type) and issubclass(inner, str | bytes)
        if nullable or is_array or nested is not None or text:
            shape.append((entry.name, nullable, is_array, nested))
    _SHAPES[cls] = known = tuple(shape)
    return known


def check_nulls(entity: Any) -> None:
    """Raise ValueError where a field Kafka's schema does not let be null decoded as null
    (kio reads length -1 as None whatever the schema says; handlers iterate arrays)."""
    for name, nullable, is_array, nested in _shape(type(entity)):
        value = getattr(entity, name)
        if value is None:
            if not nullable:
                raise ValueError(f"{type(entity).__name__}.{name} is null")
        elif nested is not None:
            for item in value if is_array else (value,):
                check_nulls(item)


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """(api key, version, correlation id) of a frame, without decoding the rest."""
    if len(frame) < 8:
        raise ValueError("request shorter than its header")
    return (
        int.from_bytes(frame[0:2], "big", signed=True),
        int.from_bytes(frame[2:4], "big", signed=True),
        int.from_bytes(frame[4:8], "big", signed=True),
    )


def encode_response(api_key: int, version: int, correlation_id: int, body: Any) -> bytes:
    """The response frame, size prefix included. `body`: a dict for `build`."""
    cls, header_cls, write_header, write_body = _response_codec(api_key, version)
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    write_header(buffer, build(header_cls, {"correlation_id": correlation_id}))
    write_body(buffer, build(cls, body))
    data = buffer.getbuffer()
    data[0:4] = (len(data) - 4).to_bytes(4, "big")
    return bytes(data)


def peek_client_id(frame: bytes) -> str | None:
    """The client id of a request header (v1 and v2 alike), or None where it cannot be read."""
    if len(frame) < 10:
        return None
    size = int.from_bytes(frame[8:10], "big", signed=True)
    if size < 0 or 10 + size > len(frame):
        return None
    return frame[10 : 10 + size].decode("utf-8", "replace")


# --- building responses ---------------------------------------------------------------------------
_ZERO_BY_KAFKA_TYPE: dict[str, Any] = {
    "bool": False,
    "bytes": b"",
    "error_code": ErrorCode.none,
    "float64": 0.0,
    "string": "",
    "records": None,
    "uuid": uuid.UUID(int=0),
    "timedelta_i32": datetime.timedelta(0),
    "timedelta_i64": datetime.timedelta(0),
    "datetime_i64": datetime.datetime.fromtimestamp(0, datetime.UTC),
}


@functools.cache
def _fields(cls: Any) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls))


def _entity_of(hint: Any) -> tuple[type[Any] | None, bool, bool]:
    """(entity class or None, is an array, is nullable) of a field's type."""
    nullable = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        hint = args[0]
        origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return (
            (item if isinstance(item, type) and dataclasses.is_dataclass(item) else None),
            (True),
            nullable,
        )
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return typing.cast(type[Any], hint), False, nullable
    return None, False, nullable


def build(cls: Any, values: Mapping[str, Any] | Any) -> Any:
    """The kio dataclass `cls` from a dict (nested entities as dicts or lists of dicts; keys the
    version does not have are ignored). An instance of `cls` is returned as it is."""
    if not isinstance(values, Mapping):
        return values
    kwargs: dict[str, Any] = {}
    for f, hint in _fields(cls):
        entity, is_array, nullable = _entity_of(hint)
        if f.name in values:
            value = values[f.name]
            if value is not None and entity is not None:
                value = tuple(build(entity, v) for v in value) if is_array else build(entity, value)
            elif is_array and value is not None:
                value = tuple(value)
            if f.metadata.get("kafka_type") == "error_code" and not isinstance(value, ErrorCode):
                value = ErrorCode(value)
            if f.metadata.get("kafka_type") == "timedelta_i32" and isinstance(value, int):
                value = datetime.timedelta(milliseconds=value)
            kwargs[f.name] = value
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        elif is_array:
            kwargs[f.name] = None if nullable else ()
        elif entity is not None:
            kwargs[f.name] = None if nullable else build(entity, {})
        elif nullable:
            kwargs[f.name] = None
        else:
            kwargs[f.name] = _ZERO_BY_KAFKA_TYPE.get(f.metadata.get("kafka_type", ""), 0)
    return cls(**kwargs)


__all__ = [
    "API_VERSIONS",
    "PRODUCE",
    "SUPPORTED",
    "Request",
    "build",
    "encode_response",
    "peek_client_id",
    "peek_header",
    "read_request",
    "supported",
]

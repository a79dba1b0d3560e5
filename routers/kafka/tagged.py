"""Reading requests that carry tagged fields Eddy's schemas do not know.

Kafka's rule for tagged fields (KIP-482) is that a receiver skips the tags it does not know,
by the size the sender wrote before each one: that is how a client adds a field to a version
without breaking older brokers (librdkafka 2.16 sends Metadata v9 with a tag 0 in its body).
kio's native reader (0.6.5, its newest release) refuses them instead, with
`KeyError: 'Unknown tagged field tag: N'`, and has no option to skip them.

`read_entity` reads the same entities as kio's `entity_reader`, with kio's own readers for
every value (`get_field_reader`, the array-length and varint readers) and kio's defaults for
absent tags; only the walk over an entity's fields is here, so that the tagged section can skip
what it does not know. It mirrors kio's schema compiler (`rust/src/schema.rs`): fields in
declaration order, then (flexible versions only) the tag count and each tag with its size.
`messages.read_request` uses it only when kio's reader refuses a request for an unknown tag.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from kio._kio_native import (
    get_field_reader,
    read_compact_array_length,
    read_int8,
    read_legacy_array_length,
    read_unsigned_varint,
)
from kio.serial._implicit_defaults import get_tagged_field_default
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    classify_field,
    get_field_tag,
    is_optional,
)

# (buffer, offset) -> (value, bytes read), the shape of kio's readers.
Reader = Callable[[bytes, int], tuple[Any, int]]


def is_unknown_tag(error: BaseException) -> bool:
    """Whether kio refused a message for a tagged field its schema does not have."""
    return isinstance(error, KeyError) and "Unknown tagged field tag" in str(error)


def read_entity(cls: Any, buffer: bytes, offset: int) -> tuple[Any, int]:
    """The `cls` entity at `offset` and its size; tags `cls` does not declare are skipped."""
    return _entity_reader(cls, False)(buffer, offset)


@functools.cache
def _entity_reader(cls: Any, nullable: bool) -> Reader:
    flexible: bool = cls.__flexible__
    is_request_header = cls.__name__ == "RequestHeader"
    plain: list[tuple[str, Reader]] = []
    tagged: dict[int, tuple[str, Reader]] = {}
    defaults: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        tag = get_field_tag(field)
        reader = _field_reader(cls, field, flexible, is_request_header, tag is not None)
        if tag is None:
            plain.append((field.name, reader))
        else:
            tagged[int(tag)] = (field.name, reader)
            defaults[field.name] = get_tagged_field_default(field)

    def read(buffer: bytes, offset: int) -> tuple[Any, int]:
        cursor = offset
        if nullable:
            marker, size = read_int8(buffer, cursor)
            cursor += size
            if marker == -1:
                return None, cursor - offset
        values: dict[str, Any] = {}
        for name, reader in plain:
            values[name], size = reader(buffer, cursor)
            cursor += size
        if flexible:
            values.update(defaults)
            count, size = read_unsigned_varint(buffer, cursor)
            cursor += size
            for _ in range(count):
                tag, size = read_unsigned_varint(buffer, cursor)
                cursor += size
                length, size = read_unsigned_varint(buffer, cursor)
                cursor += size
                if tag in tagged:
                    name, reader = tagged[tag]
                    values[name], _ = reader(buffer, cursor)
                cursor += length  # the sender's size is what delimits a tag, known or not
            if cursor > len(buffer):
                raise ValueError("tagged field runs past the end of the message")
        return cls(**values), cursor - offset

    return read


def _field_reader(
    cls: type[Any],
    field: dataclasses.Field[Any],
    flexible: bool,
    is_request_header: bool,
    is_tagged: bool,
) -> Reader:
    """kio's reader of a field, except that entities nested in it are read by this module
    (kio's native entity reader would refuse their unknown tags too)."""
    kind = classify_field(field)
    if isinstance(kind, EntityField):
        return _entity_reader(kind.type_, is_optional(field))
    if isinstance(kind, EntityTupleField):
        item = _entity_reader(kind.type_, False)
        return _array_reader(item, flexible)
    reader: Reader = get_field_reader(cls, field, is_request_header, is_tagged)
    return reader


def _array_reader(item: Reader, flexible: bool) -> Reader:
    def read(buffer: bytes, offset: int) -> tuple[Any, int]:
        count: int | None
        if flexible:
            count, cursor = read_compact_array_length(buffer, offset)
        else:
            count, cursor = read_legacy_array_length(buffer, offset)
            if count < -1:
                raise ValueError("negative array length")
            count = None if count == -1 else count
        if count is None:
            return None, cursor
        items = []
        for _ in range(count):
            value, size = item(buffer, offset + cursor)
            items.append(value)
            cursor += size
        return tuple(items), cursor

    return read

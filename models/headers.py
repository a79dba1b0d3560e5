"""Record headers kept exactly as written, in two forms.

Almost every record's headers are distinct names with UTF-8 text values: those are a `dict`
(`{"source": "feed-1"}`, insertion order kept), stored as the JSON object they always were.
Kafka producers may also repeat a name, send a null value, or send bytes that are not UTF-8;
such headers are a tuple of `(name, value)` pairs in the order written (`HeaderPairs`), each
value a `str`, `None` (null) or, only when it is not valid UTF-8, `bytes`. `exact_headers`
picks the form, so the pair form exists only where a dict would lose something, and every
other path (REST produce, the size rule, JSON out) keeps its dict speed.

On disk (the `headers` column of a partition table, schema version 3) the dict form is its JSON
object and the pair form a JSON array: `[["a", "1"], ["a", null], ["b", {"base64": "/w=="}]]`.
Both are encoded once, when the record is appended.

In JSON for clients (`json_view`), `headers` holds the last value of each name as text (a name
whose last value is null is left out; bytes that are not UTF-8 are shown with U+FFFD in place
of each bad sequence) and, for the pair form only, `header_list` holds every header in order,
`[name, text or null]`. Kafka consumers get the pairs back as bytes, exactly as written.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import orjson

HeaderValue: TypeAlias = str | bytes | None
HeaderPairs: TypeAlias = tuple[tuple[str, HeaderValue], ...]
Headers: TypeAlias = dict[str, str] | HeaderPairs


def exact_headers(pairs: Iterable[tuple[str, HeaderValue]]) -> Headers:
    """The headers of `pairs` (in order) in the form that keeps them: a dict when the names are
    distinct and every value is text, else the pairs themselves. A `bytes` value that is valid
    UTF-8 becomes text (so a value has one form only)."""
    mapping: dict[str, str] = {}
    exact: list[tuple[str, HeaderValue]] = []
    plain = True
    for name, value in pairs:
        if type(value) is bytes:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                plain = False  # kept as bytes, which only the pair form holds
        exact.append((name, value))
        if plain:
            if type(value) is str and name not in mapping:
                mapping[name] = value
            else:
                plain = False
    return mapping if plain else tuple(exact)


def header_pairs(headers: Headers) -> Iterable[tuple[str, HeaderValue]]:
    """Every header in order, as (name, value) pairs."""
    return headers.items() if isinstance(headers, dict) else headers


def kafka_headers(headers: Headers) -> list[tuple[str, bytes | None]]:
    """The headers as a Kafka record carries them: values as bytes, null kept."""
    if isinstance(headers, dict):
        return [(name, text.encode()) for name, text in headers.items()]
    return [(name, value.encode() if isinstance(value, str) else value) for name, value in headers]


def headers_size(headers: Headers) -> int:
    """UTF-8 bytes of the header names and values (a null value counts 0)."""
    size = 0
    for name, value in header_pairs(headers):
        size += len(name.encode())
        if type(value) is str:
            size += len(value.encode())
        elif value is not None:
            size += len(value)
    return size


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def last_values(pairs: Sequence[tuple[str, HeaderValue]]) -> dict[str, str]:
    """The last value of each name as text; a name whose last value is null is left out."""
    mapping: dict[str, str] = {}
    for name, value in pairs:
        if value is None:
            mapping.pop(name, None)
        else:
            mapping[name] = _text(value)
    return mapping


def json_view(headers: Headers, out: dict[str, Any]) -> None:
    """Put `headers` (and `header_list` for the pair form) into a record's JSON object."""
    if isinstance(headers, dict):
        out["headers"] = headers
        return
    out["headers"] = last_values(headers)
    out["header_list"] = [[name, None if v is None else _text(v)] for name, v in headers]


def encode_headers(headers: Headers) -> bytes | None:
    """The stored form of `headers` (None for no headers)."""
    if not headers:
        return None
    if isinstance(headers, dict):
        return orjson.dumps(headers)
    return orjson.dumps(
        [
            [name, {"base64": base64.b64encode(value).decode()} if type(value) is bytes else value]
            for name, value in headers
        ]
    )


def decode_headers(blob: bytes | None) -> Headers:
    """The headers `encode_headers` stored (or an older Eddy: always a JSON object)."""
    if not blob:
        return {}
    stored = orjson.loads(blob)
    return stored if type(stored) is dict else stored_pairs(stored)


def stored_pairs(stored: list[Any]) -> HeaderPairs:
    """The pair form from its stored JSON array (parsed)."""
    return tuple(
        (name, base64.b64decode(value["base64"]) if type(value) is dict else value)
        for name, value in stored
    )

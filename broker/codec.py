"""Turning JSON from clients into stored bytes and stored records back into JSON.

Values are stored as the compact JSON text of what the client sent and are spliced back into
responses and frames as-is (``orjson.Fragment``), so they are never parsed again on the way out.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import orjson
from pydantic import ValidationError

from eddy.models.errors import InvalidRequest
from eddy.models.headers import json_view
from eddy.models.log import StoredRecord, ValueFormat


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number {text[:40]} is out of range")
    return number


# orjson parses ~2.5x faster than the stdlib, but reads integers beyond 64 bits as floats. Such
# an integer has at least 19 digits in a row, so a body without a run of 19 digits (found with
# two C-speed passes: digits -> "0", the rest -> " ", then a substring search) parses the same
# with both; anything orjson refuses (NaN, 1e999, lone surrogates, bad UTF-8, a BOM, very deep
# nesting) goes to the stdlib too, so errors and their messages stay the stdlib's.
_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19


def _orjson_is_exact(data: bytes | str) -> bool:
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    return _LONG_DIGIT_RUN not in raw.translate(_DIGITS)


def parse_json(data: bytes | str) -> Any:
    """Parse client JSON exactly (integers of any size), rejecting NaN/Infinity and overflow."""
    return load_json(data)[0]


def is_json_text(data: bytes) -> bool:
    """Is `data` JSON that `load_json` reads with every string valid Unicode? (What a Kafka
    value must be to be stored as JSON.) The usual case, orjson reading it exactly, without
    keeping what it read."""
    if _LONG_DIGIT_RUN not in data.translate(_DIGITS):
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the stdlib decides
        else:
            return True
    try:
        return load_json(data)[1]
    except InvalidRequest:
        return False


def load_json(data: bytes | str) -> tuple[Any, bool]:
    """`parse_json`, and whether every string in the value is valid Unicode (orjson refuses
    lone surrogates; the stdlib lets "\\ud800" through)."""
    if _orjson_is_exact(data):
        try:
            return orjson.loads(data), True
        except orjson.JSONDecodeError:
            pass  # the stdlib decides, and words the error
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float), False
    except RecursionError:
        raise InvalidRequest("JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise InvalidRequest("body is not valid UTF-8") from None
    except ValueError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None


def dump_json(value: Any) -> bytes:
    """Compact JSON bytes of a parsed value; integers beyond 64 bits fall back to the stdlib."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        if "recursion" in str(exc).lower():
            raise InvalidRequest("value is nested too deeply (limit 254 levels)") from None
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (ValueError, RecursionError, UnicodeEncodeError):
            raise InvalidRequest(
                "value cannot be stored as JSON (lone UTF-16 surrogates are not text)"
            ) from None


def check_text(text: str, what: str) -> str:
    """Refuse strings that are not valid Unicode text (JSON lets "\\ud800" through)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} is not valid Unicode text") from None
    return text


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("value_base64 is not valid base64") from None


def validation_error(exc: ValidationError, prefix: str = "") -> InvalidRequest:
    """A pydantic error as the contract's invalid_request, listing each problem."""
    problems = [
        {"loc": [prefix, *err["loc"]] if prefix else list(err["loc"]), "msg": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = problems[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return InvalidRequest(f"{where}: {first['msg']}", {"errors": problems})


def record_dict(topic: str, record: StoredRecord) -> dict[str, Any]:
    """The JSON object of a record, as in fetch responses and WebSocket frames."""
    out: dict[str, Any] = {
        "topic": topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": record.key,
    }
    if record.value_format is ValueFormat.BINARY and record.value is not None:
        out["value_base64"] = base64.b64encode(record.value).decode()
    elif record.value_format is ValueFormat.TEXT and record.value is not None:
        out["value"] = record.value.decode("utf-8", "replace")
    else:
        out["value"] = None if record.value is None else orjson.Fragment(record.value)
    headers = record.headers
    if type(headers) is dict:
        out["headers"] = headers
    else:  # repeated names, null or non-UTF-8 values: also `header_list`
        json_view(headers, out)
    return out


def record_frame_bytes(topic: str, record: StoredRecord, conflated: int = 0) -> bytes:
    """The JSON of a record pushed to a subscriber (`"type": "record"`), UTF-8: what the
    transports frame once and send to every subscriber. `conflated`: how many dropped records
    of its key this one stands for (`"conflated": N`, only on the slow path that drops them)."""
    message = {"type": "record", **record_dict(topic, record)}
    if conflated:
        message["conflated"] = conflated
    return orjson.dumps(message)


def safe_json(value: Any) -> bytes:
    """JSON for answers (error bodies, control frames): never fails. Text that is not valid
    Unicode (a lone surrogate a client sent) is written as a \\u escape, which JSON allows."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str).encode()

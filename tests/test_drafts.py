"""The fast ways of reading produce bodies (orjson, records without pydantic) against the
exact ones they stand in for (the stdlib parser, the pydantic models)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eddy.broker import drafts as drafts_module
from eddy.broker.codec import parse_json, validation_error
from eddy.broker.drafts import RecordDraft, draft_from_record, drafts_from_body
from eddy.models.errors import InvalidRequest
from eddy.models.frames import PublishFrame
from eddy.models.log import ProducerSequence
from eddy.models.records import MAX_INT64, ProduceBatch, RecordIn


def stdlib_parse(data: bytes) -> Any:
    """What parse_json did before it tried orjson."""
    try:
        return ("ok", json.loads(data, parse_constant=_refuse, parse_float=_finite))
    except RecursionError:
        return ("error", "JSON is nested too deeply")
    except UnicodeDecodeError:
        return ("error", "body is not valid UTF-8")
    except ValueError as exc:
        return ("error", f"body is not valid JSON: {exc}")


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return number


def outcome_of_parse(data: bytes) -> Any:
    try:
        return ("ok", parse_json(data))
    except InvalidRequest as exc:
        return ("error", exc.message)


def typed(value: Any) -> str:
    """JSON text with types kept apart (1 and 1.0 compare equal in Python)."""
    return json.dumps(value, sort_keys=True) + repr(type(value))


big_ints = st.integers(min_value=-(10**40), max_value=10**40)
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64), big_ints, st.floats(allow_nan=False)
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400)
@given(json_values)
def test_parse_json_reads_values_as_the_stdlib_does(value: Any) -> None:
    text = json.dumps(value).encode()  # floats out of range become Infinity: refused by both
    expected, got = stdlib_parse(text), outcome_of_parse(text)
    assert got[0] == expected[0]
    if got[0] == "ok":
        assert typed(got[1]) == typed(expected[1])
    else:
        assert got == expected


@pytest.mark.parametrize(
    "text",
    [
        b"12345678901234567890123",
        b"-9223372036854775809",
        b"18446744073709551616",
        b'{"v": [0.1000000000000000055511151231257827, 1E400]}',
        b"1e999",
        b"-0",
        b'"\\ud800"',
        b"NaN",
        b"\xef\xbb\xbf{}",
        b"\xff",
        b'{"a": 1, "a": 2}',
        b"[" * 2000 + b"]" * 2000,
    ],
)
def test_parse_json_edge_cases_match_the_stdlib(text: bytes) -> None:
    expected, got = stdlib_parse(text), outcome_of_parse(text)
    assert got[0] == expected[0]
    if got[0] == "ok":
        assert typed(got[1]) == typed(expected[1])


def reference_drafts(body: bytes) -> Any:
    """drafts_from_body for JSON as it was: every record through the pydantic models."""
    try:
        data = parse_json(body)
        if not isinstance(data, dict):
            raise InvalidRequest('body must be a record object or {"records": [...]}')
        try:
            if "records" in data:
                batch = ProduceBatch.model_validate(data)
                producer = batch.producer
                return (
                    [draft_from_record(r) for r in batch.records],
                    None if producer is None else ProducerSequence(producer.id, producer.sequence),
                )
            return [draft_from_record(RecordIn.model_validate(data))], None
        except ValidationError as exc:
            raise validation_error(exc) from None
    except InvalidRequest as exc:
        return ("error", exc.message, exc.details)


def outcome_of_drafts(body: bytes) -> Any:
    try:
        return drafts_from_body(body, "application/json", None, None)
    except InvalidRequest as exc:
        return ("error", exc.message, exc.details)


# Record fields with well-typed, mistyped and out-of-range values, and unknown fields.
field_values = {
    "key": st.none() | st.text(max_size=4) | st.integers(0, 3) | st.booleans() | st.just("\ud800"),
    "value": json_values,
    "value_base64": st.none() | st.sampled_from(["AA==", "", "!!", "aGk="]) | st.integers(0, 2),
    "headers": st.none()
    | st.dictionaries(
        st.text(max_size=3) | st.just("\udc00"),
        st.text(max_size=3) | st.integers(0, 2) | st.just("\udfff"),
        max_size=3,
    ),
    "partition": st.none()
    | st.integers(-2, 2**31)
    | st.booleans()
    | st.sampled_from([1.0, 1.5, "1", 2**40]),
    "timestamp": st.none()
    | st.integers(-1, MAX_INT64 + 1)
    | st.booleans()
    | st.sampled_from([5.0, "7", 10**30]),
    "extra": st.integers(0, 1),
}
records = st.fixed_dictionaries(
    {}, optional={name: values for name, values in field_values.items()}
).filter(lambda r: "extra" not in r or len(r) < 3)  # mostly known fields
producers = st.none() | st.fixed_dictionaries(
    {"id": st.sampled_from(["p-1", "", "a b"]), "sequence": st.integers(-1, 3)}
)


@settings(max_examples=500)
@given(
    st.one_of(
        records,
        st.fixed_dictionaries({"records": st.lists(records, max_size=4)}),
        st.fixed_dictionaries({"records": st.lists(records, max_size=3), "producer": producers}),
    )
)
def test_drafts_equal_the_pydantic_models_answers(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    assert outcome_of_drafts(raw) == reference_drafts(raw)


def test_a_plain_batch_keeps_every_field() -> None:
    raw = (
        b'{"records": [{"key": "k", "value": {"a": 1}, "headers": {"h": "v"}, "partition": 1, '
        b'"timestamp": 7}, {"value_base64": "aGk="}], "producer": {"id": "p", "sequence": 3}}'
    )
    drafts, producer = drafts_from_body(raw, "application/json", None, None)
    assert drafts[0] == RecordDraft("k", b'{"a":1}', drafts[0].value_format, {"h": "v"}, 1, 7)
    assert drafts[1].value == b"hi" and drafts[1].key is None and drafts[1].headers == {}
    assert producer == ProducerSequence("p", 3)


def test_the_msgspec_structs_name_the_models_fields() -> None:
    assert set(drafts_module._Record.__struct_fields__) == set(RecordIn.model_fields)
    assert set(drafts_module._Batch.__struct_fields__) == set(ProduceBatch.model_fields)


@pytest.mark.parametrize(
    "body",
    [
        b'{"records": [{"value": 12345678901234567890123456789}]}',
        b'{"records": [{"value": {"a": [1, 2.5, null, true, "\\u00e9"]}, "key": "k"}]}',
        b'{"records": [{"key": "\\ud800", "value": 1}]}',
        b'{"records": [{"value": NaN}]}',
        b'{"records": [{"value": 1e999}]}',
        b'{"records": [{"value": 1, "headers": null}]}',
        b'{"records": [{"value": 1, "headers": {"h": 1}}]}',
        b'{"records": [{"value": 1, "headers": [["h", "v"], ["h", null]]}]}',
        b'{"records": []}',
        b'{"records": [{"value": 1, "value_base64": "AA=="}]}',
        b'{"records": [{"value_base64": "!!"}]}',
        b'{"records": [{"value_base64": "aGk="}], "producer": {"id": "p", "sequence": -1}}',
        b'{"records": [{"value_base64": "aGk="}], "producer": {"id": "p", "sequence": 4}}',
        b'{"records": [{"value": 1}]} x',
        b'{"records": [{"value": 1}], "records": [{"value": 2}]}',
        b'{"records": [{"value": 1, "partition": true, "timestamp": 5}]}',
        b'{"records": [{"value": 1, "partition": 2147483648}]}',
        b'{"records": [{"value": 1, "timestamp": -1}]}',
        b'{"records": [{"value": 1, "extra": 1}]}',
        b'{"records": [{"value": ' + b"[" * 300 + b"]" * 300 + b"}]}",
        b'{"records": [{"value": "\xff"}]}',
    ],
)
def test_batch_bodies_read_by_msgspec_equal_the_models_answers(body: bytes) -> None:
    assert outcome_of_drafts(body) == reference_drafts(body)


def test_the_frame_struct_names_the_publish_frames_fields() -> None:
    assert set(drafts_module._Frame.__struct_fields__) == set(PublishFrame.model_fields)


frames = st.fixed_dictionaries(
    {},
    optional={
        **field_values,
        "id": st.none() | st.text(max_size=3) | st.integers(-2, 2) | st.booleans() | st.just(1.5),
        "sequence": st.none() | st.integers(-1, 3) | st.just(MAX_INT64 + 1) | st.just("1"),
    },
)


@settings(max_examples=500)
@given(frames)
def test_frames_read_by_msgspec_equal_the_models_answers(frame: dict[str, Any]) -> None:
    text = json.dumps(frame)
    fast = drafts_module.frame_draft(text)
    if fast is None:
        return  # the publisher reads it the usual way
    model = PublishFrame.model_validate(parse_json(text.encode()))
    assert fast == (model.id, draft_from_record(model), model.sequence)


def test_values_nested_too_deeply_for_msgspec_take_the_usual_way() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert drafts_module.frame_draft('{"value": ' + deep.decode() + "}") is None
    body = b'{"records": [{"value": ' + deep + b"}]}"
    assert outcome_of_drafts(body) == reference_drafts(body)

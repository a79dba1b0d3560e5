"""The command line's pure parts: produce's line parsing and batching, consume's output."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eddy.app.cli_lines import LineError, batches, parse_line, record_output
from eddy.app.serve_options import default_text, env_name, help_text
from eddy.app.settings import Settings


@given(
    st.lists(st.text(alphabet=st.characters(exclude_characters="\r\n"), max_size=30)),
    st.integers(1, 7),
    st.integers(1, 60),
)
def test_batches_keep_every_non_empty_line_in_order_within_the_limits(
    lines: list[str], max_records: int, max_bytes: int
) -> None:
    got = list(batches([line + "\n" for line in lines], max_records, max_bytes))
    flat = [item for batch in got for item in batch]
    assert flat == [(n, line) for n, line in enumerate(lines, 1) if line]
    for batch in got:
        assert 1 <= len(batch) <= max_records
        # a batch closes as soon as it reaches the byte budget: only its last line passes it
        assert sum(len(line) for _, line in batch[:-1]) < max_bytes


def test_crlf_line_ends_are_not_part_of_the_value() -> None:
    assert list(batches(["a\r\n", "\r\n", "b"], 10, 100)) == [[(1, "a"), (3, "b")]]


@given(st.text(alphabet=st.characters(exclude_characters=":"), min_size=1), st.text())
def test_the_key_is_what_comes_before_the_first_separator(key: str, value: str) -> None:
    assert parse_line(f"{key}:{value}", raw=True, key_separator=":") == {"key": key, "value": value}


def test_lines_without_the_separator_have_no_key_and_values_are_exact_json() -> None:
    assert parse_line("12345678901234567890123", raw=False, key_separator=":") == {
        "key": None,
        "value": 12345678901234567890123,
    }
    assert parse_line('k:{"a": [1, 2.5, null]}', raw=False, key_separator=":") == {
        "key": "k",
        "value": {"a": [1, 2.5, None]},
    }
    with pytest.raises(LineError, match="--raw"):
        parse_line("hello", raw=False, key_separator=None)


def test_record_output_formats() -> None:
    record = {"topic": "t", "partition": 0, "offset": 3, "key": None, "value": {"n": 10**25}}
    assert json.loads(record_output(record, "json")) == record
    assert record_output(record, "value") == '{"n":10000000000000000000000000}'
    assert record_output({**record, "value": "plain text"}, "value") == "plain text"
    assert record_output({"value_base64": "AAE="}, "value") == "AAE="


def test_every_setting_has_a_described_flag() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} needs a description: it is the flag's help"
        text = help_text(name, field)
        assert f"env var: {env_name(name)}" in text
        if default_text(field) is not None:
            assert f"default: {default_text(field)}" in text
    assert env_name("port") == "EDDY_PORT"

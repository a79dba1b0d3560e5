"""The produce response's JSON: the shortcut for one-partition batches is byte for byte the
generic encoding (pure logic)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from eddy.models.log import AppendedRecord
from eddy.routers.records import offsets_json


def generic(appended: list[AppendedRecord]) -> bytes:
    return orjson.dumps(
        {
            "offsets": [
                {"partition": a.partition, "offset": a.offset, "timestamp": a.timestamp}
                for a in appended
            ]
        }
    )


def test_a_dense_batch_in_one_partition() -> None:
    appended = [AppendedRecord(3, 10 + i, 1_764_000_000_000) for i in range(5)]
    assert offsets_json(appended) == generic(appended)
    assert orjson.loads(offsets_json(appended))["offsets"][4] == {
        "partition": 3,
        "offset": 14,
        "timestamp": 1_764_000_000_000,
    }


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(0, 2**40), st.sampled_from([0, 1, 1_764_000_000_000])
        ),
        min_size=1,
        max_size=30,
    ),
    st.booleans(),
)
def test_same_json_as_the_generic_encoding(fields: list[tuple[int, int, int]], dense: bool) -> None:
    if dense:  # what a batch into one partition with one timestamp looks like
        p, start, ts = fields[0]
        appended = [AppendedRecord(p, start + i, ts) for i in range(len(fields))]
    else:
        appended = [AppendedRecord(*f) for f in fields]
    assert offsets_json(appended) == generic(appended)

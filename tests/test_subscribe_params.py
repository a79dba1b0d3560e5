"""The subscription query strings, parsed into domain values: pure, tested directly. The SSE
transport uses `parse_subscription` (no group parameters); WebSockets `parse_subscribe_params`."""

from __future__ import annotations

import pytest

from eddy.broker.positions import SubscribeParams, partitions_to_look_up
from eddy.models.errors import InvalidRequest
from eddy.routers.ws.params import parse_subscribe_params, parse_subscription


def test_every_transport_neutral_parameter_becomes_a_domain_value() -> None:
    params = parse_subscription(
        {
            "from": "earliest",
            "offsets": "0:15,1:20",
            "partitions": "0,1,2",
            "keys": "AAPL,MSFT",
            "since": "1764000000000",
            "on_slow": "conflate",
            "max_rate": "2.5",
            "token": "t",
        }
    )
    assert params == SubscribeParams(
        "earliest",
        {0: 15, 1: 20},
        frozenset({0, 1, 2}),
        frozenset({"AAPL", "MSFT"}),
        1764000000000,
        "conflate",
        2.5,
    )
    assert parse_subscription({}) == SubscribeParams()


def test_group_parameters_are_for_websockets_only() -> None:
    with pytest.raises(InvalidRequest, match="unknown query parameter 'group'"):
        parse_subscription({"group": "g"})
    params = parse_subscribe_params({"group": "g", "auto_commit": "true", "since": "5"})
    assert (params.group, params.auto_commit, params.since) == ("g", True, 5)


@pytest.mark.parametrize(
    "query",
    [
        {"max_rate": "0"},
        {"max_rate": "-1"},
        {"max_rate": "inf"},
        {"max_rate": "nan"},
        {"max_rate": "100001"},
        {"max_rate": ""},
        {"on_slow": "drop"},
        {"since": "-1"},
        {"since": "1.5"},
        {"since": ""},
    ],
)
def test_bad_values_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        parse_subscription(query)


def test_since_decides_only_partitions_without_an_offset() -> None:
    params = SubscribeParams(offsets={1: 0}, since=10)
    assert partitions_to_look_up(params, 3) == [0, 2]
    assert partitions_to_look_up(SubscribeParams(partitions=frozenset({2, 9}), since=1), 3) == [2]
    assert partitions_to_look_up(SubscribeParams(), 3) == []

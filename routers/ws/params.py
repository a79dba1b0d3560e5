"""The streaming URLs' query strings, parsed into the broker's domain types (or refused).

`parse_subscription` is transport-neutral (the WebSocket and the SSE subscriptions take the same
parameters); `parse_subscribe_params` adds the WebSocket-only consumer-group ones.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection, Mapping

from eddy.broker import SubscribeParams, validate_group_name
from eddy.models.errors import InvalidRequest

SUBSCRIPTION_PARAMETERS = (
    "from",
    "offsets",
    "partitions",
    "keys",
    "since",
    "on_slow",
    "max_rate",
    "token",
)
GROUP_PARAMETERS = ("group", "auto_commit")
MAX_RATE_LIMIT = 100_000.0  # record frames per second: above that, leave max_rate out


def _int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{what} must be an integer, got '{text[:40]}'") from None
    if value < 0:
        raise InvalidRequest(f"{what} must not be negative, got {value}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_RATE_LIMIT:  # NaN fails too
        raise InvalidRequest(
            f"max_rate must be a number of records per second above 0 and at most "
            f"{MAX_RATE_LIMIT:g}, got '{text[:40]}'",
            {"max_rate": text[:40]},
        )
    return value


def parse_subscription(query: Mapping[str, str], extra: Collection[str] = ()) -> SubscribeParams:
    """Parse ?from=&offsets=0:15,1:20&partitions=0,2&keys=A,B&since=MS&on_slow=&max_rate=
    (and ?token=) into SubscribeParams. Parameters in `extra` are the caller's to parse."""
    known = {*SUBSCRIPTION_PARAMETERS, *extra}
    unknown = sorted(set(query) - known)
    if unknown:
        raise InvalidRequest(f"unknown query parameter '{unknown[0]}'", {"known": sorted(known)})
    start_from = query.get("from", "latest")
    if start_from not in ("earliest", "latest"):
        raise InvalidRequest("from must be 'earliest' or 'latest'")
    offsets: dict[int, int] | None = None
    if query.get("offsets"):
        offsets = {}
        for item in query["offsets"].split(","):
            partition, sep, offset = item.partition(":")
            if not sep:
                raise InvalidRequest("offsets must look like 0:15,1:20")
            offsets[_int(partition, "partition")] = _int(offset, "offset")
    partitions = None
    if query.get("partitions"):
        partitions = frozenset(_int(p, "partition") for p in query["partitions"].split(","))
    keys = None
    if "keys" in query:
        keys = frozenset(k for k in query["keys"].split(",") if k)
        if not keys:
            raise InvalidRequest("keys= needs at least one key (leave it out for every key)")
    if offsets is not None and partitions is not None and not set(offsets) <= partitions:
        outside = sorted(set(offsets) - partitions)
        raise InvalidRequest(
            f"offsets= names partition(s) {outside} that partitions= leaves out",
            {"partitions": outside},
        )
    since = _int(query["since"], "since") if "since" in query else None
    on_slow = query.get("on_slow", "close")
    if on_slow not in ("close", "conflate"):
        raise InvalidRequest("on_slow must be 'close' or 'conflate'", {"on_slow": on_slow[:40]})
    max_rate = _rate(query["max_rate"]) if "max_rate" in query else None
    return SubscribeParams(
        start_from,  # type: ignore[arg-type]
        offsets,
        partitions,
        keys,
        since,
        on_slow,  # type: ignore[arg-type]
        max_rate,
    )


def parse_subscribe_params(query: Mapping[str, str]) -> SubscribeParams:
    """The WebSocket subscription: `parse_subscription` plus ?group= and ?auto_commit=."""
    params = parse_subscription(query, GROUP_PARAMETERS)
    group = query.get("group") or None
    auto_commit = query.get("auto_commit", "false").lower()
    if auto_commit not in ("true", "false", "1", "0"):
        raise InvalidRequest("auto_commit must be true or false")
    if group is not None:
        validate_group_name(group)
        if params.offsets is not None or params.partitions is not None:
            raise InvalidRequest(
                "offsets= and partitions= cannot be used with group= (the group assigns "
                "partitions and keeps their offsets)"
            )
    elif auto_commit in ("true", "1"):
        raise InvalidRequest("auto_commit needs group=")
    return dataclasses.replace(params, group=group, auto_commit=auto_commit in ("true", "1"))


PRODUCER_ID = re.compile(r"^[a-zA-Z0-9._:-]{1,249}$")


def parse_publish_params(query: Mapping[str, str]) -> str | None:
    """?producer_id= (idempotent producer) and ?token=; returns the producer id, if any."""
    known = ["producer_id", "token"]
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise InvalidRequest(f"unknown query parameter '{unknown[0]}'", {"known": known})
    producer_id = query.get("producer_id")
    if producer_id is not None and not PRODUCER_ID.match(producer_id):
        raise InvalidRequest("producer_id must be 1-249 characters of [a-zA-Z0-9._:-]")
    return producer_id

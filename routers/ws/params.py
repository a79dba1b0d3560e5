"""The WebSocket URLs' query strings, parsed into the broker's domain types (or refused)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from broker.positions import SubscribeParams
from broker.topic_rules import validate_group_name
from models.errors import InvalidRequest


def _int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{what} must be an integer, got '{text[:40]}'") from None
    if value < 0:
        raise InvalidRequest(f"{what} must not be negative, got {value}")
    return value


def parse_subscribe_params(query: Mapping[str, str]) -> SubscribeParams:
    """Parse ?from=&offsets=0:15,1:20&partitions=0,2&keys=A,B&group= into SubscribeParams."""
    known = {"from", "offsets", "partitions", "keys", "group", "auto_commit", "token"}
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
    group = query.get("group") or None
    auto_commit = query.get("auto_commit", "false").lower()
    if auto_commit not in ("true", "false", "1", "0"):
        raise InvalidRequest("auto_commit must be true or false")
    if offsets is not None and partitions is not None and not set(offsets) <= partitions:
        outside = sorted(set(offsets) - partitions)
        raise InvalidRequest(
            f"offsets= names partition(s) {outside} that partitions= leaves out",
            {"partitions": outside},
        )
    if group is not None:
        validate_group_name(group)
        if offsets is not None or partitions is not None:
            raise InvalidRequest(
                "offsets= and partitions= cannot be used with group= (the group assigns "
                "partitions and keeps their offsets)"
            )
    elif auto_commit in ("true", "1"):
        raise InvalidRequest("auto_commit needs group=")
    return SubscribeParams(
        start_from,  # type: ignore[arg-type]
        offsets,
        partitions,
        keys,
        group,
        auto_commit in ("true", "1"),
    )


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

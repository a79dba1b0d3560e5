"""Topic names and topic configuration: Kafka's rules, as pure functions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eddy.models.errors import InvalidRequest
from eddy.models.topics import MAX_PARTITIONS

TOPIC_NAME_PATTERN = r"^[a-zA-Z0-9._-]{1,249}$"
_TOPIC_NAME = re.compile(TOPIC_NAME_PATTERN)

CLEANUP_POLICIES = ("delete", "compact", "compact,delete")
# Kafka's config types: times and sizes are Java longs, max.message.bytes an int. SQLite's
# INTEGER is the same signed 64 bits, so nothing accepted here overflows a query.
LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


def validate_topic_name(name: str) -> str:
    """Kafka's rule: 1-249 of [a-zA-Z0-9._-], not '.' or '..'. Checked before any file or SQL."""
    if not _TOPIC_NAME.match(name) or name in (".", ".."):
        raise InvalidRequest(
            "invalid topic name: use 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'",
            {"topic": name[:300]},
        )
    return name


def validate_group_name(name: str) -> str:
    """Consumer-group names follow the topic-name rule (they appear in URLs and metrics)."""
    if not _TOPIC_NAME.match(name) or name in (".", ".."):
        raise InvalidRequest(
            "invalid group name: use 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'",
            {"group": name[:300]},
        )
    return name


def validate_partition_count(partitions: int) -> int:
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidRequest(
            f"partitions must be between 1 and {MAX_PARTITIONS}", {"partitions": partitions}
        )
    return partitions


def _int_between(minimum: int, maximum: int) -> Any:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise InvalidRequest(
                f"config '{key}' must be an integer from {minimum} to {maximum}",
                {"key": key, "value": value},
            )
        return value

    return check


def _cleanup_policy(key: str, value: Any) -> str:
    if isinstance(value, str):
        parts = sorted(p.strip() for p in value.split(","))
        normalised = ",".join(parts)
        if normalised in CLEANUP_POLICIES:
            return normalised
    raise InvalidRequest(
        f"config '{key}' must be one of {', '.join(CLEANUP_POLICIES)}", {"key": key, "value": value}
    )


# Kafka's topic config names that Eddy knows, with their validators.
_VALIDATORS = {
    "retention.ms": _int_between(-1, LONG_MAX),
    "retention.bytes": _int_between(-1, LONG_MAX),
    "cleanup.policy": _cleanup_policy,
    "max.message.bytes": _int_between(1, INT_MAX),
    "delete.retention.ms": _int_between(0, LONG_MAX),
}


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check topic config overrides; returns them normalised. Unknown keys are rejected."""
    validated: dict[str, Any] = {}
    for key, value in config.items():
        validator = _VALIDATORS.get(key)
        if validator is None:
            raise InvalidRequest(
                f"unknown topic config '{key}'", {"key": key, "known": sorted(_VALIDATORS)}
            )
        validated[key] = validator(key, value)
    return validated


def effective_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The config a topic runs with: broker defaults, overridden per topic."""
    return {**defaults, **overrides}


@dataclass(frozen=True)
class CleanupPlan:
    """What the background cleaner does to a topic's partitions right now."""

    delete_before_timestamp: int | None  # retention.ms: drop the log's head older than this
    max_bytes: int | None  # retention.bytes: keep at most this much per partition
    compact: bool
    tombstones_before: int  # compaction drops tombstones older than this

    @property
    def deletes(self) -> bool:
        return self.delete_before_timestamp is not None or self.max_bytes is not None


def _as_long(value: int) -> int:
    """Clamped to a signed 64-bit integer (what SQLite can bind). Configs are validated into
    that range, but a data directory written before the check may hold anything."""
    return max(-LONG_MAX - 1, min(LONG_MAX, value))


def cleanup_plan(config: Mapping[str, Any], now_ms: int) -> CleanupPlan:
    """Kafka's semantics: `delete` applies retention.ms/.bytes (-1: unlimited), `compact` keeps
    the newest record per key, and "compact,delete" does both."""
    policies = set(str(config["cleanup.policy"]).split(","))
    deleting = "delete" in policies
    retention_ms = int(config["retention.ms"])
    retention_bytes = int(config["retention.bytes"])
    return CleanupPlan(
        delete_before_timestamp=_as_long(now_ms - retention_ms)
        if deleting and retention_ms >= 0
        else None,
        max_bytes=_as_long(retention_bytes) if deleting and retention_bytes >= 0 else None,
        compact="compact" in policies,
        tombstones_before=_as_long(now_ms - int(config["delete.retention.ms"])),
    )


def is_compacted(config: Mapping[str, Any]) -> bool:
    return "compact" in str(config["cleanup.policy"]).split(",")

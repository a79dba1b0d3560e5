"""How the Kafka engine reaches its cluster: connection settings shared by every aiokafka client it
makes, and the conversions between Kafka records and the engine's record types.

aiokafka (not confluent-kafka) because it is asyncio-native: produce acks, fetches and admin calls
are awaited on the event loop, with no librdkafka threads and callbacks to marshal back onto the
loop, and it exposes the protocol's request classes for the few admin calls its admin client lacks
(committing a group's offsets as an outside tool, deleting a group).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import ConsumerRecord

from eddy.models.headers import exact_headers
from eddy.models.log import StoredRecord, ValueFormat
from eddy.storage.engine import NewRecord, record_size

CLIENT_ID = "eddy"  # what the cluster's logs and quotas call Eddy's clients


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is and how to talk to it: the `kafka_*` settings (app/settings.py,
    where their defaults and help are), by field name."""

    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str | None
    sasl_password: str | None
    ssl_cafile: Path | None
    ssl_certfile: Path | None
    ssl_keyfile: Path | None
    # aiokafka keyword arguments given as-is to each client that takes them (--kafka-config k=v)
    extra: Mapping[str, Any]
    # Kafka's idempotent producer (InitProducerId): on for real clusters; Tansu's memory storage
    # cannot do it, so tests against it turn it off.
    idempotence: bool
    replication_factor: int
    # Prefix of every Kafka topic and group name this server sees (isolates tenants and tests).
    namespace: str
    refresh_interval: float  # seconds between metadata/offset/group refreshes
    # How long a follower's fetch may wait on the broker for new records. Kafka answers a
    # waiting fetch as soon as records arrive, so a long wait costs nothing there; Tansu 0.6
    # waits it out, so records reach subscribers (and followed produces their answer) up to
    # this late: tests against it use a few ms.
    fetch_max_wait_ms: int
    # A server whose group consumer stops heartbeating (killed) loses its partitions after this
    group_session_timeout_ms: int
    # Seconds a produce waits for the cluster's acknowledgement before it is answered with
    # 503 unavailable (nothing sent) or outcome_unknown (sent, no answer)
    produce_timeout: float

    def client_options(self, client_class: Any) -> dict[str, Any]:
        """Keyword arguments for one aiokafka client class (each takes a different set)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": CLIENT_ID,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
        }
        if self.sasl_username is not None:
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        if "SSL" in self.security_protocol:
            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
            )
        accepted = inspect.signature(client_class.__init__).parameters
        options.update({k: v for k, v in self.extra.items() if k in accepted})
        return options


def parse_client_config(pairs: Sequence[str]) -> dict[str, Any]:
    """["request_timeout_ms=30000", ...] -> {"request_timeout_ms": 30000, ...} (ints and
    true/false converted; anything else stays text). Raises ValueError for a pair without '='."""
    config: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected name=value, got {pair!r}")
        value: Any = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            with contextlib.suppress(ValueError):
                value = int(text)
        config[name.strip()] = value
    return config


def encode_key(record: NewRecord) -> bytes | None:
    return None if record.key is None else record.key.encode()


def value_format(value: bytes | None) -> ValueFormat:
    """Kafka values carry no format. UTF-8 JSON reads back as JSON; other UTF-8 text as text (a
    JSON string over REST: what a REST text/plain produce and most Kafka producers of plain
    strings mean); anything else as binary (value_base64). Unlike the embedded engine, which
    remembers the body's type, a valid UTF-8 octet-stream body therefore reads back as text."""
    if value is None:
        return ValueFormat.JSON
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            value.decode()
        except UnicodeDecodeError:
            return ValueFormat.BINARY
        return ValueFormat.TEXT
    return ValueFormat.JSON


def stored_record(record: ConsumerRecord[bytes, bytes]) -> StoredRecord:
    key = None if record.key is None else record.key.decode(errors="replace")
    headers = exact_headers(record.headers)
    value = record.value
    return StoredRecord(
        record.partition,
        record.offset,
        record.timestamp,
        key,
        value,
        value_format(value),
        headers,
        record_size(key, value, headers),
    )

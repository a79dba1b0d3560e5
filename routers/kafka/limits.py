"""What one Kafka client may hold of the listener: connections (in total and per client
address), idle time, time to send a request, request size. Each is a `serve` flag (app/settings.py)
with Apache Kafka's default where Kafka has one, and each refusal is counted in the metrics.

- idle: a connection with no request being read and none being answered is closed after
  `idle_timeout` (Kafka's connections.max.idle.ms, 10 minutes);
- slow: once a request's first byte has arrived, the rest (its length prefix and its bytes)
  must arrive within `request_timeout`, or the connection is closed (a client trickling a
  request, or one that died mid-request, holds nothing for longer);
- many: beyond `max_connections` open, or `max_connections_per_ip` from one address
  (Kafka's max.connections and max.connections.per.ip), a new connection is closed at accept;
- large: a request longer than `max_request_bytes` (Kafka's socket.request.max.bytes, 100 MiB) is
  refused before it is read, and the connection closed (the stream cannot be resynchronised).
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("eddy.kafka")

# A refusal at accept is logged at most once in this many seconds (with the count since).
REFUSAL_LOG_INTERVAL = 10.0


@dataclass(frozen=True)
class ListenerLimits:
    idle_timeout: float = 600.0
    request_timeout: float = 30.0
    max_connections: int = 10_000
    max_connections_per_ip: int = 1_000
    max_request_bytes: int = 100 * 1_048_576


class ListenerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "eddy_kafka_connections", "Open Kafka protocol connections", registry=registry
        )
        self.refused = Counter(
            "eddy_kafka_connections_refused",
            "Kafka connections closed at accept (reason: max_connections, max_connections_per_ip)",
            ["reason"],
            registry=registry,
        )
        self.closed = Counter(
            "eddy_kafka_connections_closed",
            "Kafka connections the listener closed for a limit (reason: idle, request_timeout, "
            "request_too_large)",
            ["reason"],
            registry=registry,
        )
        for reason in ("max_connections", "max_connections_per_ip"):
            self.refused.labels(reason)
        for reason in ("idle", "request_timeout", "request_too_large"):
            self.closed.labels(reason)


class ConnectionGate:
    """Counts open connections per client address and says which new ones to refuse."""

    def __init__(self, limits: ListenerLimits, metrics: ListenerMetrics) -> None:
        self._limits = limits
        self._metrics = metrics
        self._open = 0
        self._by_address: Tally[str] = Tally()
        self._refused_since_log = 0
        self._last_log = -REFUSAL_LOG_INTERVAL

    def admit(self, address: str) -> bool:
        """Take a slot for a new connection from `address`; False (counted, logged at most
        once per REFUSAL_LOG_INTERVAL) when a limit is reached."""
        limits = self._limits
        if self._open >= limits.max_connections:
            self._refuse(address, "max_connections", limits.max_connections)
            return False
        if self._by_address[address] >= limits.max_connections_per_ip:
            self._refuse(address, "max_connections_per_ip", limits.max_connections_per_ip)
            return False
        self._open += 1
        self._by_address[address] += 1
        self._metrics.open.inc()
        return True

    def release(self, address: str) -> None:
        self._open -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]
        self._metrics.open.dec()

    def _refuse(self, address: str, reason: str, limit: int) -> None:
        self._metrics.refused.labels(reason).inc()
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_log < REFUSAL_LOG_INTERVAL:
            return
        log.warning(
            "Kafka connection from %s refused: --kafka-listener-%s (%d) reached "
            "(%d connection(s) refused since the last such line)",
            address,
            reason.replace("_", "-"),
            limit,
            self._refused_since_log,
        )
        self._last_log = now
        self._refused_since_log = 0

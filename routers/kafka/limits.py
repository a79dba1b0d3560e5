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

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Collection
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("eddy.kafka")

# A refusal at accept is logged at most once in this many seconds (with the count since).
REFUSAL_LOG_INTERVAL = 10.0
# The deadline sweep runs every quarter of the shorter timeout, within these bounds (seconds):
# a deadline is kept to within that much.
SWEEP_MIN, SWEEP_MAX = 0.05, 1.0

WAITING, READING, BUSY = 0, 1, 2  # a connection's phase, for its deadlines


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


@dataclass(eq=False, slots=True)
class Watch:
    """One connection's phase for the deadline sweep: waiting for a request's first byte
    (idle, unless answers are being made), reading the rest of a request, or neither."""

    transport: asyncio.WriteTransport
    pending: Collection[object]  # answers being made (a connection waiting on them is not idle)
    phase: int = BUSY
    since: float = field(default=0.0)


class Deadlines:
    """Idle and request deadlines of every connection, kept by one sweep task instead of a
    timer per read: a timeout around each read cost about 12 us per request (two per request,
    24 us, against under 1 us of framing), on the listener's hottest path."""

    def __init__(self, limits: ListenerLimits, metrics: ListenerMetrics) -> None:
        self._limits = limits
        self._metrics = metrics
        self._watches: set[Watch] = set()
        self._task: asyncio.Task[None] | None = None
        shortest = min(limits.idle_timeout, limits.request_timeout)
        self._interval = min(SWEEP_MAX, max(SWEEP_MIN, shortest / 4))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep(), name="kafka-deadlines")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def watch(self, transport: asyncio.WriteTransport, pending: Collection[object]) -> Watch:
        watch = Watch(transport, pending)
        self._watches.add(watch)
        return watch

    def forget(self, watch: Watch) -> None:
        self._watches.discard(watch)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        idle, request = self._limits.idle_timeout, self._limits.request_timeout
        while True:
            await asyncio.sleep(self._interval)
            now = loop.time()
            for watch in list(self._watches):
                if watch.phase == WAITING:
                    if watch.pending:  # (a long fetch or produce being answered)
                        watch.since = now
                    elif now - watch.since > idle:
                        self._close(watch, "idle")
                elif watch.phase == READING and now - watch.since > request:
                    self._close(watch, "request_timeout")

    def _close(self, watch: Watch, reason: str) -> None:
        self._watches.discard(watch)
        self._metrics.closed.labels(reason).inc()
        watch.transport.abort()  # the connection's read fails; its task ends

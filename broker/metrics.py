"""Prometheus metrics, on a registry of the broker's own (so several brokers can live in one
process, as they do in tests), with the process, GC and platform collectors on it too.

Per-partition gauges (high watermark, log start offset, size) are read from the engine's
in-memory state when scraped (`PartitionCollector`), never from disk; the data dir's disk
usage is measured in a thread just before a scrape (`Broker.refresh_disk_metrics`).
"""

from __future__ import annotations

import contextlib
import enum
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from eddy.models.log import PartitionState, StoredRecord

# (topic, its partitions' states), for the scrape
PartitionSource = Callable[[], Iterable[tuple[str, Sequence[PartitionState]]]]


class Transport(enum.StrEnum):
    """The transport label of every counter that has one (`via` of the delivery counters,
    `transport` of the rejections)."""

    REST = "http"
    WEBSOCKET = "websocket"
    SSE = "sse"
    KAFKA = "kafka"


def eddy_version() -> str:
    try:
        return metadata.version("eddy")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


class PartitionCollector(Collector):
    """eddy_partition_{high_watermark,log_start_offset,size_bytes}{topic,partition}, from the
    engine's in-memory partition states at scrape time."""

    def __init__(self, source: PartitionSource) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["topic", "partition"]
        high = GaugeMetricFamily(
            "eddy_partition_high_watermark", "Offset the next record will get", labels=labels
        )
        start = GaugeMetricFamily(
            "eddy_partition_log_start_offset", "First offset still stored", labels=labels
        )
        size = GaugeMetricFamily(
            "eddy_partition_size_bytes",
            "Record bytes (key, value, headers) the partition holds",
            labels=labels,
        )
        for topic, states in self._source():
            for state in states:
                values = [topic, str(state.partition)]
                high.add_metric(values, state.high_watermark)
                start.add_metric(values, state.log_start_offset)
                size.add_metric(values, state.size_bytes)
        yield from (high, start, size)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The same collectors as prometheus_client's default registry has (process_*,
        # python_gc_*, python_info), on this registry.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build_info = Info("eddy_build", "Eddy's version and Python's", registry=self.registry)
        self.build_info.info({"version": eddy_version(), "python": platform.python_version()})
        self.commit_seconds = Histogram(
            "eddy_storage_commit_seconds",
            "Duration of a storage commit (with --sync full, it includes the fsync)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
            registry=self.registry,
        )
        self.data_dir_used = Gauge(
            "eddy_data_dir_used_bytes",
            "Bytes the files of the data dir take on disk (measured at scrape)",
            registry=self.registry,
        )
        self.data_dir_free = Gauge(
            "eddy_data_dir_free_bytes",
            "Bytes free for the data dir on its filesystem (measured at scrape)",
            registry=self.registry,
        )
        self.rejections = Counter(
            "eddy_rejections",
            "Requests and records refused, by error code and transport (http: REST answers; "
            "websocket: publish error frames and sessions ended by an error)",
            ["code", "transport"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "eddy_auth_failures",
            "Credentials refused (401), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.records_in = Counter(
            "eddy_records_in", "Records appended", ["topic"], registry=self.registry
        )
        self.bytes_in = Counter(
            "eddy_bytes_in", "Record bytes appended", ["topic"], registry=self.registry
        )
        self.records_out = Counter(
            "eddy_records_out", "Records delivered", ["topic", "via"], registry=self.registry
        )
        self.bytes_out = Counter(
            "eddy_bytes_out", "Record bytes delivered", ["topic", "via"], registry=self.registry
        )
        self.records_removed = Counter(
            "eddy_records_removed",
            "Records removed by retention or compaction",
            ["topic", "reason"],
            registry=self.registry,
        )
        self.commit_batch_records = Histogram(
            "eddy_commit_batch_records",
            "Records per storage commit (group commit merges concurrent requests)",
            buckets=(1, 2, 5, 10, 50, 100, 1000, 5000, 20000),
            registry=self.registry,
        )
        self.websockets_open = Gauge(
            "eddy_websockets_open",
            "Open WebSocket connections",
            ["endpoint"],
            registry=self.registry,
        )
        self.slow_consumer_closes = Counter(
            "eddy_slow_consumer_closes", "Subscribers closed with 4408", registry=self.registry
        )
        self.group_rebalances = Counter(
            "eddy_group_rebalances",
            "Consumer-group rebalances",
            ["group", "topic"],
            registry=self.registry,
        )
        self.background_errors = Counter(
            "eddy_background_errors",
            "Failures of background work (task: cleaner; topic: the one it failed on, if any)",
            ["task", "topic"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "eddy_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        # Labelled children, looked up once: `labels()` validates and hashes its arguments
        # under a lock on every call, per request or commit.
        self._latency_children: dict[tuple[str, str, int], Any] = {}
        self._topic_children: dict[str, tuple[Any, Any]] = {}

    def watch_partitions(self, source: PartitionSource) -> None:
        """Report the partitions `source` lists at each scrape."""
        self.registry.register(PartitionCollector(source))

    def count_rejection(self, code: str, transport: Transport) -> None:
        self.rejections.labels(code, transport).inc()

    def count_delivered(self, topic: str, via: Transport, records: int, nbytes: int) -> None:
        """Records and bytes sent to consumers over a transport."""
        self.records_out.labels(topic, via).inc(records)
        self.bytes_out.labels(topic, via).inc(nbytes)

    def count_auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    def set_disk_usage(self, used: int, free: int) -> None:
        self.data_dir_used.set(used)
        self.data_dir_free.set(free)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request's latency."""
        child = self._latency_children.get((method, route, status))
        if child is None:
            child = self.request_latency.labels(method, route, str(status))
            if len(self._latency_children) < 4096:  # routes are templates, but stay bounded
                self._latency_children[(method, route, status)] = child
        child.observe(seconds)

    def count_appended(self, topic: str, records: int, nbytes: int) -> None:
        """Records and bytes committed to a topic."""
        children = self._topic_children.get(topic)
        if children is None:
            children = self._topic_children[topic] = (
                self.records_in.labels(topic),
                self.bytes_in.labels(topic),
            )
        children[0].inc(records)
        children[1].inc(nbytes)

    # --- LogListener ---------------------------------------------------------------------------
    def on_commit(self, topic: str, records: Sequence[StoredRecord]) -> None:
        pass

    def on_partitions_added(self, topic: str, partitions: int) -> None:
        pass

    def on_topic_deleted(self, topic: str) -> None:
        """Drop a deleted topic's series."""
        self._topic_children.pop(topic, None)
        for metric in (self.records_in, self.bytes_in):
            with contextlib.suppress(KeyError):
                metric.remove(topic)
        for reason in ("retention", "compaction"):
            with contextlib.suppress(KeyError):
                self.records_removed.remove(topic, reason)
        with contextlib.suppress(KeyError):
            self.background_errors.remove("cleaner", topic)
        for metric in (self.records_out, self.bytes_out):
            for via in Transport:
                with contextlib.suppress(KeyError):
                    metric.remove(topic, via)

"""Prometheus metrics, on a registry of the broker's own (so several brokers can live in one
process, as they do in tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from storage import StoredRecord


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            for via in ("fetch", "websocket"):
                with contextlib.suppress(KeyError):
                    metric.remove(topic, via)

"""The background cleaner: retention (time and size) and compaction, in bounded chunks.

Every `interval` seconds it walks all topics. Each step (delete up to CHUNK records, compact one
offset range, vacuum 1 MiB) is a short transaction that holds the topic's write lock only for
itself, and the loop yields between steps, so producers and consumers keep going while a large
backlog is removed.

It is supervised work: a failure on one topic (a broken file, a config an old version let in)
is logged with the topic, counted in `eddy_background_errors_total{task="cleaner",topic}`,
and retried at the next pass, and the other topics are cleaned regardless. Should the loop
itself end, `running` turns false and /readyz says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from eddy.broker.metrics import Metrics
from eddy.broker.topic_rules import cleanup_plan
from eddy.models.errors import EddyError, TopicNotFound
from eddy.models.log import TopicMeta
from eddy.storage import Engine

log = logging.getLogger("eddy.retention")

DELETE_CHUNK = 2_000  # records per delete transaction
COMPACT_RANGE = 2_000  # offsets examined per compaction transaction


class Cleaner:
    def __init__(
        self,
        engine: Engine,
        config_of: Callable[[TopicMeta], Mapping[str, Any]],
        metrics: Metrics,
        interval: float,
    ) -> None:
        self._engine = engine
        self._config_of = config_of
        self._metrics = metrics
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cleaner")
        self._task.add_done_callback(self._ended)

    @property
    def running(self) -> bool:
        """False once started and ended (stop() resets it: a stopped cleaner is not a fault)."""
        return self._task is None or not self._task.done()

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the cleaner stopped; retention no longer runs", exc_info=task.exception())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.run_once()
            except Exception:  # e.g. listing the topics failed: try again next pass
                log.exception("a cleaner pass failed")
                self._metrics.background_errors.labels("cleaner", "").inc()

    async def run_once(self) -> None:
        """One pass over every topic; a topic that fails does not stop the others."""
        for meta in self._engine.list_topics():
            try:
                await self._clean_topic(meta)
            except TopicNotFound:
                continue  # deleted meanwhile
            except EddyError as exc:  # storage trouble (disk full, unavailable): said already
                log.warning("cleaning topic %s failed: %s", meta.name, exc.message)
                self._metrics.background_errors.labels("cleaner", meta.name).inc()
            except Exception:
                log.exception("cleaning topic %s failed; retrying at the next pass", meta.name)
                self._metrics.background_errors.labels("cleaner", meta.name).inc()

    async def _clean_topic(self, meta: TopicMeta) -> None:
        engine, topic = self._engine, meta.name
        plan = cleanup_plan(self._config_of(meta), int(time.time() * 1000))
        removed = 0
        for partition in range(meta.partitions):
            if plan.deletes:
                target = await engine.retention_point(
                    topic, partition, plan.delete_before_timestamp, plan.max_bytes
                )
                while count := await engine.delete_before(topic, partition, target, DELETE_CHUNK):
                    removed += count
                    self._metrics.records_removed.labels(topic, "retention").inc(count)
            if plan.compact:
                state = engine.partition_state(topic, partition)
                for low in range(state.log_start_offset, state.high_watermark, COMPACT_RANGE):
                    count = await engine.compact(
                        topic, partition, low, low + COMPACT_RANGE, plan.tombstones_before
                    )
                    removed += count
                    self._metrics.records_removed.labels(topic, "compaction").inc(count)
        if removed:
            log.info("removed %d record(s) from %s", removed, topic)
            while await engine.reclaim_space(topic) > 0:
                pass  # each step is one bounded transaction; awaiting it lets others run

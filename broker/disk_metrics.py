"""What the metrics scrape reads besides the counters: every partition's state (from memory)
and the data dir's disk usage (measured in a thread, once for concurrent scrapes)."""

from __future__ import annotations

import asyncio
import logging

from eddy.broker.metrics import Metrics
from eddy.models.errors import EddyError
from eddy.models.log import PartitionState
from eddy.storage import Engine

log = logging.getLogger("eddy.broker")


def partition_states(engine: Engine) -> list[tuple[str, list[PartitionState]]]:
    """Every partition's state, from memory (for the scrape)."""
    found = []
    for meta in engine.list_topics():
        try:
            states = [engine.partition_state(meta.name, p) for p in range(meta.partitions)]
        except EddyError:  # deleted or unavailable meanwhile: not reported
            continue
        found.append((meta.name, states))
    return found


class DiskMeter:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self._engine = engine
        self._metrics = metrics
        self._measuring: asyncio.Future[None] | None = None

    async def refresh(self) -> None:
        """Measure the data dir's disk usage (one measurement at a time, shared by concurrent
        scrapes)."""
        if self._measuring is None:
            self._measuring = asyncio.ensure_future(self._measure())
        try:
            await asyncio.shield(self._measuring)
        finally:
            if self._measuring is not None and self._measuring.done():
                self._measuring = None

    async def _measure(self) -> None:
        try:
            usage = await self._engine.disk_usage()
        except OSError as exc:
            log.warning("cannot measure the data dir's disk usage: %s", exc)
            return
        if usage is not None:
            self._metrics.set_disk_usage(*usage)

"""Fetching by offset over REST, with long-polling."""

from __future__ import annotations

import time
from typing import Any

import orjson

from eddy.broker.codec import record_dict
from eddy.broker.hub import FanoutHub
from eddy.broker.metrics import Metrics, Transport
from eddy.models.errors import InvalidRequest, OffsetOutOfRange
from eddy.models.log import PartitionState
from eddy.storage import Engine


def resolve_offset(topic: str, state: PartitionState, spec: str) -> int:
    """'earliest' | 'latest' | N -> an offset in [log_start_offset, high_watermark]."""
    if spec == "earliest":
        return state.log_start_offset
    if spec == "latest":
        return state.high_watermark
    try:
        offset = int(spec)
    except ValueError:
        raise InvalidRequest(
            "offset must be 'earliest', 'latest' or a non-negative integer", {"offset": spec[:40]}
        ) from None
    if offset < state.log_start_offset or offset > state.high_watermark:
        raise OffsetOutOfRange(
            topic, state.partition, offset, state.log_start_offset, state.high_watermark
        )
    return offset


class Fetcher:
    def __init__(self, engine: Engine, hub: FanoutHub, metrics: Metrics) -> None:
        self._engine = engine
        self._hub = hub
        self._metrics = metrics

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset_spec: str,
        limit: int,
        max_bytes: int,
        timeout_ms: int,
    ) -> bytes:
        """The JSON body of a fetch response (values spliced in without re-parsing)."""
        engine = self._engine
        offset = resolve_offset(topic, engine.partition_state(topic, partition), offset_spec)
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            high_watermark_before = engine.high_watermark(topic, partition)
            records = await engine.read(topic, partition, offset, limit, max_bytes)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0 or high_watermark_before > offset or self._hub.closing:
                break
            await self._hub.wait_for_data(topic, partition, remaining)
        state = engine.partition_state(topic, partition)
        if records:
            next_offset = records[-1].offset + 1
        else:  # nothing at or after `offset`: step over any gap left by compaction
            next_offset = max(offset, high_watermark_before)
        body: dict[str, Any] = {
            "records": [record_dict(topic, r) for r in records],
            "next_offset": next_offset,
            "log_start_offset": state.log_start_offset,
            "high_watermark": state.high_watermark,
        }
        if records:
            self._metrics.count_delivered(
                topic,
                Transport.REST,
                len(records),
                sum(len(r.value or b"") + len(r.key or "") for r in records),
            )
        return orjson.dumps(body)

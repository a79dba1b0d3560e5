"""One WebSocket subscription: replays stored records, then takes live records from the hub.

Per partition the subscriber keeps the next offset to deliver. A partition is either *replaying*
(read from storage, at the subscriber's own pace) or *live* (fed by the hub after each commit).
The switch to live happens with no await between "storage has nothing more" and "mark live", so
no record committed in between can be missed, and live records are taken only when their offset is
the next expected one, so none is delivered twice.

Frames wait in a bounded buffer drained by one sender task. When live records push the buffer
past its limit, the subscriber is finished with 4408: a slow reader never holds back the producer
or other subscribers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from broker.codec import control_frame, record_frame
from broker.metrics import Metrics
from broker.positions import StartPosition
from models.errors import EddyError, TopicNotFound
from storage import Engine

log = logging.getLogger("eddy.subscriber")

REPLAY_CHUNK_RECORDS = 500
REPLAY_CHUNK_BYTES = 256 * 1024
CLOSE_TOO_SLOW = 4408

LiveFrame = tuple[int, int, str | None, str]  # partition, offset, key, encoded frame


class FrameSink(Protocol):
    async def send_text(self, data: str) -> None: ...


class Subscriber:
    def __init__(
        self,
        *,
        topic: str,
        positions: Mapping[int, StartPosition],
        keys: frozenset[str] | None,
        sink: FrameSink,
        engine: Engine,
        metrics: Metrics,
        max_buffer_bytes: int,
    ) -> None:
        self.topic = topic
        self._next_offset = {p: pos.offset for p, pos in positions.items()}
        self._keys = keys
        self._sink = sink
        self._engine = engine
        self._max_buffer = max_buffer_bytes
        self._live: set[int] = set()
        self._buffer: deque[str] = deque()
        self._buffered = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._sender: asyncio.Task[None] | None = None
        self._records_out = metrics.records_out.labels(topic, "websocket")
        self._bytes_out = metrics.bytes_out.labels(topic, "websocket")
        self._slow_closes = metrics.slow_consumer_closes
        # Partitions already at the high watermark go live at once (same synchronous step in
        # which the caller computed the positions and registers us with the hub).
        for partition, offset in self._next_offset.items():
            if offset >= engine.high_watermark(topic, partition):
                self._live.add(partition)

    # --- called by the hub (synchronously, right after a commit) --------------------------------
    def offer_live(self, frames: Sequence[LiveFrame]) -> None:
        if self._done.done():
            return
        added = 0
        for partition, offset, key, frame in frames:
            if partition not in self._live or offset != self._next_offset.get(partition):
                continue
            self._next_offset[partition] = offset + 1
            if self._keys is None or key in self._keys:
                self._enqueue(frame)
                added += 1
        if added:
            self._records_out.inc(added)
            if self._buffered > self._max_buffer:
                self._slow_closes.inc()
                self.finish(CLOSE_TOO_SLOW)

    def finish(self, close_code: int | None) -> None:
        """End the subscription; `run` returns `close_code` (None: the client is gone)."""
        if not self._done.done():
            self._done.set_result(close_code)
        if self._sender is not None:
            self._sender.cancel()  # it may be stuck in a send to a client that does not read

    # --- the connection's life ----------------------------------------------------------------
    def send_control(self, frame: dict[str, object]) -> None:
        """Queue a non-record frame (subscribed, error) in order with the records."""
        self._enqueue(control_frame(frame))

    async def run(self, incoming: AsyncIterator[str | bytes]) -> int | None:
        self._sender = asyncio.create_task(self._send_loop())
        tasks = [self._sender, asyncio.create_task(self._replay_all())]
        tasks.append(asyncio.create_task(self._receive(incoming)))
        try:
            return await asyncio.shield(self._done)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _enqueue(self, frame: str) -> None:
        self._buffer.append(frame)
        self._buffered += len(frame)
        self._bytes_out.inc(len(frame))
        self._wakeup.set()

    async def _send_loop(self) -> None:
        try:
            while True:
                while self._buffer:
                    frame = self._buffer.popleft()
                    self._buffered -= len(frame)
                    await self._sink.send_text(frame)
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone; nothing to tell the client
            log.debug("subscriber send failed: %r", exc)
            self.finish(None)

    async def _receive(self, incoming: AsyncIterator[str | bytes]) -> None:
        async for _frame in incoming:
            self.send_control(
                {
                    "type": "error",
                    "code": "invalid_request",
                    "message": "this subscription does not accept frames from the client",
                }
            )
        self.finish(None)  # the client closed the connection

    async def _replay_all(self) -> None:
        try:
            for partition in sorted(self._next_offset):
                if partition not in self._live:
                    await self._replay(partition)
        except TopicNotFound as exc:
            self.finish(exc.ws_close_code)
        except EddyError as exc:
            self.send_control({"type": "error", "code": exc.code, "message": exc.message})
            self.finish(exc.ws_close_code)

    async def _replay(self, partition: int) -> None:
        engine, topic = self._engine, self.topic
        while True:
            offset = self._next_offset[partition]
            high_watermark_before = engine.high_watermark(topic, partition)
            records = await engine.read(
                topic, partition, offset, REPLAY_CHUNK_RECORDS, REPLAY_CHUNK_BYTES
            )
            sent = 0
            for record in records:
                self._next_offset[partition] = record.offset + 1
                if self._keys is None or record.key in self._keys:
                    self._enqueue(record_frame(topic, record))
                    sent += 1
            self._records_out.inc(sent)
            if not records:
                # Nothing at or after `offset` when the read began: anything below that high
                # watermark was removed (retention, compaction). Never skip past it.
                self._next_offset[partition] = max(offset, high_watermark_before)
            if self._next_offset[partition] >= engine.high_watermark(topic, partition):
                self._live.add(partition)  # no await since the check: nothing can slip by
                return
            while self._buffered > self._max_buffer // 2:  # replay at the reader's pace
                self._drained.clear()
                await self._drained.wait()

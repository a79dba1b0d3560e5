"""One WebSocket subscription: replays stored records, then takes live records from the hub.

Per assigned partition the subscriber keeps the next offset to deliver. A partition is either
*replaying* (read from storage, at the subscriber's own pace) or *live* (fed by the hub after
each commit). The switch to live happens with no await between "storage has nothing more" and
"mark live", so no record committed in between can be missed, and live records are taken only
when their offset is the next one expected, so none is delivered twice.

Partitions can be assigned and revoked at any time (consumer groups). Revoking drops the
partition's unsent frames at once, so a revoked partition stops delivering before its new owner
starts; each (re)assignment gets a new epoch so a replay read that was in flight is discarded.

Frames wait in a bounded buffer drained by one sender task. When live records push the buffer
past its limit, the subscriber is finished with 4408: a slow reader never holds back the producer
or other subscribers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from broker.codec import control_frame, record_frame
from broker.metrics import Metrics
from broker.positions import StartPosition
from models.errors import EddyError, InvalidRequest, TopicNotFound
from storage import Engine

log = logging.getLogger("eddy.subscriber")

REPLAY_CHUNK_RECORDS = 500
REPLAY_CHUNK_BYTES = 256 * 1024
CLOSE_TOO_SLOW = 4408
CONTROL = -1  # the "partition" of frames that are not records

LiveFrame = tuple[int, int, str | None, str]  # partition, offset, key, encoded frame
FrameHandler = Callable[[str | bytes], Awaitable[None]]


class FrameSink(Protocol):
    async def send_text(self, data: str) -> None: ...


class Subscriber:
    def __init__(
        self,
        *,
        topic: str,
        keys: frozenset[str] | None,
        sink: FrameSink,
        engine: Engine,
        metrics: Metrics,
        max_buffer_bytes: int,
        follow_new_partitions: bool = False,
    ) -> None:
        self.topic = topic
        self._follow_new_partitions = follow_new_partitions
        self._keys = keys
        self._sink = sink
        self._engine = engine
        self._max_buffer = max_buffer_bytes
        self._next_offset: dict[int, int] = {}  # assigned partitions -> next offset to queue
        self._live: set[int] = set()
        self._to_replay: set[int] = set()
        self._epoch: dict[int, int] = {}
        self._epochs = itertools.count(1)
        self._sent: dict[int, int] = {}  # partition -> offset after the last record sent
        self._buffer: deque[tuple[int, int, str]] = deque()  # (partition, offset, frame)
        self._buffered = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._replay_wakeup = asyncio.Event()
        self._done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._sender: asyncio.Task[None] | None = None
        self._records_out = metrics.records_out.labels(topic, "websocket")
        self._bytes_out = metrics.bytes_out.labels(topic, "websocket")
        self._slow_closes = metrics.slow_consumer_closes

    # --- assignment (synchronous: callers rely on nothing running in between) -----------------
    @property
    def partitions(self) -> set[int]:
        return set(self._next_offset)

    def assign(self, positions: Mapping[int, StartPosition]) -> None:
        """Make `positions` the assigned partitions: revoke the others, keep the ones already
        assigned (they continue where they are), start the new ones at their position."""
        for partition in [p for p in self._next_offset if p not in positions]:
            self._revoke(partition)
        for partition, position in positions.items():
            if partition not in self._next_offset:
                self._start(partition, position.offset)

    def partitions_added(self, partitions: int) -> None:
        """The topic grew: a subscriber of all partitions starts the new ones at their start."""
        if self._follow_new_partitions:
            for partition in range(partitions):
                if partition not in self._next_offset:
                    self._start(partition, 0)

    def _start(self, partition: int, offset: int) -> None:
        self._next_offset[partition] = offset
        self._epoch[partition] = next(self._epochs)
        if offset >= self._engine.high_watermark(self.topic, partition):
            self._live.add(partition)
        else:
            self._to_replay.add(partition)
            self._replay_wakeup.set()

    def _revoke(self, partition: int) -> None:
        del self._next_offset[partition]
        del self._epoch[partition]
        self._live.discard(partition)
        self._to_replay.discard(partition)
        self._sent.pop(partition, None)
        kept = deque(item for item in self._buffer if item[0] != partition)
        if len(kept) != len(self._buffer):
            self._buffer = kept
            self._buffered = sum(len(item[2]) for item in kept)

    def next_offsets(self) -> dict[int, int]:
        """Per assigned partition, the offset of the next record to be queued."""
        return dict(self._next_offset)

    def sent_positions(self) -> dict[int, int]:
        """Per assigned partition, the offset after the last record handed to the socket."""
        return {p: o for p, o in self._sent.items() if p in self._next_offset}

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
                self._enqueue(partition, offset, frame)
                added += 1
            else:
                self._skip(partition, offset)
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
        """Queue a non-record frame (subscribed, assignment, error) in order with the records.
        Answers to a client that sends but does not read count against its buffer too."""
        self._enqueue(CONTROL, 0, control_frame(frame))
        if self._buffered > self._max_buffer:
            self._slow_closes.inc()
            self.finish(CLOSE_TOO_SLOW)

    async def run(
        self, incoming: AsyncIterator[str | bytes], on_frame: FrameHandler | None = None
    ) -> int | None:
        """Deliver until the subscription ends; client frames go to `on_frame`."""
        self._sender = asyncio.create_task(self._send_loop())
        tasks = [
            self._sender,
            asyncio.create_task(self._replay_loop()),
            asyncio.create_task(self._receive(incoming, on_frame or self._refuse_frame)),
        ]
        try:
            return await asyncio.shield(self._done)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _enqueue(self, partition: int, offset: int, frame: str) -> None:
        self._buffer.append((partition, offset, frame))
        self._buffered += len(frame)
        if partition != CONTROL:
            self._bytes_out.inc(len(frame))
        self._wakeup.set()

    def _skip(self, partition: int, offset: int) -> None:
        """A record the keys filter leaves out still counts as delivered (for auto-commit) once
        everything queued before it is sent: an empty frame marks the spot."""
        if not self._buffer:
            self._sent[partition] = offset + 1
        elif self._buffer[-1][0] == partition and not self._buffer[-1][2]:
            self._buffer[-1] = (partition, offset, "")  # extend the marker already queued
        else:
            self._buffer.append((partition, offset, ""))

    async def _send_loop(self) -> None:
        try:
            while True:
                while self._buffer:
                    partition, offset, frame = self._buffer.popleft()
                    self._buffered -= len(frame)
                    if frame:
                        await self._sink.send_text(frame)
                    if partition in self._next_offset:
                        self._sent[partition] = offset + 1
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone; nothing to tell the client
            log.debug("subscriber send failed: %r", exc)
            self.finish(None)

    async def _refuse_frame(self, _frame: str | bytes) -> None:
        refusal = InvalidRequest("this subscription does not accept frames from the client")
        self.send_control(refusal.to_frame())

    async def _receive(self, incoming: AsyncIterator[str | bytes], on_frame: FrameHandler) -> None:
        async for frame in incoming:
            await on_frame(frame)
        self.finish(None)  # the client closed the connection

    async def _replay_loop(self) -> None:
        try:
            while True:
                while self._to_replay:
                    await self._replay(min(self._to_replay))
                self._replay_wakeup.clear()
                await self._replay_wakeup.wait()
        except TopicNotFound as exc:
            self.finish(exc.ws_close_code)
        except EddyError as exc:
            self.send_control(exc.to_frame())
            self.finish(exc.ws_close_code)

    async def _replay(self, partition: int) -> None:
        engine, topic = self._engine, self.topic
        epoch = self._epoch[partition]
        while True:
            offset = self._next_offset[partition]
            high_watermark_before = engine.high_watermark(topic, partition)
            records = await engine.read(
                topic, partition, offset, REPLAY_CHUNK_RECORDS, REPLAY_CHUNK_BYTES
            )
            if self._epoch.get(partition) != epoch:
                return  # revoked (or revoked and given back) while we were reading
            sent = 0
            for record in records:
                self._next_offset[partition] = record.offset + 1
                if self._keys is None or record.key in self._keys:
                    self._enqueue(partition, record.offset, record_frame(topic, record))
                    sent += 1
                else:
                    self._skip(partition, record.offset)
            self._records_out.inc(sent)
            if not records:
                # Nothing at or after `offset` when the read began: anything below that high
                # watermark was removed (retention, compaction). Never skip past it.
                self._next_offset[partition] = max(offset, high_watermark_before)
            if self._next_offset[partition] >= engine.high_watermark(topic, partition):
                self._live.add(partition)  # no await since the check: nothing can slip by
                self._to_replay.discard(partition)
                return
            while self._buffered > self._max_buffer // 2:  # replay at the reader's pace
                self._drained.clear()
                await self._drained.wait()
                if self._epoch.get(partition) != epoch:
                    return

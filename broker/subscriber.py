"""Runs one `Subscription` over a connection: the thin driver between the pure state
(`subscription.py`), the partition tails the hub keeps, storage (for replays) and the transport.

Live records are written by the hub's fan-out pass (`deliver_live`), synchronously: the tail's
pre-encoded bytes from the subscriber's position to the end go to the connection in one write,
no task wake-up or await per subscriber. The connection buffers what the peer has not read yet;
past `max_buffer_bytes` of it the overflow policy decides, so a slow reader never holds back the
producer or other subscribers: end the session (close 4408), or (`on_slow=conflate`) hold live
records back in the subscription's backlog, conflated per key, until the connection is down to
half the limit; the hub's pacer then writes the backlog out. Keyless records are never
conflated: if those held back alone pass the limit, the session ends as too slow.

With `max_rate=` every record goes through the backlog, and at most that many record frames a
second leave it (a token bucket): the fan-out pass writes what the bucket allows at once, the
pacer the rest at the next slots. Frames of records that stand for conflated ones (with their
`conflated` count) are built here, on this slow path only.

Replays (positions older than the tail) read storage in a task that exists only while some
partition is replaying, and wait for the connection to drain between chunks (the reader's pace).
An idle live subscriber has no task of its own: only the transport's receive loop (`run`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from eddy.broker.conflation import RateBudget, Unsent
from eddy.broker.events import End, Event, Refused, SessionEnd
from eddy.broker.metrics import Metrics, Transport
from eddy.broker.pacer import Pacer
from eddy.broker.positions import StartPosition
from eddy.broker.subscription import (
    CloseWhenFull,
    Keyed,
    Overflow,
    OverflowPolicy,
    Subscription,
)
from eddy.broker.tail import Encoder, PartitionTail, TailEntry
from eddy.models.errors import EddyError, InvalidRequest
from eddy.models.log import StoredRecord
from eddy.storage import Engine

log = logging.getLogger("eddy.subscriber")

REPLAY_CHUNK_RECORDS = 500
REPLAY_CHUNK_BYTES = 256 * 1024

FrameHandler = Callable[[str | bytes], Awaitable[None]]
REFUSAL = "this subscription does not accept frames from the client"


class Connection(Protocol):
    """The transport's side: writes never block (the connection buffers them)."""

    @property
    def encoder(self) -> Encoder: ...

    @property
    def via(self) -> Transport:
        """What the delivery metrics call this kind of connection."""

    def write(self, data: bytes) -> None:
        """Queue encoded records for the peer."""

    def conflated_record(self, topic: str, record: StoredRecord, conflated: int) -> bytes:
        """The encoding of a record frame that stands for `conflated` dropped records of its key
        as well (`"conflated": N`); built only for these, the others use `encoder`."""

    def send_event(self, event: Event) -> None:
        """Queue a non-record message (subscribed, assignment, error...), in order."""

    def buffered(self) -> int:
        """Bytes queued and not yet taken by the peer."""

    async def drained(self) -> None:
        """Return when the connection takes more data without growing its buffer."""


class Subscriber:
    def __init__(
        self,
        *,
        topic: str,
        keys: frozenset[str] | None,
        connection: Connection,
        engine: Engine,
        metrics: Metrics,
        max_buffer_bytes: int,
        follow_new_partitions: bool = False,
        policy: OverflowPolicy | None = None,
        max_rate: float | None = None,
    ) -> None:
        self.topic = topic
        self.subscription = Subscription(keys, paced=max_rate is not None)
        self._follow_new_partitions = follow_new_partitions
        self._connection = connection
        self._encoder = connection.encoder
        self._engine = engine
        self._max_buffer = max_buffer_bytes
        self._policy = policy or CloseWhenFull()
        self._max_rate = max_rate
        self._rate: RateBudget | None = None  # made on first use (it needs the loop's clock)
        self._full = False  # on_slow=conflate: waiting for the connection to drain
        self._pacer: Pacer | None = None
        self._room: asyncio.Future[None] | None = None  # a paced replay waits for the backlog
        self._tails: Mapping[int, PartitionTail] = {}
        self._start: dict[int, int] = {}  # partition -> offset its assignment started at
        self._replayer: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[End] | None = None
        self._cancelled_runner = False
        self.done = False
        self.end: End = None
        # For a subscription without a task of its own (`receive_frame` takes the client's
        # frames): told once how it ended.
        self.on_end: Callable[[End], None] | None = None
        self.via = connection.via
        self._records_out = metrics.records_out.labels(topic, connection.via)
        self._bytes_out = metrics.bytes_out.labels(topic, connection.via)
        self._slow_closes = metrics.slow_consumer_closes

    def attach(self, tails: Mapping[int, PartitionTail], pacer: Pacer) -> None:
        """The hub's tails of this topic and its pacer (given on registration, before any
        assignment)."""
        self._tails = tails
        self._pacer = pacer

    # --- assignment (synchronous: callers rely on nothing running in between) -----------------
    @property
    def partitions(self) -> set[int]:
        return self.subscription.partitions

    def assign(self, positions: Mapping[int, StartPosition]) -> None:
        """Make `positions` the assigned partitions: revoke the others, keep the ones already
        assigned (they continue where they are), start the new ones at their position.
        Nothing is sent until `kick` (the caller sends its event first)."""
        current = self.subscription.partitions
        self.subscription.assign({p: pos.offset for p, pos in positions.items()}, self._tails)
        for partition in current - set(positions):
            self._start.pop(partition, None)
        self._wake_replay()  # revoked partitions took their held-back records along
        for partition, position in positions.items():
            if partition not in current:
                self._start[partition] = position.offset

    def partitions_added(self, partitions: int) -> None:
        """The topic grew: a subscriber of all partitions starts the new ones at their start."""
        if self._follow_new_partitions and not self.done:
            assigned = {p: StartPosition(0) for p in range(partitions)}
            self.assign(assigned)
            self.kick()

    def next_offsets(self) -> dict[int, int]:
        """Per assigned partition, the offset of the next record to be sent."""
        return self.subscription.next_offsets()

    def sent_positions(self) -> dict[int, int]:
        """Per assigned partition that has handed anything to the connection (or skipped it),
        the offset after it (what auto-commit commits)."""
        return {
            p: o for p, o in self.subscription.next_offsets().items() if o != self._start.get(p)
        }

    def kick(self) -> None:
        """Send what the tail has for the live partitions now; start replays if needed."""
        records, size = self.deliver_live()
        if records:
            self._records_out.inc(records)
            self._bytes_out.inc(size)

    # --- delivery -----------------------------------------------------------------------------
    def deliver_live(self) -> tuple[int, int]:
        """Write what the live partitions have to send (the hub's fan-out pass calls this right
        after commits); returns (records, bytes) written, for the caller to count."""
        if self.done:
            return 0, 0
        subscription = self.subscription
        deliveries = subscription.poll(self._tails)
        if subscription.replay_pending and self._replayer is None:
            subscription.replay_pending = False
            self._replayer = asyncio.get_running_loop().create_task(self._replay_loop())
        if subscription.buffering:
            return self._release(asyncio.get_running_loop().time())
        if not deliveries:
            return 0, 0
        encoder = self._encoder
        if len(deliveries) == 1 and deliveries[0][4] is None:
            _, tail, start, end, _ = deliveries[0]
            data = tail.joined(start, encoder)
            records = end - start
        else:
            records = 0
            parts: list[bytes] = []
            for _, tail, start, end, entries in deliveries:
                if entries is None:
                    parts.append(tail.joined(start, encoder))
                    records += end - start
                else:
                    topic = self.topic
                    parts.extend(e.encoded(topic, encoder) for e in entries)
                    records += len(entries)
            data = b"".join(parts)
        self._connection.write(data)
        self._check_buffer()
        return records, len(data)

    def send_event(self, event: Event) -> None:
        """Send a non-record message in order with the records. Answers to a client that sends
        but does not read count against its buffer too."""
        if self.done:
            return
        self._connection.send_event(event)
        self._check_buffer()

    def _check_buffer(self) -> None:
        buffered = self._connection.buffered()
        if buffered <= self._max_buffer:
            return
        if self._policy.on_overflow(self.subscription, buffered) is Overflow.CLOSE:
            self._too_slow()
        else:
            self._full = True
            self.subscription.start_buffering()
            self._wait_for_pacer()

    def _too_slow(self) -> None:
        self._slow_closes.inc()
        self.finish(SessionEnd.TOO_SLOW)

    def _wait_for_pacer(self) -> None:
        if self._pacer is not None:
            self._pacer.add(self)

    # --- held-back records (on_slow=conflate, max_rate=) ---------------------------------------
    def _release(self, now: float) -> tuple[int, int]:
        """Write what may leave the backlog now; returns (records, bytes) written. Schedules
        the rest with the pacer, or ends the session if keyless records alone overflow."""
        subscription = self.subscription
        backlog = subscription.backlog
        assert backlog is not None
        if backlog.keyless_bytes > self._max_buffer:
            self._too_slow()
            return 0, 0
        if self._full:
            if self._connection.buffered() > self._max_buffer // 2:
                self._wait_for_pacer()
                return 0, 0
            self._full = False
        if self._max_rate is None:
            items = backlog.take()
        else:
            if self._rate is None:
                self._rate = RateBudget(self._max_rate, now)
            items = backlog.take(self._rate.available(now))
            self._rate.spend(len(items))
        self._wake_replay()
        if not subscription.paced and not backlog:
            subscription.stop_buffering()
        if backlog:
            self._wait_for_pacer()
        if not items:
            return 0, 0
        data = b"".join(map(self._encode, items))
        self._connection.write(data)
        self._check_buffer()
        return len(items), len(data)

    def _wake_replay(self) -> None:
        """A paced replay waiting for room in the backlog reads on once there is."""
        room, backlog = self._room, self.subscription.backlog
        if room is not None and (backlog is None or backlog.keyless_bytes <= self._max_buffer // 2):
            self._room = None
            if not room.done():
                room.set_result(None)

    def _encode(self, unsent: Unsent[Keyed]) -> bytes:
        item = unsent.item
        if isinstance(item, TailEntry):
            if not unsent.conflated:
                return item.encoded(self.topic, self._encoder)
            record = item.record
        else:
            assert isinstance(item, StoredRecord)
            record = item
        if unsent.conflated:
            return self._connection.conflated_record(self.topic, record, unsent.conflated)
        return self._encoder.record(self.topic, record)

    def pace(self, now: float) -> bool:
        """The pacer's tick: release what may go now; True while something still waits."""
        if self.done:
            return False
        if self._full or self.subscription.backlog:
            records, size = self._release(now)
            if records:
                self._records_out.inc(records)
                self._bytes_out.inc(size)
        return not self.done and (self._full or bool(self.subscription.backlog))

    def pace_failed(self) -> None:
        self.finish(EddyError("delivery failed"))

    # --- the session --------------------------------------------------------------------------
    def finish(self, end: End) -> None:
        """End the subscription; `run` returns `end` (None: the client is gone)."""
        if self.done:
            return
        self.done, self.end = True, end
        if self._pacer is not None:
            self._pacer.discard(self)
        if self._replayer is not None and self._replayer is not asyncio.current_task():
            self._replayer.cancel()
        runner = self._runner
        if runner is not None and runner is not asyncio.current_task():
            self._cancelled_runner = True
            runner.cancel()  # it waits for the client's next frame
        if self.on_end is not None:
            on_end, self.on_end = self.on_end, None
            on_end(end)

    def receive_frame(self, _frame: str | bytes) -> None:
        """A client frame on a plain subscription (without a task): answered with an error."""
        self.send_event(Refused(InvalidRequest(REFUSAL)))

    async def run(
        self, incoming: AsyncIterator[str | bytes], on_frame: FrameHandler | None = None
    ) -> End:
        """Take the client's frames (to `on_frame`) until the subscription ends; return why.
        This is the session's only long-lived task."""
        handler = on_frame or self._refuse_frame
        runner = self._runner = asyncio.current_task()
        try:
            if not self.done:
                async for frame in incoming:
                    await handler(frame)
                    if self.done:
                        break
                self.finish(None)  # the client closed the connection (or we ended it)
        except asyncio.CancelledError:
            if not self._cancelled_runner:
                raise  # cancelled from outside (the server stops the task)
            assert runner is not None
            runner.uncancel()
        finally:
            self._runner = None
            if self._replayer is not None:
                self._replayer.cancel()
                await asyncio.gather(self._replayer, return_exceptions=True)
        return self.end

    async def _refuse_frame(self, frame: str | bytes) -> None:
        self.receive_frame(frame)

    async def _replay_loop(self) -> None:
        try:
            await self._replay_all()
        except EddyError as exc:  # the topic was deleted, storage failed
            self.finish(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay of %s failed", self.topic)
            self.finish(EddyError("replay failed"))
        finally:
            if self._replayer is asyncio.current_task():
                self._replayer = None

    async def _replay_all(self) -> None:
        engine, topic, subscription = self._engine, self.topic, self.subscription
        while not self.done:
            backlog = subscription.backlog
            if subscription.paced and backlog is not None and backlog.keyless_bytes:
                # Paced: replayed records wait in the backlog for their slots; read on once
                # the keyless ones (which do not conflate) are down to half the limit.
                while not self.done and backlog.keyless_bytes > self._max_buffer // 2:
                    self._room = asyncio.get_running_loop().create_future()
                    await self._room
            read = subscription.replay_next()
            if read is None:
                return
            tail = self._tails.get(read.partition)
            chunk_bytes = REPLAY_CHUNK_BYTES
            if subscription.paced:  # what it reads waits in the backlog: keep within the limit
                chunk_bytes = max(1, min(chunk_bytes, self._max_buffer // 2))
            if tail is not None and tail.start <= read.offset < tail.end:
                # Close to the end: the tail has them, encoded already; no storage read.
                entries = _up_to(tail.entries(read.offset), REPLAY_CHUNK_RECORDS, chunk_bytes)
                chosen = subscription.replayed(read, entries, tail.end, self._tails)
                count = len(chosen)
                data = b"".join(e.encoded(topic, self._encoder) for e in chosen)
                await asyncio.sleep(0)  # no I/O on this path: let others run between chunks
            else:
                high_watermark_before = engine.high_watermark(topic, read.partition)
                records = await engine.read(
                    topic, read.partition, read.offset, REPLAY_CHUNK_RECORDS, chunk_bytes
                )
                if self.done:
                    return
                found = subscription.replayed(read, records, high_watermark_before, self._tails)
                count = len(found)
                data = b"".join(self._encoder.record(topic, r) for r in found)
            if data:
                self._connection.write(data)
                self._records_out.inc(count)
                self._bytes_out.inc(len(data))
            # A partition that reached the end is live now: send what came meanwhile at once.
            self.kick()
            await self._connection.drained()  # replay at the reader's pace


def _up_to(entries: Sequence[TailEntry], count: int, max_bytes: int) -> Sequence[TailEntry]:
    """The first `count` entries, fewer if they pass `max_bytes` (at least one)."""
    total = 0
    for index, entry in enumerate(entries[:count]):
        total += entry.record.size
        if total > max_bytes and index:
            return entries[:index]
    return entries[:count]

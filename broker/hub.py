"""Fan-out: the engine tells the hub (a `LogListener`) after each commit; the hub appends the
records to the partition's tail (`tail.py`) and runs a fan-out pass over the topic's subscribers,
each of which writes the tail's pre-encoded bytes from its own position (`Subscriber.deliver_live`).

A pass starts one event-loop step after the commit that calls for it, so the request that
produced the records is answered first, and commits of the same moment (a burst of produce
requests) go to each subscriber in one write. It visits at most `FANOUT_STEP` subscribers (and
spends about `STEP_SECONDS`) per event-loop step and then yields, so however many subscribers a
topic has, produce requests, /healthz and /metrics wait at most one short step per turn.
Commits that arrive during a pass are picked up by the subscribers it has not reached yet (they
write both commits at once) and by one more pass for the others: each subscriber always writes
from its own position, so per-partition order holds however passes and commits interleave.

Tails are kept for topics that have subscribers. Long-polling fetches wait here too. Nothing here
touches storage I/O or sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from eddy.broker.events import End, SessionEnd
from eddy.broker.metrics import Metrics, Transport
from eddy.broker.pacer import Pacer
from eddy.broker.tail import PartitionTail
from eddy.models.errors import EddyError, TopicNotFound
from eddy.models.log import StoredRecord
from eddy.storage import Engine

if TYPE_CHECKING:
    from eddy.broker.subscriber import Subscriber

log = logging.getLogger("eddy.hub")

FANOUT_STEP = 250  # at most this many subscribers written to per event-loop step
STEP_SECONDS = 0.0005  # and for at most about this long: a produce request waits little for it
CLOCK_EVERY = 8  # subscribers between looks at the clock


class TopicSession(Protocol):
    """An open streaming session on a topic (subscriber or publisher) that the hub can end."""

    topic: str

    def finish(self, end: End) -> None: ...


class _TopicFanout:
    """One topic's tails, subscribers and the fan-out pass in progress."""

    __slots__ = ("dirty", "index", "pass_", "scheduled", "subscribers", "tails", "topic")

    def __init__(self, topic: str, tails: dict[int, PartitionTail]) -> None:
        self.topic = topic
        self.tails = tails
        self.subscribers: dict[Subscriber, None] = {}  # insertion-ordered set
        self.pass_: list[Subscriber] | None = None
        self.index = 0
        self.dirty = False  # a commit came that not every subscriber has been offered yet
        self.scheduled = False


class FanoutHub:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self._engine = engine
        self._metrics = metrics
        self._topics: dict[str, _TopicFanout] = {}
        self._publishers: dict[str, set[TopicSession]] = defaultdict(set)
        self._waiters: dict[tuple[str, int], list[asyncio.Future[None]]] = defaultdict(list)
        self.pacer = Pacer()  # sends what subscribers hold back (max_rate=, on_slow=conflate)
        self.closing = False  # the server is shutting down: long-polls stop waiting

    # --- sessions -----------------------------------------------------------------------------
    def register(self, subscriber: Subscriber) -> None:
        """Start offering the topic's commits to `subscriber` (before it is assigned anything:
        its positions are checked against the tails it gets here)."""
        fanout = self._topics.get(subscriber.topic)
        if fanout is None:
            topic = subscriber.topic
            partitions = self._engine.get_topic(topic).partitions
            self._engine.follow(topic)  # before the tails start at the high watermarks
            tails = {
                p: PartitionTail(topic, self._engine.high_watermark(topic, p))
                for p in range(partitions)
            }
            fanout = self._topics[topic] = _TopicFanout(topic, tails)
        fanout.subscribers[subscriber] = None
        subscriber.attach(fanout.tails, self.pacer)

    def unregister(self, subscriber: Subscriber) -> None:
        fanout = self._topics.get(subscriber.topic)
        if fanout is not None:
            fanout.subscribers.pop(subscriber, None)
            if not fanout.subscribers and fanout.pass_ is None:
                self._drop(fanout)

    def _drop(self, fanout: _TopicFanout) -> None:
        del self._topics[fanout.topic]
        self._engine.unfollow(fanout.topic)

    def register_publisher(self, session: TopicSession) -> None:
        self._publishers[session.topic].add(session)

    def unregister_publisher(self, session: TopicSession) -> None:
        sessions = self._publishers.get(session.topic)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._publishers[session.topic]

    # --- LogListener: the engine tells the hub what the log did --------------------------------
    def on_partitions_added(self, topic: str, partitions: int) -> None:
        fanout = self._topics.get(topic)
        if fanout is None:
            return
        for p in range(len(fanout.tails), partitions):
            fanout.tails[p] = PartitionTail(topic, self._engine.high_watermark(topic, p))
        for subscriber in list(fanout.subscribers):
            subscriber.partitions_added(partitions)

    def on_topic_deleted(self, topic: str) -> None:
        self.close_topic(topic, TopicNotFound(topic))

    def on_commit(self, topic: str, records: Sequence[StoredRecord]) -> None:
        """Right after a commit, with the committed records in offset order per partition."""
        fanout = self._topics.get(topic)
        if fanout is not None and records:
            first = records[0].partition
            if all(r.partition == first for r in records):
                self._append(fanout, first, records)
            else:
                by_partition: dict[int, list[StoredRecord]] = defaultdict(list)
                for record in records:
                    by_partition[record.partition].append(record)
                for partition, part in by_partition.items():
                    self._append(fanout, partition, part)
            fanout.dirty = True
            if not fanout.scheduled:
                fanout.scheduled = True
                asyncio.get_running_loop().call_soon(self._defer, fanout)
        if self._waiters:
            for partition in {r.partition for r in records}:
                self._wake((topic, partition))

    def _append(
        self, fanout: _TopicFanout, partition: int, records: Sequence[StoredRecord]
    ) -> None:
        tail = fanout.tails.get(partition)
        if tail is None:  # a partition the hub has not heard of yet: start its tail here
            tail = fanout.tails[partition] = PartitionTail(fanout.topic, records[0].offset)
        tail.append(records)

    def _defer(self, fanout: _TopicFanout) -> None:
        """One loop step between a commit and its pass: the committing request's answer is
        written first, and further commits of this step join the same pass."""
        asyncio.get_running_loop().call_soon(self._step, fanout)

    def _step(self, fanout: _TopicFanout) -> None:
        """One step of the fan-out pass: at most FANOUT_STEP subscribers, then yield."""
        fanout.scheduled = False
        if fanout.pass_ is None:
            if not fanout.dirty:
                return
            fanout.dirty = False
            fanout.pass_, fanout.index = list(fanout.subscribers), 0
        subscribers, index = fanout.pass_, fanout.index
        stop = min(index + FANOUT_STEP, len(subscribers))
        deadline = time.perf_counter() + STEP_SECONDS
        counted: dict[Transport, list[int]] = {}  # via -> [records, bytes]
        while index < stop:
            subscriber = subscribers[index]
            index += 1
            try:
                sent, written = subscriber.deliver_live()
            except Exception:  # one broken session must not stop the others' delivery
                log.exception("fan-out to a subscriber of %s failed", fanout.topic)
                subscriber.finish(EddyError("delivery failed"))
                continue
            if sent:
                counts = counted.get(subscriber.via)
                if counts is None:
                    counted[subscriber.via] = [sent, written]
                else:
                    counts[0] += sent
                    counts[1] += written
            if index % CLOCK_EVERY == 0 and time.perf_counter() > deadline:
                break
        fanout.index = index
        for via, (records, size) in counted.items():
            self._metrics.count_delivered(fanout.topic, via, records, size)
        if fanout.index >= len(fanout.pass_):
            fanout.pass_ = None
            if not fanout.dirty:
                if not fanout.subscribers and self._topics.get(fanout.topic) is fanout:
                    self._drop(fanout)
                return
        fanout.scheduled = True
        asyncio.get_running_loop().call_soon(self._step, fanout)

    # --- long-polls ---------------------------------------------------------------------------
    def _wake(self, key: tuple[str, int]) -> None:
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for_data(self, topic: str, partition: int, seconds: float) -> None:
        """Return when the partition gets a commit (or is deleted), or after `seconds`."""
        if self.closing:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = (topic, partition)
        self._waiters[key].append(waiter)
        self._engine.follow(topic)
        try:
            await asyncio.wait_for(waiter, seconds)
        except TimeoutError:
            pass
        finally:
            self._engine.unfollow(topic)
            waiters = self._waiters.get(key)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]

    # --- ending sessions ----------------------------------------------------------------------
    def close_topic(self, topic: str, end: End) -> None:
        """The topic is gone (or the server stops): end its sessions and wake its long-polls."""
        fanout = self._topics.pop(topic, None)
        if fanout is not None:
            self._engine.unfollow(topic)
        sessions: list[TopicSession] = [*(fanout.subscribers if fanout else ())]
        sessions += self._publishers.pop(topic, ())
        for session in sessions:
            session.finish(end)
        for key in [k for k in self._waiters if k[0] == topic]:
            self._wake(key)

    def close_all(self) -> None:
        """Server shutdown: end every open streaming session and long-poll."""
        self.closing = True
        for topic in {*self._topics, *self._publishers}:
            self.close_topic(topic, SessionEnd.SHUTDOWN)
        for key in list(self._waiters):
            self._wake(key)

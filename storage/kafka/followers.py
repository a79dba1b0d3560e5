"""Live fan-out on the Kafka engine: a topic that has subscribers or long-polls on this server is
*followed*. One consumer per topic (manual assignment, no group) tails all its partitions and
announces what it reads through `LogListener.on_commit`, in offset order, whoever produced it
(this server, another Eddy server, any Kafka producer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from eddy.models.log import AppendedRecord
from eddy.storage.kafka.base import KafkaEngineBase
from eddy.storage.kafka_client import KafkaSettings, stored_record

log = logging.getLogger("eddy.storage.kafka")

FOLLOW_LINGER = 5.0  # seconds a topic stays followed after its last subscriber left
ANNOUNCE_WAIT = 10.0  # most seconds a produce waits for its follower to announce its records


@dataclass(eq=False)
class Follower:
    """One consumer tailing all partitions of a topic for this server."""

    topic: str
    consumer: AIOKafkaConsumer
    positions: dict[int, int]
    task: asyncio.Task[None] | None = None
    started: bool = False  # its consumer runs (assignments can be changed)
    users: int = 0
    linger: asyncio.TimerHandle | None = None
    # (partition, offset) -> futures resolved once the follower announced past that offset
    waiters: dict[int, list[tuple[int, asyncio.Future[None]]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def wake(self, partition: int) -> None:
        position = self.positions.get(partition, 0)
        pending = self.waiters.get(partition)
        if not pending:
            return
        keep = []
        for offset, future in pending:
            if offset < position:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((offset, future))
        self.waiters[partition] = keep

    def wake_all(self) -> None:
        for pending in self.waiters.values():
            for _, future in pending:
                if not future.done():
                    future.set_result(None)
        self.waiters.clear()


class KafkaFollowers(KafkaEngineBase):
    """`follow`/`unfollow`, and the tails they start and stop."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self._followers: dict[str, Follower] = {}

    def follow(self, topic: str) -> None:
        """Someone on this server wants the topic's commits announced (a subscriber, a
        long-poll): tail it, starting at the high watermarks this server knows."""
        if self._closed or topic not in self._topics:
            return
        follower = self._followers.get(topic)
        if follower is None:
            states = self._topics[topic].partitions
            follower = Follower(
                topic,
                self._consumer(
                    fetch_max_wait_ms=self.settings.fetch_max_wait_ms, auto_offset_reset="earliest"
                ),
                {p: s.high_watermark for p, s in enumerate(states)},
            )
            self._followers[topic] = follower
            follower.task = asyncio.create_task(self._follow(follower), name=f"follow-{topic}")
        follower.users += 1
        if follower.linger is not None:
            follower.linger.cancel()
            follower.linger = None

    def unfollow(self, topic: str) -> None:
        follower = self._followers.get(topic)
        if follower is None:
            return
        follower.users -= 1
        if follower.users <= 0 and follower.linger is None:
            follower.linger = asyncio.get_running_loop().call_later(
                FOLLOW_LINGER, self._linger_ended, follower
            )

    def _linger_ended(self, follower: Follower) -> None:
        follower.linger = None
        if follower.users <= 0 and self._followers.get(follower.topic) is follower:
            del self._followers[follower.topic]
            follower.wake_all()
            self._background(self._stop_follower(follower))

    def _assign_follower(self, follower: Follower) -> None:
        name = self._kafka_name(follower.topic)
        partitions = [TopicPartition(name, p) for p in sorted(follower.positions)]
        follower.consumer.assign(partitions)
        for tp in partitions:
            follower.consumer.seek(tp, follower.positions[tp.partition])

    async def _follow(self, follower: Follower) -> None:
        consumer = follower.consumer
        await consumer.start()
        self._assign_follower(follower)
        follower.started = True
        topic = follower.topic
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                log.warning("following %s: %s; retrying", topic, exc)
                await asyncio.sleep(0.5)
                continue
            for tp, messages in batches.items():
                # records under the follower's position can come once more after a reassign
                position = follower.positions.get(tp.partition, 0)
                records = [stored_record(m) for m in messages if m.offset >= position]
                if not records or topic not in self._topics:
                    continue
                follower.positions[tp.partition] = records[-1].offset + 1
                self._saw(topic, tp.partition, records[-1].offset + 1)
                self._announce_commit(topic, records)
                follower.wake(tp.partition)

    async def _stop_follower(self, follower: Follower) -> None:
        follower.wake_all()
        if follower.linger is not None:
            follower.linger.cancel()
        if follower.task is not None:
            follower.task.cancel()
            await asyncio.gather(follower.task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await follower.consumer.stop()

    async def _announced(self, topic: str, appended: Sequence[AppendedRecord]) -> None:
        """On a followed topic, wait until the follower has announced these records (so the
        producer's answer comes after the fan-out saw them, as on the embedded engine)."""
        follower = self._followers.get(topic)
        if follower is None or follower.task is None:
            return
        last: dict[int, int] = {}
        for record in appended:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        loop = asyncio.get_running_loop()
        waits = []
        for partition, offset in last.items():
            if follower.positions.get(partition, 0) <= offset:
                waiter: asyncio.Future[None] = loop.create_future()
                follower.waiters[partition].append((offset, waiter))
                waits.append(waiter)
        if waits:
            _, pending = await asyncio.wait(waits, timeout=ANNOUNCE_WAIT)
            if pending:
                log.warning("the follower of %s has not seen an acked produce yet", topic)

"""The Kafka engine: the same `Engine` over an existing Kafka cluster (`--engine kafka`).

Topics are Kafka topics, records Kafka records, committed group offsets live in Kafka. The engine
keeps what the interface needs synchronously (topics, partition counts, log start offsets and high
watermarks, group offsets) in memory, refreshed from the cluster every `refresh_interval` and moved
forward at once by what this server sees itself (produce acks, fetched records).

- Produce: one aiokafka producer with acks=all (and Kafka's idempotent producer when enabled). A
  batch's records for one partition go as one Kafka record batch, which Kafka appends atomically;
  a batch spanning partitions is one record batch per partition, each atomic on its own (no Kafka
  transaction). The future resolves once the cluster acknowledged every part.
- Live fan-out: a topic that has subscribers or long-polls on this server is *followed*: one
  consumer per topic (manual assignment, no group) tails all its partitions and announces what it
  reads through `LogListener.on_commit`, in offset order, whoever produced it (this server, another
  Eddy server, any Kafka producer). A produce to a followed topic resolves after its records were
  announced, as on the embedded engine.
- Reads and offset lookups: a small pool of group-less consumers (seek, fetch) and ListOffsets.
- Groups: offsets are committed to Kafka as an outside tool does (OffsetCommit without a
  generation) and read back with OffsetFetch; membership stays on each Eddy server (README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    IncompatibleBrokerVersion,
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OffsetOutOfRangeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.protocol.commit import OffsetCommitRequest
from aiokafka.structs import OffsetAndMetadata

from eddy.models.errors import (
    EddyError,
    GroupActive,
    InvalidRequest,
    NotAssigned,
    OutcomeUnknown,
    PartitionNotFound,
    RecordTooLarge,
    TopicExists,
    TopicNotFound,
    Unavailable,
)
from eddy.storage.engine import (
    AppendBatch,
    AppendedRecord,
    CommittedOffset,
    Engine,
    PartitionState,
    ProducerWindow,
    StoredRecord,
    TopicMeta,
    record_size,
)
from eddy.storage.headers import kafka_headers
from eddy.storage.kafka_client import (
    KafkaSettings,
    encode_key,
    stored_record,
)

log = logging.getLogger("eddy.storage.kafka")

# Kafka's own topic names: 1-249 of [a-zA-Z0-9._-]; Eddy shows only names it accepts itself.
_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
# The topic configs Eddy knows (broker/topic_rules.py); the others stay Kafka's business.
KNOWN_CONFIGS = (
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "max.message.bytes",
    "delete.retention.ms",
)
READERS = 4  # consumers for reads (replays and REST fetches), each doing one read at a time
FOLLOW_LINGER = 5.0  # seconds a topic stays followed after its last subscriber left
RETRY_AFTER = 1.0  # seconds (Retry-After) after a produce the cluster did not take in time
ANNOUNCE_WAIT = 10.0  # most seconds a produce waits for its follower to announce its records
BATCH_BYTES = 64 * 1_048_576  # record batch buffer: a request's records for a partition fit one
# Group errors that mean Kafka consumers are members of the group right now.
_ACTIVE_GROUP_ERRORS = {
    "UnknownMemberIdError",
    "IllegalGenerationError",
    "RebalanceInProgressError",
}


def _kafka_unavailable(what: str, exc: BaseException) -> Unavailable:
    return Unavailable(f"{what}: the Kafka cluster answered {type(exc).__name__}: {exc}")


@dataclass(eq=False)
class _Produce:
    """One `append` on its way to the cluster, with its deadline (--kafka-produce-timeout)."""

    batch: AppendBatch
    future: asyncio.Future[list[AppendedRecord]]
    # aiokafka's MessageBatch per partition part handed to the producer (None: not found)
    handed: list[tuple[TopicPartition, Any]] = field(default_factory=list)
    abandoned: bool = False  # answered by its deadline: what is not sent yet is not sent
    deadline: asyncio.TimerHandle | None = None

    def settled(self, _: object) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None


_Send = _Produce


@dataclass
class _Partition:
    log_start: int = 0
    high_watermark: int = 0


@dataclass
class _Topic:
    meta: TopicMeta
    partitions: list[_Partition]
    known_since: float = field(default_factory=time.monotonic)  # when this server learnt of it


@dataclass(eq=False)
class _Follower:
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


@dataclass(eq=False)
class _GroupSeat:
    """This server's place in a Kafka consumer group on one topic: one group consumer for all
    of its WebSocket members of the group; Kafka gives it a share of the partitions, which the
    broker's coordinator divides among the local members."""

    group: str
    topic: str
    consumer: AIOKafkaConsumer
    on_change: Callable[[], None]
    partitions: set[int] = field(default_factory=set)
    assigned: asyncio.Event = field(default_factory=asyncio.Event)
    poller: asyncio.Task[None] | None = None


class _SeatListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: KafkaEngine, seat: _GroupSeat) -> None:
        self._engine = engine
        self._seat = seat

    async def on_partitions_revoked(self, revoked: Any) -> None:
        seat = self._seat
        lost = {tp.partition for tp in revoked}
        if lost & seat.partitions:
            seat.partitions -= lost
            self._engine._seat_changed(seat)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        seat = self._seat
        # The consumer only holds the membership: records reach members through the
        # follower and reads, so it fetches nothing.
        seat.consumer.pause(*assigned)
        await self._engine._load_committed(seat, assigned)
        seat.partitions = {tp.partition for tp in assigned}
        seat.assigned.set()
        self._engine._seat_changed(seat)


class KafkaEngine(Engine):
    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._prefix = settings.namespace
        self._topics: dict[str, _Topic] = {}
        self._offsets: dict[tuple[str, str, int], CommittedOffset] = {}
        # bumped by every local change of a group's offsets, so that a refresh that read Kafka
        # before the change does not put the old view back
        self._group_changes: dict[str, int] = defaultdict(int)
        self._followers: dict[str, _Follower] = {}
        self._seats: dict[tuple[str, str], _GroupSeat] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._lookup: AIOKafkaConsumer | None = None  # ListOffsets (earliest/latest/by time)
        self._readers: asyncio.Queue[AIOKafkaConsumer] | None = None
        self._all_readers: list[AIOKafkaConsumer] = []
        self._refresher: asyncio.Task[None] | None = None
        # per topic: batches waiting to be handed to the producer, and the task handing them
        # (one per topic, so a topic whose metadata is slow holds up no other topic)
        self._sends: dict[str, tuple[asyncio.Queue[_Send], asyncio.Task[None]]] = {}
        self._open = False
        self._acks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._warned: set[str] = set()
        self._stopping: set[asyncio.Task[None]] = set()

    # --- names --------------------------------------------------------------------------------
    def _kafka_name(self, name: str) -> str:
        return self._prefix + name

    def _eddy_name(self, kafka_name: str) -> str | None:
        if not kafka_name.startswith(self._prefix) or kafka_name.startswith("__"):
            return None
        name = kafka_name[len(self._prefix) :]
        return name if _NAME.match(name) and name not in (".", "..") else None

    # --- lifecycle ----------------------------------------------------------------------------
    def _consumer(self, **options: Any) -> AIOKafkaConsumer:
        defaults: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "none"}
        return AIOKafkaConsumer(
            **{**self.settings.client_options(AIOKafkaConsumer), **defaults, **options}
        )

    async def open(self) -> None:
        settings = self.settings
        try:
            self._admin = AIOKafkaAdminClient(**settings.client_options(AIOKafkaAdminClient))
            await self._admin.start()
            self._producer = AIOKafkaProducer(
                **settings.client_options(AIOKafkaProducer),
                acks="all",
                enable_idempotence=settings.idempotence,
                max_batch_size=BATCH_BYTES,
                max_request_size=BATCH_BYTES,
                linger_ms=0,
            )
            await self._producer.start()
            self._lookup = self._consumer()
            await self._lookup.start()
            self._readers = asyncio.Queue()
            for _ in range(READERS):
                reader = self._consumer(fetch_max_wait_ms=min(100, settings.fetch_max_wait_ms))
                await reader.start()
                self._all_readers.append(reader)
                self._readers.put_nowait(reader)
            await self._refresh()
        except KafkaError as exc:
            await self.close()
            raise _kafka_unavailable(
                f"cannot use the Kafka cluster at {settings.bootstrap_servers}", exc
            ) from exc
        except BaseException:
            await self.close()
            raise
        self._open = True
        self._refresher = asyncio.create_task(self._refresh_loop(), name="kafka-refresh")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # batches queued already are handed to the producer first (a bounded wait)
        joins = [asyncio.create_task(q.join()) for q, _ in self._sends.values()]
        if joins:
            await asyncio.wait(joins, timeout=5)
            for join in joins:
                join.cancel()
        senders = [task for _, task in self._sends.values()]
        for queue, _ in self._sends.values():
            for future in _drain(queue):
                if not future.done():
                    future.set_exception(Unavailable("storage is closing"))
        self._sends = {}
        for task in (self._refresher, *senders):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # produces already handed to the producer finish: their futures resolve or fail
        if self._acks:
            await asyncio.wait(set(self._acks), timeout=10)
        seats, self._seats = list(self._seats.values()), {}
        for seat in seats:
            await self._stop_seat(seat)
        followers, self._followers = list(self._followers.values()), {}
        for follower in followers:
            await self._stop_follower(follower)
        if self._stopping:
            await asyncio.wait(set(self._stopping), timeout=10)
        clients: list[Any] = [self._producer, self._lookup, *self._all_readers]
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
        self._producer = self._lookup = self._admin = None
        self._all_readers = []

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (stopping a client) in a task that `close` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _live_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None or self._closed:
            raise Unavailable("storage is not open")
        return self._admin

    async def check_writable(self) -> None:
        admin = self._live_admin()
        try:
            await asyncio.wait_for(admin.describe_cluster(), self.settings.produce_timeout)
        except (KafkaError, TimeoutError) as exc:
            raise _kafka_unavailable("the Kafka cluster is not reachable", exc) from exc

    # --- the picture of the cluster -----------------------------------------------------------
    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            try:
                await self._refresh()
            except (KafkaError, TimeoutError, EddyError) as exc:
                log.warning("refreshing from the Kafka cluster failed: %s", exc)
            except Exception:
                log.exception("refreshing from the Kafka cluster failed")

    async def _refresh(self) -> None:
        """Topics, partitions, configs, offsets and groups as the cluster has them now."""
        admin = self._live_admin()
        started = time.monotonic()
        described = await admin.describe_topics()
        seen: dict[str, int] = {}
        for entry in described:
            name = self._eddy_name(entry["topic"])
            if name is None or entry.get("is_internal") or entry["error_code"]:
                continue
            seen[name] = len(entry["partitions"])
        # (a topic this server made after the metadata was read is not gone)
        gone = [n for n, t in self._topics.items() if n not in seen and t.known_since < started]
        for name in gone:
            del self._topics[name]
            self._forget_topic(name)
            self._announce_topic_deleted(name)
        new = [n for n in seen if n not in self._topics]
        try:
            configs = await self._describe_configs(list(seen)) if seen else {}
        except KafkaError as exc:  # (librdkafka's mock cluster has no DescribeConfigs)
            log.debug("DescribeConfigs failed: %s", exc)
            configs = {}
        for name, count in seen.items():
            topic = self._topics.get(name)
            config = configs.get(name, {})
            if topic is None:
                self._topics[name] = _Topic(
                    TopicMeta(name, count, config, 0), [_Partition() for _ in range(count)]
                )
                continue
            if name in configs:
                topic.meta = TopicMeta(name, topic.meta.partitions, config, 0)
            if count > topic.meta.partitions:
                self._grow(topic, count)
        await self._refresh_offsets(list(seen))
        if new:
            log.info("Kafka topics found: %s", ", ".join(sorted(new)))
        try:
            await self._refresh_groups()
        except KafkaError as exc:
            self._warn_once(f"reading consumer groups from Kafka failed: {exc}")

    async def _describe_configs(self, names: list[str]) -> dict[str, dict[str, Any]]:
        admin = self._live_admin()
        resources = [ConfigResource(ConfigResourceType.TOPIC, self._kafka_name(n)) for n in names]
        configs: dict[str, dict[str, Any]] = {}
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                error_code, _, _, kafka_name, entries = resource[:5]
                name = self._eddy_name(kafka_name)
                if error_code or name is None:
                    continue
                config: dict[str, Any] = {}
                for key, value, on_topic in _topic_level_entries(entries):
                    if key in KNOWN_CONFIGS and on_topic and value is not None:
                        config[key] = _config_value(value)
                configs[name] = config
        return configs

    async def _refresh_offsets(self, names: list[str]) -> None:
        lookup = self._lookup
        if lookup is None or not names:
            return
        partitions = [
            TopicPartition(self._kafka_name(n), p)
            for n in names
            if n in self._topics
            for p in range(len(self._topics[n].partitions))
        ]
        starts = await lookup.beginning_offsets(partitions)
        ends = await lookup.end_offsets(partitions)
        for tp, start in starts.items():
            name = self._eddy_name(tp.topic)
            topic = self._topics.get(name) if name else None
            if topic is None or tp.partition >= len(topic.partitions):
                continue
            state = topic.partitions[tp.partition]
            state.log_start = start
            # Only ever forward: a high watermark this server has seen (an ack, a fetched
            # record) is never taken back by a broker that reports less (Tansu 0.6 after a
            # multi-record batch).
            state.high_watermark = max(state.high_watermark, ends.get(tp, 0), start)

    def _grow(self, topic: _Topic, count: int) -> None:
        old = topic.meta.partitions
        topic.partitions += [_Partition() for _ in range(old, count)]
        topic.meta = TopicMeta(topic.meta.name, count, topic.meta.config, topic.meta.created_at)
        follower = self._followers.get(topic.meta.name)
        if follower is not None:
            for p in range(old, count):
                follower.positions[p] = 0
            if follower.started:
                self._assign_follower(follower)
        self._announce_partitions_added(topic.meta.name, count)

    async def _refresh_groups(self) -> None:
        admin = self._live_admin()
        groups = [
            name
            for name in (self._eddy_group(g[0]) for g in await admin.list_consumer_groups())
            if name is not None
        ]
        fresh: dict[tuple[str, str, int], CommittedOffset] = {}
        changes = dict(self._group_changes)
        now = int(time.time() * 1000)
        # (partitions named: Tansu 0.6 answers OffsetFetch for "all partitions" in a form
        # aiokafka cannot decode)
        partitions = [
            TopicPartition(self._kafka_name(name), p)
            for name, topic in self._topics.items()
            for p in range(len(topic.partitions))
        ]
        for group in groups if partitions else ():
            offsets = await admin.list_consumer_group_offsets(
                self._prefix + group, partitions=partitions
            )
            for tp, meta in offsets.items():
                topic = self._eddy_name(tp.topic)
                if topic is None or meta.offset < 0:
                    continue
                known = self._offsets.get((group, topic, tp.partition))
                at = known.committed_at if known and known.offset == meta.offset else now
                fresh[(group, topic, tp.partition)] = CommittedOffset(
                    group, topic, tp.partition, meta.offset, at, meta.metadata or ""
                )
        # groups this server changed meanwhile keep its newer view
        changed = {g for g, n in self._group_changes.items() if changes.get(g) != n}
        merged = {k: v for k, v in fresh.items() if k[0] not in changed}
        merged.update({k: v for k, v in self._offsets.items() if k[0] in changed})
        self._offsets = merged

    def _warn_once(self, message: str) -> None:
        """A refresh that fails the same way every time is said once, not every interval."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def _eddy_group(self, kafka_group: str) -> str | None:
        if not kafka_group.startswith(self._prefix):
            return None
        name = kafka_group[len(self._prefix) :]
        return name if _NAME.match(name) else None

    # --- topics -------------------------------------------------------------------------------
    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise TopicNotFound(name)
        return topic

    def list_topics(self) -> list[TopicMeta]:
        return [self._topics[name].meta for name in sorted(self._topics)]

    def get_topic(self, name: str) -> TopicMeta:
        return self._topic(name).meta

    async def create_topic(self, name: str, partitions: int, config: dict[str, Any]) -> TopicMeta:
        admin = self._live_admin()
        if name in self._topics:
            raise TopicExists(name)
        new = NewTopic(
            self._kafka_name(name),
            partitions,
            self.settings.replication_factor,
            topic_configs={k: str(v) for k, v in config.items()},
        )
        try:
            response = await admin.create_topics([new])
            _raise_topic_errors(response.topic_errors, name)
        except TopicAlreadyExistsError:
            await self._refresh_topic_soon(name)
            raise TopicExists(name) from None
        except InvalidTopicError as exc:
            # a name Eddy takes that the cluster does not: with --kafka-namespace's prefix, a
            # name of up to 249 characters can pass Kafka's limit of 249 (the client's error)
            raise InvalidRequest(
                f"the Kafka cluster refuses topic '{name}' as '{self._kafka_name(name)}': {exc}",
                {"topic": name},
            ) from exc
        except (KafkaError, AttributeError) as exc:
            # (aiokafka's admin fails with AttributeError when the cluster names no controller,
            # as librdkafka's mock cluster does)
            raise _kafka_unavailable(f"cannot create topic '{name}'", exc) from exc
        meta = TopicMeta(name, partitions, dict(config), 0)
        if name not in self._topics:  # (a refresh may have found it meanwhile)
            self._topics[name] = _Topic(meta, [_Partition() for _ in range(partitions)])
        await self._wait_for_leaders(name)
        return self._topics[name].meta

    async def _wait_for_leaders(self, name: str) -> None:
        """A new topic takes produces once its partitions have leaders in the metadata."""
        producer = self._producer
        if producer is None:
            return
        with contextlib.suppress(KafkaError, TimeoutError):
            await asyncio.wait_for(producer.client._wait_on_metadata(self._kafka_name(name)), 10)

    async def _refresh_topic_soon(self, name: str) -> None:
        """Another server created it: take it into the picture now (not at the next refresh)."""
        with contextlib.suppress(KafkaError, EddyError):
            await self._refresh()

    async def update_topic(
        self, name: str, partitions: int | None, config: dict[str, Any] | None
    ) -> TopicMeta:
        admin = self._live_admin()
        topic = self._topic(name)
        kafka_name = self._kafka_name(name)
        try:
            if config is not None:
                resource = ConfigResource(
                    ConfigResourceType.TOPIC,
                    kafka_name,
                    configs={k: str(v) for k, v in config.items()},
                )
                for response in await admin.alter_configs([resource]):
                    for error_code, message, *_ in response.resources:
                        if error_code:
                            raise for_code(error_code)(message)
                topic.meta = TopicMeta(name, topic.meta.partitions, dict(config), 0)
            if partitions is not None and partitions > topic.meta.partitions:
                await admin.create_partitions({kafka_name: NewPartitions(partitions)})
                self._grow(topic, partitions)
        except UnknownTopicOrPartitionError:
            raise TopicNotFound(name) from None
        except IncompatibleBrokerVersion as exc:
            raise InvalidRequest(
                f"cannot change topic '{name}': the Kafka cluster does not support "
                f"{_request_name(exc)}",
                {"topic": name, "reason": "unsupported_by_cluster"},
            ) from exc
        except (KafkaError, AttributeError) as exc:
            raise _kafka_unavailable(f"cannot change topic '{name}'", exc) from exc
        return topic.meta

    async def delete_topic(self, name: str) -> None:
        admin = self._live_admin()
        self._topic(name)
        try:
            response = await admin.delete_topics([self._kafka_name(name)])
            for topic_error in response.topic_error_codes:
                if topic_error[1]:
                    raise for_code(topic_error[1])(topic_error[0])
        except UnknownTopicOrPartitionError:
            pass  # deleted meanwhile (by another server): the outcome asked for
        except (KafkaError, AttributeError) as exc:
            raise _kafka_unavailable(f"cannot delete topic '{name}'", exc) from exc
        if self._topics.pop(name, None) is not None:
            self._forget_topic(name)
            self._announce_topic_deleted(name)

    def _forget_topic(self, name: str) -> None:
        entry = self._sends.pop(name, None)
        if entry is not None:
            queue, task = entry
            task.cancel()
            for future in _drain(queue):
                if not future.done():
                    future.set_exception(TopicNotFound(name))
        for key in [k for k in self._offsets if k[1] == name]:
            del self._offsets[key]
        follower = self._followers.pop(name, None)
        if follower is not None:
            follower.wake_all()
            self._background(self._stop_follower(follower))

    # --- partitions ---------------------------------------------------------------------------
    def _partition(self, topic: str, partition: int) -> _Partition:
        states = self._topic(topic).partitions
        if not 0 <= partition < len(states):
            raise PartitionNotFound(topic, partition, len(states))
        return states[partition]

    def partition_state(self, topic: str, partition: int) -> PartitionState:
        state = self._partition(topic, partition)
        # size_bytes: Kafka tells it only per log dir (DescribeLogDirs, per broker); 0 here
        return PartitionState(partition, state.log_start, state.high_watermark, 0)

    def _saw(self, topic: str, partition: int, high_watermark: int) -> None:
        """This server learnt that the partition's log reaches at least `high_watermark`."""
        states = self._topics.get(topic)
        if states is not None and partition < len(states.partitions):
            state = states.partitions[partition]
            if high_watermark > state.high_watermark:
                state.high_watermark = high_watermark

    # --- produce ------------------------------------------------------------------------------
    def append(
        self, topic: str, batch: AppendBatch, wait: float = 5.0
    ) -> asyncio.Future[list[AppendedRecord]]:
        partitions = len(self._topic(topic).partitions)
        for record in batch.records:
            if not 0 <= record.partition < partitions:
                raise PartitionNotFound(topic, record.partition, partitions)
        if batch.producer is not None:
            raise _idempotence_unsupported()
        if not self._open or self._closed:
            raise Unavailable("storage is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AppendedRecord]] = loop.create_future()
        produce = _Produce(batch, future)
        produce.deadline = loop.call_later(
            self.settings.produce_timeout, self._expire, topic, produce
        )
        future.add_done_callback(produce.settled)
        entry = self._sends.get(topic)
        if entry is None:
            queue: asyncio.Queue[_Send] = asyncio.Queue()
            task = asyncio.create_task(self._send_loop(topic, queue), name=f"send-{topic}")
            entry = self._sends[topic] = (queue, task)
        entry[0].put_nowait(produce)
        return future

    def _expire(self, topic: str, produce: _Produce) -> None:
        """The produce's deadline passed without the cluster's acknowledgement. Parts the
        producer has not sent yet are taken back, so the answer can say for sure: nothing was
        sent (503 unavailable), or something was and its fate is unknown (outcome_unknown)."""
        produce.deadline = None
        if produce.future.done():
            return
        produce.abandoned = True
        timeout = self.settings.produce_timeout
        # (retry_count counts how often aiokafka's sender took the batch to send it)
        if any(part is None or part.retry_count > 0 for _, part in produce.handed):
            produce.future.set_exception(
                OutcomeUnknown(
                    f"the Kafka cluster has not acknowledged the records sent to '{topic}' "
                    f"within {timeout:g} s: they may be stored (now or once it is back) or "
                    "not; a retry may store them twice",
                    {"topic": topic, "timeout_seconds": timeout},
                    retry_after=RETRY_AFTER,
                )
            )
            return
        for tp, part in produce.handed:
            self._take_back(tp, part)
        produce.future.set_exception(
            Unavailable(
                f"the Kafka cluster did not take the records for '{topic}' within "
                f"{timeout:g} s (nothing was sent); retry later",
                {"topic": topic, "timeout_seconds": timeout},
                retry_after=RETRY_AFTER,
            )
        )

    def _take_back(self, tp: TopicPartition, part: Any) -> None:
        """Remove a batch the producer has not sent yet from its accumulator (it is never
        sent; it had no sequence number yet, which the producer gives a batch when it sends
        it), and wake what waits for it to drain."""
        producer = self._producer
        if producer is None:
            return
        batches = producer._message_accumulator._batches
        queued = batches.get(tp)
        if queued is not None and part in queued:
            queued.remove(part)
            if not queued:
                del batches[tp]
        if not part._drain_waiter.done():
            part._drain_waiter.set_result(None)  # the next batch for tp may go in now
        part.failure(KafkaTimeoutError("taken back at the produce's deadline"))

    async def _send_loop(self, topic: str, queue: asyncio.Queue[_Send]) -> None:
        """Hands a topic's batches to the producer one at a time, in call order (the producer
        keeps that order per partition); their acks are awaited apart, so sends do not wait
        for acks."""
        while True:
            produce = await queue.get()
            batch, future = produce.batch, produce.future
            if future.done():  # answered by its deadline while it waited here: not sent
                queue.task_done()
                continue
            try:
                sent = await self._send(topic, produce)
            except asyncio.CancelledError:  # the topic is gone, or the engine closes
                gone = topic not in self._topics
                for waiting in [future, *_drain(queue)]:
                    if not waiting.done():
                        waiting.set_exception(
                            TopicNotFound(topic) if gone else Unavailable("storage is closing")
                        )
                raise
            except EddyError as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            except KafkaError as exc:
                if not future.done():
                    future.set_exception(_produce_error(topic, exc))
                continue
            except Exception as exc:  # (aiokafka asserts): fail this send, keep the loop going
                log.exception("sending to topic '%s' failed", topic)
                if not future.done():
                    future.set_exception(Unavailable(f"cannot produce to '{topic}': {exc!r}"))
                continue
            finally:
                queue.task_done()
            task = asyncio.create_task(self._await_acks(topic, batch, sent, future))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _send(
        self, topic: str, produce: _Produce
    ) -> list[tuple[int, list[int], asyncio.Future[Any]]]:
        """One record batch per partition; returns (partition, input indexes, ack future).
        Stops handing parts over once the produce's deadline answered it."""
        producer = self._producer
        if producer is None:
            raise Unavailable("storage is not open")
        batch = produce.batch
        by_partition: dict[int, list[int]] = defaultdict(list)
        for index, record in enumerate(batch.records):
            by_partition[record.partition].append(index)
        await self._know_partitions(producer, topic, max(by_partition))
        sent = []
        for partition, indexes in by_partition.items():
            builder = producer.create_batch()
            for index in indexes:
                record = batch.records[index]
                added = builder.append(
                    timestamp=record.timestamp,
                    key=encode_key(record),
                    value=record.value,
                    headers=kafka_headers(record.headers),
                )
                if added is None:
                    raise RecordTooLarge(
                        f"the request's records for partition {partition} do not fit one "
                        f"Kafka record batch ({BATCH_BYTES} bytes)",
                        {"partition": partition, "max_batch_bytes": BATCH_BYTES},
                    )
            if produce.abandoned:
                break
            kafka_name = self._kafka_name(topic)
            ack = await producer.send_batch(builder, kafka_name, partition=partition)
            # (no await since send_batch put it in the accumulator: the sender has not run)
            tp = TopicPartition(kafka_name, partition)
            part = _handed_batch(producer, tp, builder)
            if produce.abandoned and part is not None:
                self._take_back(tp, part)  # its deadline passed while it waited for room
                break
            produce.handed.append((tp, part))
            sent.append((partition, indexes, ack))
        return sent

    async def _know_partitions(self, producer: AIOKafkaProducer, topic: str, highest: int) -> None:
        """The producer's metadata shows `highest` as a partition of `topic`: right after
        partitions were added (by this server or another) it may not yet, and aiokafka's
        send_batch then fails an assertion (not a KafkaError), which used to end this topic's
        send loop and leave the request waiting forever. Refresh the metadata until it does."""
        kafka_name = self._kafka_name(topic)
        deadline = asyncio.get_running_loop().time() + 10
        while highest not in (producer.client.cluster.partitions_for_topic(kafka_name) or ()):
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable(
                    f"the Kafka cluster does not show partition {highest} of '{topic}'"
                )
            with contextlib.suppress(KafkaError):
                await asyncio.wait_for(producer.client.force_metadata_update(), 5)

    async def _await_acks(
        self,
        topic: str,
        batch: AppendBatch,
        sent: list[tuple[int, list[int], asyncio.Future[Any]]],
        future: asyncio.Future[list[AppendedRecord]],
    ) -> None:
        results: list[AppendedRecord | None] = [None] * len(batch.records)
        try:
            for partition, indexes, ack in sent:
                metadata = await ack
                for position, index in enumerate(indexes):
                    results[index] = AppendedRecord(
                        partition, metadata.offset + position, batch.records[index].timestamp
                    )
                self._saw(topic, partition, metadata.offset + len(indexes))
        except KafkaError as exc:
            if not future.done():
                future.set_exception(_produce_error(topic, exc))
            return
        # (acknowledged after its deadline answered outcome_unknown: the records are stored,
        # and announced below like any other; only the answer is gone)
        appended = [r for r in results if r is not None]
        if topic in self._followers:
            await self._announced(topic, appended)
        else:
            # Nobody here follows the topic: no tail to keep in order, so this server's own
            # records are announced at once (metrics, listeners); a follower started later
            # begins above them.
            self._announce_commit(topic, _stored(batch, appended))
        if not future.done():
            future.set_result(appended)

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

    def producer_history(self, topic: str, producer_id: str) -> ProducerWindow:
        raise _idempotence_unsupported()

    # --- reads --------------------------------------------------------------------------------
    async def read(
        self, topic: str, partition: int, offset: int, limit: int, max_bytes: int
    ) -> list[StoredRecord]:
        state = self._partition(topic, partition)
        if offset >= state.high_watermark:
            await self._caught_up(topic, partition, offset)
            return []
        readers = self._readers
        if readers is None or self._closed:
            raise Unavailable("storage is not open")
        reader = await readers.get()
        try:
            return await self._read_with(reader, topic, partition, offset, limit, max_bytes)
        finally:
            readers.put_nowait(reader)

    async def _caught_up(self, topic: str, partition: int, offset: int) -> None:
        """Nothing to read at `offset` yet. If this topic's follower has not reached `offset`
        (an ack moved the high watermark ahead of it), wait a little for it: a replaying
        subscriber goes live once the follower's tail reaches its position, and must not spin
        on empty reads meanwhile."""
        follower = self._followers.get(topic)
        if follower is None or follower.task is None:
            await asyncio.sleep(0)
            return
        if follower.positions.get(partition, 0) >= offset:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        follower.waiters[partition].append((offset - 1, waiter))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, 1.0)

    async def _read_with(
        self,
        reader: AIOKafkaConsumer,
        topic: str,
        partition: int,
        offset: int,
        limit: int,
        max_bytes: int,
    ) -> list[StoredRecord]:
        tp = TopicPartition(self._kafka_name(topic), partition)
        if reader.assignment() != {tp}:
            reader.assign([tp])
        reader.seek(tp, offset)
        deadline = time.monotonic() + 5
        while True:
            try:
                batches = await reader.getmany(tp, timeout_ms=200, max_records=limit)
            except OffsetOutOfRangeError:
                # removed by Kafka's retention since: read from the log's start instead
                start = (await self._live_lookup().beginning_offsets([tp]))[tp]
                self._partition(topic, partition).log_start = start
                if start <= offset:
                    return []
                offset = start
                reader.seek(tp, offset)
                continue
            except KafkaError as exc:
                raise _kafka_unavailable(f"cannot read {topic}/{partition}", exc) from exc
            found = batches.get(tp, [])
            if found or time.monotonic() > deadline:
                break
        highwater = reader.highwater(tp)
        if highwater is not None:
            self._saw(topic, partition, highwater)
        records: list[StoredRecord] = []
        size = 0
        for message in found:
            if message.offset < offset:
                continue
            record = stored_record(message)
            size += record.size
            if records and size > max_bytes:
                break
            records.append(record)
        if records:
            self._saw(topic, partition, records[-1].offset + 1)
        return records

    def _live_lookup(self) -> AIOKafkaConsumer:
        if self._lookup is None or self._closed:
            raise Unavailable("storage is not open")
        return self._lookup

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp: int) -> int | None:
        self._partition(topic, partition)
        tp = TopicPartition(self._kafka_name(topic), partition)
        try:
            found = (await self._live_lookup().offsets_for_times({tp: timestamp}))[tp]
        except KafkaError as exc:
            raise _kafka_unavailable(f"cannot look up offsets of {topic}", exc) from exc
        if found is None:
            return None
        # Kafka's answer is exact; Tansu 0.6 answers with the first offset of the record batch
        # that holds it. Stepping to the first record at or after the time inside that batch is
        # right on both (on Kafka it is the first record read).
        # (Tansu 0.6 also answers 0 instead of "none" for a time after every record.)
        offset = int(found.offset)
        while offset < self._partition(topic, partition).high_watermark:
            records = await self.read(topic, partition, offset, 500, 1_048_576)
            if not records:
                break
            for record in records:
                if record.timestamp >= timestamp:
                    return record.offset
            offset = records[-1].offset + 1
        return None

    # --- live fan-out: followers ----------------------------------------------------------------
    def follow(self, topic: str) -> None:
        """Someone on this server wants the topic's commits announced (a subscriber, a
        long-poll): tail it, starting at the high watermarks this server knows."""
        if self._closed or topic not in self._topics:
            return
        follower = self._followers.get(topic)
        if follower is None:
            states = self._topics[topic].partitions
            follower = _Follower(
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

    def _linger_ended(self, follower: _Follower) -> None:
        follower.linger = None
        if follower.users <= 0 and self._followers.get(follower.topic) is follower:
            del self._followers[follower.topic]
            follower.wake_all()
            self._background(self._stop_follower(follower))

    def _assign_follower(self, follower: _Follower) -> None:
        name = self._kafka_name(follower.topic)
        partitions = [TopicPartition(name, p) for p in sorted(follower.positions)]
        follower.consumer.assign(partitions)
        for tp in partitions:
            follower.consumer.seek(tp, follower.positions[tp.partition])

    async def _follow(self, follower: _Follower) -> None:
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

    async def _stop_follower(self, follower: _Follower) -> None:
        follower.wake_all()
        if follower.linger is not None:
            follower.linger.cancel()
        if follower.task is not None:
            follower.task.cancel()
            await asyncio.gather(follower.task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await follower.consumer.stop()

    # --- retention and compaction: Kafka's own ------------------------------------------------
    async def retention_point(
        self, topic: str, partition: int, before_timestamp: int | None, max_bytes: int | None
    ) -> int:
        # The cluster applies retention.ms/.bytes and compaction itself (the topic configs are
        # Kafka's): Eddy's cleaner has nothing to do.
        return self._partition(topic, partition).log_start

    async def delete_before(self, topic: str, partition: int, offset: int, limit: int) -> int:
        return 0

    async def compact(
        self,
        topic: str,
        partition: int,
        from_offset: int,
        to_offset: int,
        tombstones_before: int,
    ) -> int:
        return 0

    async def reclaim_space(self, topic: str) -> int:
        return 0

    # --- consumer groups across servers: one Kafka group consumer per server -------------------
    def group_partitions(self, group: str, topic: str) -> set[int] | None:
        seat = self._seats.get((group, topic))
        return None if seat is None else set(seat.partitions)

    async def join_group(self, group: str, topic: str, on_change: Callable[[], None]) -> None:
        """Join the Kafka group `<namespace><group>` for this server and wait (a bounded time)
        for Kafka's first assignment, so the first local member starts with its share."""
        if (group, topic) in self._seats or self._closed:
            return
        self._topic(topic)
        consumer = self._consumer(
            group_id=self._prefix + group,
            session_timeout_ms=self.settings.group_session_timeout_ms,
            heartbeat_interval_ms=max(100, self.settings.group_session_timeout_ms // 5),
            auto_offset_reset="earliest",
            # range first: the Java client's default, so Kafka's own consumers can share the
            # group's partitions with Eddy servers
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
        )
        seat = _GroupSeat(group, topic, consumer, on_change)
        self._seats[(group, topic)] = seat
        consumer.subscribe([self._kafka_name(topic)], listener=_SeatListener(self, seat))
        try:
            await consumer.start()
        except KafkaError as exc:
            self._seats.pop((group, topic), None)
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise _kafka_unavailable(f"cannot join group '{group}'", exc) from exc
        seat.poller = asyncio.create_task(self._hold_seat(seat), name=f"group-{group}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seat.assigned.wait(), 30)

    async def _hold_seat(self, seat: _GroupSeat) -> None:
        """Poll (its partitions are paused, so nothing comes): Kafka counts a member that does
        not poll within max.poll.interval as gone; the rebalances run in the consumer."""
        while True:
            try:
                await seat.consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                log.warning("group %s on %s: %s", seat.group, seat.topic, exc)
                await asyncio.sleep(1)

    def _seat_changed(self, seat: _GroupSeat) -> None:
        if self._seats.get((seat.group, seat.topic)) is not seat:
            return
        log.info(
            "group %s on %s: this server has partitions %s",
            seat.group,
            seat.topic,
            sorted(seat.partitions),
        )
        try:
            seat.on_change()
        except Exception:
            log.exception("rebalancing local members of %s failed", seat.group)

    async def _load_committed(self, seat: _GroupSeat, assigned: Any) -> None:
        """Offsets of newly assigned partitions, fresh from Kafka (another server may have
        committed them a moment ago), so local members start where the group is."""
        now = int(time.time() * 1000)
        for tp in assigned:
            try:
                offset = await seat.consumer.committed(tp)
            except KafkaError:
                continue
            key = (seat.group, seat.topic, tp.partition)
            if offset is None or offset < 0:
                continue
            known = self._offsets.get(key)
            if known is None or known.offset != offset:
                self._offsets[key] = CommittedOffset(
                    seat.group, seat.topic, tp.partition, offset, now
                )
                self._group_changes[seat.group] += 1

    async def leave_group(self, group: str, topic: str) -> None:
        seat = self._seats.pop((group, topic), None)
        if seat is not None:
            await self._stop_seat(seat)

    async def _stop_seat(self, seat: _GroupSeat) -> None:
        seat.assigned.set()  # a join still waiting for its first assignment stops waiting
        if seat.poller is not None:
            seat.poller.cancel()
            await asyncio.gather(seat.poller, return_exceptions=True)
        with contextlib.suppress(Exception):
            await seat.consumer.stop()  # leaves the group: the others rebalance at once

    # --- consumer group offsets (in Kafka) ------------------------------------------------------
    def committed_offsets(self, group: str | None = None) -> list[CommittedOffset]:
        return [c for c in self._offsets.values() if group is None or c.group == group]

    async def commit_offsets(
        self,
        group: str,
        topic: str,
        offsets: Mapping[int, int],
        metadata: Mapping[int, str] | None = None,
    ) -> None:
        notes = {p: (metadata or {}).get(p, "") for p in offsets}
        seat = self._seats.get((group, topic))
        if seat is not None:
            await self._commit_as_member(seat, offsets, notes)
        else:
            await self._commit_as_tool(group, topic, offsets, notes)
        self._group_changes[group] += 1
        now = int(time.time() * 1000)
        for partition, offset in offsets.items():
            self._offsets[(group, topic, partition)] = CommittedOffset(
                group, topic, partition, offset, now, notes[partition]
            )

    async def _commit_as_member(
        self, seat: _GroupSeat, offsets: Mapping[int, int], notes: Mapping[int, str]
    ) -> None:
        name = self._kafka_name(seat.topic)
        try:
            await seat.consumer.commit(
                {
                    TopicPartition(name, p): OffsetAndMetadata(o, notes[p])
                    for p, o in offsets.items()
                }
            )
        except (CommitFailedError, IllegalStateError) as exc:
            # a Kafka rebalance took (or is taking) partitions from this server
            raise NotAssigned(
                f"group '{seat.group}' is rebalancing across servers; commit again after the "
                "next assignment",
                {"partitions": sorted(offsets)},
            ) from exc
        except KafkaError as exc:
            raise _kafka_unavailable(f"cannot commit offsets of group '{seat.group}'", exc) from exc

    async def _commit_as_tool(
        self, group: str, topic: str, offsets: Mapping[int, int], notes: Mapping[int, str]
    ) -> None:
        """A commit of a group without members on this server (REST workers, resets): Kafka
        takes it without a generation while the group has no members anywhere."""
        admin = self._live_admin()
        kafka_group = self._prefix + group
        request = OffsetCommitRequest(
            kafka_group,
            OffsetCommitRequest.DEFAULT_GENERATION_ID,
            "",
            OffsetCommitRequest.DEFAULT_RETENTION_TIME,
            [(self._kafka_name(topic), [(p, o, notes[p]) for p, o in offsets.items()])],
        )
        try:
            coordinator = await admin.find_coordinator(kafka_group)
            response = await admin._send_request(request, coordinator)
        except KafkaError as exc:
            raise _kafka_unavailable(f"cannot commit offsets of group '{group}'", exc) from exc
        for _, partitions in response.topics:
            for _, error_code in partitions:
                if error_code:
                    _raise_group_error(group, error_code, "commit offsets of")

    async def check_group_idle(self, group: str) -> None:
        """The group's state as Kafka's coordinator describes it: members anywhere (another
        Eddy server's seat, or Kafka consumers) make it active. Its offsets may not be known
        here yet (a group whose members never committed has none)."""
        admin = self._live_admin()
        try:
            described = await admin.describe_consumer_groups([self._prefix + group])
        except KafkaError as exc:
            raise _kafka_unavailable(f"cannot describe group '{group}'", exc) from exc
        for response in described:
            for entry in response.groups:
                error_code, state, members = entry[0], entry[2], entry[5]
                if error_code == 0 and (members or state not in ("Empty", "Dead", "")):
                    raise GroupActive(
                        f"group '{group}' has members (on another Eddy server, or Kafka "
                        "consumers); stop them first",
                        {"group": group},
                    )

    async def delete_committed_offsets(self, group: str, topic: str | None = None) -> None:
        admin = self._live_admin()
        if topic is not None and any(
            c.topic != topic for c in self._offsets.values() if c.group == group
        ):
            # Kafka deletes one topic's offsets of a group with OffsetDelete, which aiokafka
            # does not offer; the engine only needs whole groups (REST delete) anyway.
            raise InvalidRequest("the Kafka engine deletes whole groups only")
        kafka_group = self._prefix + group
        try:
            coordinator = await admin.find_coordinator(kafka_group)
            response = await admin._send_request(DeleteGroupsRequest([kafka_group]), coordinator)
        except KafkaError as exc:
            raise _kafka_unavailable(f"cannot delete group '{group}'", exc) from exc
        for _, error_code in response.results:
            if error_code and for_code(error_code).__name__ != "GroupIdNotFoundError":
                _raise_group_error(group, error_code, "delete")
        self._group_changes[group] += 1
        for key in [k for k in self._offsets if k[0] == group]:
            del self._offsets[key]


def _topic_level_entries(entries: Sequence[Any]) -> list[tuple[str, str | None, bool]]:
    """(name, value, set on the topic) per DescribeConfigs entry. v0 says is_default (a bool);
    v1+ says the source, 1 being the topic's own. Tansu 0.6 lists only the configs set on the
    topic, each with source 5 (default): when every entry says 5, they are taken as the
    topic's own (on Apache Kafka, a topic without any override then shows Kafka's defaults as
    its own values, which they are)."""
    sources = [entry[3] for entry in entries]
    only_defaults = bool(sources) and all(not isinstance(s, bool) and s == 5 for s in sources)
    out = []
    for entry in entries:
        key, value, _, source = entry[:4]
        if isinstance(source, bool):
            on_topic = not source
        else:
            on_topic = source == 1 or (only_defaults and source == 5)
        out.append((key, value, on_topic))
    return out


def _drain(queue: asyncio.Queue[_Send]) -> list[asyncio.Future[list[AppendedRecord]]]:
    futures = []
    while not queue.empty():
        futures.append(queue.get_nowait().future)
    return futures


def _handed_batch(producer: AIOKafkaProducer, tp: TopicPartition, builder: Any) -> Any:
    """aiokafka's MessageBatch that `send_batch` just queued for `builder` (None if its
    accumulator no longer has it, or is built differently: then the part counts as sent)."""
    queued = producer._message_accumulator._batches.get(tp, ())
    for part in reversed(queued):
        if getattr(part, "_builder", None) is builder:
            return part
    return None


def _stored(batch: AppendBatch, appended: Sequence[AppendedRecord]) -> list[StoredRecord]:
    sizes = batch.sizes
    return [
        StoredRecord(
            where.partition,
            where.offset,
            record.timestamp,
            record.key,
            record.value,
            record.value_format,
            record.headers,
            sizes[index] if sizes else record_size(record.key, record.value, record.headers),
        )
        for index, (record, where) in enumerate(zip(batch.records, appended, strict=True))
    ]


def _request_name(exc: IncompatibleBrokerVersion) -> str:
    match = re.search(r"(\w+)Request", str(exc))
    return match.group(1) if match else "this request"


def _config_value(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _idempotence_unsupported() -> EddyError:
    return InvalidRequest(
        "the idempotent producer (producer_id + sequence) is not available on the Kafka "
        "engine: its sequence state would have to be shared by every Eddy server; retry "
        "without producer_id (Kafka's own idempotent producer still guards each send)",
        {"reason": "idempotent_producer_unsupported", "engine": "kafka"},
    )


def _raise_topic_errors(topic_errors: Sequence[Any], name: str) -> None:
    for entry in topic_errors:
        error_code = entry[1]
        if error_code:
            message = entry[2] if len(entry) > 2 else None
            raise for_code(error_code)(message or name)


def _raise_group_error(group: str, error_code: int, what: str) -> None:
    error = for_code(error_code)
    if error.__name__ in _ACTIVE_GROUP_ERRORS or error.__name__ == "NonEmptyGroupError":
        raise GroupActive(
            f"group '{group}' has members (on another Eddy server, or Kafka consumers); Kafka "
            f"lets only them {what} it",
            {"group": group},
        )
    raise Unavailable(f"cannot {what} group '{group}': Kafka answered {error.__name__}")


def _produce_error(topic: str, exc: KafkaError) -> EddyError:
    if isinstance(exc, MessageSizeTooLargeError):
        return RecordTooLarge(
            f"the Kafka cluster refused the records as too large for topic '{topic}' "
            "(its max.message.bytes limits a whole record batch)",
            {"topic": topic},
        )
    if isinstance(exc, UnknownTopicOrPartitionError):
        return TopicNotFound(topic)
    return _kafka_unavailable(f"cannot produce to '{topic}'", exc)

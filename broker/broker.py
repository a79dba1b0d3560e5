"""The broker: the services the routers call (topics, produce, fetch, subscribe, publish).

Created once in the app's lifespan around an `Engine`; routers reach it through a dependency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.drafts import RecordDraft
from broker.fetcher import Fetcher
from broker.groups import GroupCoordinator, ResetTo
from broker.hub import FanoutHub
from broker.metrics import Metrics
from broker.positions import (
    SubscribeParams,
    parse_publish_params,
    parse_subscribe_params,
    start_positions,
)
from broker.producer import Producer
from broker.publisher import PublishSession
from broker.retention import Cleaner
from broker.subscriber import FrameSink, Subscriber
from broker.topic_rules import (
    effective_config,
    validate_config,
    validate_partition_count,
    validate_topic_name,
)
from models.errors import EddyError, InvalidRequest, TopicNotFound
from models.groups import GroupDetail, GroupSummary
from models.topics import PartitionInfo, TopicDetail, TopicSummary
from storage import AppendedRecord, Engine, ProducerSequence, TopicMeta

log = logging.getLogger("eddy.broker")

CLOSE_GOING_AWAY = 1001


@dataclass(frozen=True)
class BrokerConfig:
    default_partitions: int = 1
    auto_create_topics: bool = True
    topic_defaults: Mapping[str, Any] = field(
        default_factory=lambda: {
            "retention.ms": 604_800_000,
            "retention.bytes": -1,
            "cleanup.policy": "delete",
            "max.message.bytes": 1_048_576,
            "delete.retention.ms": 86_400_000,
        }
    )
    retention_check_interval: float = 300.0  # seconds between cleaner passes
    ws_buffer_bytes: int = 1_048_576
    max_websockets: int = 10_000
    auto_commit_interval: float = 1.0  # seconds between commits of auto_commit members
    max_request_bytes: int = 16 * 1_048_576  # HTTP bodies and WebSocket frames
    # Records a publishing connection may have waiting for their acks. When it is reached the
    # server stops reading that socket (backpressure); keep it large, because while it is not
    # read the client's pongs are not either and --ws-ping-timeout would end the connection.
    publish_max_in_flight: int = 10_000


class Broker:
    def __init__(self, engine: Engine, config: BrokerConfig) -> None:
        self.engine = engine
        self.config = config
        self.metrics = Metrics()
        self.hub = FanoutHub()
        self.producer = Producer(engine, self.hub, self.metrics)
        self.fetcher = Fetcher(engine, self.hub, self.metrics)
        self.groups = GroupCoordinator(engine, self.metrics, config.auto_commit_interval)
        self.cleaner = Cleaner(
            engine, self._config_of, self.metrics, config.retention_check_interval
        )
        self._creating: dict[str, asyncio.Lock] = {}
        self._open_websockets = 0

    async def start(self) -> None:
        await self.engine.open()
        self.cleaner.start()

    async def stop(self) -> None:
        """Close WebSockets (1001), commit queued appends, close storage."""
        await self.cleaner.stop()
        self.hub.close_all(CLOSE_GOING_AWAY)
        await self.producer.close()
        await self.engine.close()

    async def check_ready(self) -> None:
        """Raise `Unavailable` unless storage is open and writable."""
        await self.engine.check_writable()

    # --- topics -------------------------------------------------------------------------------
    def _config_of(self, meta: TopicMeta) -> dict[str, Any]:
        return effective_config(self.config.topic_defaults, meta.config)

    @staticmethod
    def _config_sources(meta: TopicMeta, config: Mapping[str, Any]) -> dict[str, str]:
        return {key: "topic" if key in meta.config else "default" for key in config}

    def _summary(self, meta: TopicMeta) -> TopicSummary:
        config = self._config_of(meta)
        return TopicSummary(
            name=meta.name,
            partitions=meta.partitions,
            config=config,
            config_sources=self._config_sources(meta, config),
            created_at=meta.created_at,
        )

    async def create_topic(
        self, name: str, partitions: int | None, config: Mapping[str, Any]
    ) -> TopicSummary:
        validate_topic_name(name)
        count = validate_partition_count(partitions or self.config.default_partitions)
        meta = await self.engine.create_topic(name, count, validate_config(config))
        log.info("created topic %s with %d partitions", name, count)
        return self._summary(meta)

    def list_topics(self) -> list[TopicSummary]:
        return [self._summary(meta) for meta in self.engine.list_topics()]

    def describe_topic(self, name: str) -> TopicDetail:
        meta = self._topic(name)
        states = [self.engine.partition_state(name, p) for p in range(meta.partitions)]
        config = self._config_of(meta)
        return TopicDetail(
            name=meta.name,
            config=config,
            config_sources=self._config_sources(meta, config),
            created_at=meta.created_at,
            partitions=[
                PartitionInfo(
                    partition=s.partition,
                    log_start_offset=s.log_start_offset,
                    high_watermark=s.high_watermark,
                    size_bytes=s.size_bytes,
                )
                for s in states
            ],
        )

    async def update_topic(
        self, name: str, partitions: int | None, config: Mapping[str, Any] | None
    ) -> TopicDetail:
        meta = self._topic(name)
        if partitions is not None:
            validate_partition_count(partitions)
            if partitions < meta.partitions:
                raise InvalidRequest(
                    f"partitions can only be increased (topic '{name}' has {meta.partitions})",
                    {"partitions": meta.partitions},
                )
        new_config = None if config is None else {**meta.config, **validate_config(config)}
        updated = await self.engine.update_topic(name, partitions, new_config)
        if updated.partitions > meta.partitions:
            # Live subscribers of "all partitions" start the new ones at offset 0 and groups
            # rebalance, in the same step that made the partitions writable.
            self.hub.partitions_added(name, updated.partitions)
            self.groups.partitions_added(name)
            log.info("topic %s now has %d partitions", name, updated.partitions)
        return self.describe_topic(name)

    async def delete_topic(self, name: str) -> None:
        self._topic(name)
        await self.engine.delete_topic(name)
        self.producer.forget_topic(name, TopicNotFound(name))
        self.hub.close_topic(name, TopicNotFound.ws_close_code)
        self.metrics.forget_topic(name)
        log.info("deleted topic %s", name)

    def _topic(self, name: str) -> TopicMeta:
        validate_topic_name(name)
        return self.engine.get_topic(name)

    async def _topic_for_use(self, name: str) -> TopicMeta:
        """The topic, auto-created with the defaults if that is on (produce and subscribe)."""
        validate_topic_name(name)
        try:
            return self.engine.get_topic(name)
        except TopicNotFound:
            if not self.config.auto_create_topics:
                raise
        lock = self._creating.setdefault(name, asyncio.Lock())
        async with lock:  # concurrent first produces create the topic once
            try:
                return self.engine.get_topic(name)
            except TopicNotFound:
                await self.create_topic(name, None, {})
                return self.engine.get_topic(name)
            finally:
                self._creating.pop(name, None)

    # --- records ------------------------------------------------------------------------------
    async def produce(
        self, topic: str, drafts: Sequence[RecordDraft], producer: ProducerSequence | None = None
    ) -> list[AppendedRecord]:
        meta = await self._topic_for_use(topic)
        return await self.producer.produce(meta, drafts, self._config_of(meta), producer)

    async def fetch(
        self, topic: str, partition: int, offset: str, limit: int, max_bytes: int, timeout_ms: int
    ) -> bytes:
        self._topic(topic)
        return await self.fetcher.fetch(topic, partition, offset, limit, max_bytes, timeout_ms)

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp: int) -> int | None:
        self._topic(topic)
        return await self.engine.offset_for_timestamp(topic, partition, timestamp)

    # --- consumer groups (REST) ---------------------------------------------------------------
    def list_groups(self) -> list[GroupSummary]:
        return self.groups.list_groups()

    def describe_group(self, group: str) -> GroupDetail:
        return self.groups.describe_group(group)

    async def commit_group_offsets(
        self, group: str, topic: str, offsets: Mapping[str, int]
    ) -> None:
        self._topic(topic)
        await self.groups.commit_from_rest(group, topic, offsets)

    async def reset_group(self, group: str, topic: str, to: ResetTo) -> dict[int, int]:
        self._topic(topic)
        return await self.groups.reset(group, topic, to)

    async def delete_group(self, group: str) -> None:
        await self.groups.delete(group)

    # --- WebSockets ---------------------------------------------------------------------------
    def open_websocket(self) -> bool:
        """Take a connection slot; False when --max-websockets are open already."""
        if self._open_websockets >= self.config.max_websockets:
            return False
        self._open_websockets += 1
        return True

    def websocket_closed(self) -> None:
        self._open_websockets -= 1

    # --- WebSocket sessions ------------------------------------------------------------------
    async def subscribe(
        self,
        topic: str,
        query: Mapping[str, str],
        sink: FrameSink,
        incoming: AsyncIterator[str | bytes],
        client: str,
    ) -> int | None:
        """Run one subscription until it ends; returns the close code to use (None: client left).

        Raises `EddyError` before anything is sent if the request is bad.
        """
        params = parse_subscribe_params(query)
        meta = await self._topic_for_use(topic)
        subscriber = Subscriber(
            topic=topic,
            keys=params.keys,
            sink=sink,
            engine=self.engine,
            metrics=self.metrics,
            max_buffer_bytes=self.config.ws_buffer_bytes,
            follow_new_partitions=params.group is None and params.partitions is None,
        )
        if params.group is not None:
            return await self._run_group_member(subscriber, params, incoming, client)
        states = [self.engine.partition_state(topic, p) for p in range(meta.partitions)]
        positions = start_positions(topic, states, params)
        # From here to hub.register nothing awaits: the positions cannot go stale.
        subscriber.assign(positions)
        subscriber.send_control(
            {
                "type": "subscribed",
                "partitions": {
                    str(p): {"offset": pos.offset, **({"reset": True} if pos.reset else {})}
                    for p, pos in positions.items()
                },
            }
        )
        self.hub.register(subscriber)
        try:
            return await subscriber.run(incoming)
        finally:
            self.hub.unregister(subscriber)

    async def _run_group_member(
        self,
        subscriber: Subscriber,
        params: SubscribeParams,
        incoming: AsyncIterator[str | bytes],
        client: str,
    ) -> int | None:
        assert params.group is not None
        self.hub.register(subscriber)  # before join: its assignment must see every commit
        member = self.groups.join(
            params.group,
            subscriber.topic,
            subscriber,
            params.start_from,
            params.auto_commit,
            client,
        )
        try:
            return await subscriber.run(
                incoming, lambda frame: self.groups.handle_frame(member, frame)
            )
        finally:
            self.hub.unregister(subscriber)
            await self.groups.leave(member)

    async def publish(
        self,
        topic: str,
        query: Mapping[str, str],
        sink: FrameSink,
        incoming: AsyncIterator[str | bytes],
    ) -> int | None:
        """Run one publishing connection until it ends; returns the close code to use."""
        producer_id = parse_publish_params(query)
        await self._topic_for_use(topic)

        def submit(
            drafts: Sequence[RecordDraft], producer: ProducerSequence | None
        ) -> asyncio.Future[list[AppendedRecord]]:
            meta = self.engine.get_topic(topic)
            return self.producer.submit(meta, drafts, self._config_of(meta), producer)

        session = PublishSession(
            topic, submit, sink, self.config.publish_max_in_flight, producer_id
        )
        self.hub.register_publisher(session)
        try:
            return await session.run(incoming)
        finally:
            self.hub.unregister_publisher(session)


__all__ = ["Broker", "BrokerConfig", "EddyError"]

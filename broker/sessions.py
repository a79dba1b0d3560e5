"""Streaming sessions, wired for the transports: a subscription (plain, or a group member) and a
publishing connection run here between the transport's connection and the broker's hub, groups
and producer. The transports drive them; nothing here knows a socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from eddy.broker.access import Action, Principal
from eddy.broker.config import PUBLISH_MAX_IN_FLIGHT, BrokerConfig
from eddy.broker.events import End, Subscribed
from eddy.broker.groups import GroupCoordinator
from eddy.broker.hub import FanoutHub
from eddy.broker.metrics import Metrics, Transport
from eddy.broker.positions import SubscribeParams, partitions_to_look_up, start_positions
from eddy.broker.producer import Producer
from eddy.broker.publisher import AnswerSink, FrameSource, PublishSession, submitter
from eddy.broker.rate_limit import RateLimiter
from eddy.broker.subscriber import Connection, Subscriber
from eddy.broker.subscription import CloseWhenFull, ConflateWhenFull
from eddy.broker.topic_admin import TopicAdmin
from eddy.models.errors import InvalidRequest
from eddy.models.log import TopicMeta
from eddy.storage import PRODUCER_WINDOW, Engine

Authorize = Callable[[Principal, Action, str], None]


class StreamingSessions:
    def __init__(
        self,
        engine: Engine,
        config: BrokerConfig,
        topics: TopicAdmin,
        hub: FanoutHub,
        groups: GroupCoordinator,
        producer: Producer,
        rate_limiter: RateLimiter,
        metrics: Metrics,
        authorize: Authorize,
        authorize_group: Authorize,
    ) -> None:
        self._engine = engine
        self._config = config
        self._topics = topics
        self._hub = hub
        self._groups = groups
        self._producer = producer
        self._rate_limiter = rate_limiter
        self._metrics = metrics
        self._authorize = authorize
        self._authorize_group = authorize_group

    async def subscribe(
        self,
        topic: str,
        params: SubscribeParams,
        connection: Connection,
        incoming: AsyncIterator[str | bytes],
        client: str,
        principal: Principal,
    ) -> End:
        """Run one subscription until it ends; returns how it ended (None: the client left).
        (`open_subscription` is the same without a task, for plain subscriptions.)

        Raises `EddyError` before anything is sent if the request is refused.
        """
        subscriber = await self._new_subscriber(topic, params, connection, principal)
        since_offsets = await self._since_offsets(topic, params)
        if params.group is not None:
            return await self._run_group_member(subscriber, params, incoming, client, since_offsets)
        self._start_plain(subscriber, params, since_offsets)
        try:
            return await subscriber.run(incoming)
        finally:
            self._hub.unregister(subscriber)

    async def open_subscription(
        self,
        topic: str,
        params: SubscribeParams,
        connection: Connection,
        principal: Principal,
        on_end: Callable[[End], None],
    ) -> Subscriber:
        """Start a plain subscription (not a group member) that runs without a task: the
        transport gives it the client's frames (`Subscriber.receive_frame`) and ends it with
        `finish(None)` when the client leaves; `on_end` is told once how it ended.

        Raises `EddyError` before anything is sent if the request is refused.
        """
        if params.group is not None:
            raise InvalidRequest("group members run with `subscribe`")
        subscriber = await self._new_subscriber(topic, params, connection, principal)
        since_offsets = await self._since_offsets(topic, params)

        def ended(end: End) -> None:
            self._hub.unregister(subscriber)
            on_end(end)

        subscriber.on_end = ended
        self._start_plain(subscriber, params, since_offsets)
        return subscriber

    async def _since_offsets(self, topic: str, params: SubscribeParams) -> dict[int, int]:
        """For `since=`: per partition it decides, the first offset whose timestamp is >= it,
        or the high watermark read before the lookup when there is none (every record below
        it is older, and nothing committed during the lookup is skipped)."""
        offsets: dict[int, int] = {}
        if params.since is None:
            return offsets
        engine = self._engine
        count = engine.get_topic(topic).partitions
        for partition in partitions_to_look_up(params, count):
            high_watermark = engine.high_watermark(topic, partition)
            found = await engine.offset_for_timestamp(topic, partition, params.since)
            offsets[partition] = high_watermark if found is None else found
        return offsets

    async def _new_subscriber(
        self, topic: str, params: SubscribeParams, connection: Connection, principal: Principal
    ) -> Subscriber:
        self._authorize(principal, Action.READ, topic)
        if params.group is not None:
            self._authorize_group(principal, Action.GROUP, params.group)
        await self._topics.for_use(principal, topic)
        return Subscriber(
            topic=topic,
            keys=params.keys,
            connection=connection,
            engine=self._engine,
            metrics=self._metrics,
            max_buffer_bytes=self._config.ws_buffer_bytes,
            follow_new_partitions=params.group is None and params.partitions is None,
            policy=ConflateWhenFull() if params.on_slow == "conflate" else CloseWhenFull(),
            max_rate=params.max_rate,
        )

    def _start_plain(
        self, subscriber: Subscriber, params: SubscribeParams, since_offsets: Mapping[int, int]
    ) -> None:
        """Positions, registration and the `subscribed` event in one step (no await: the
        positions cannot go stale before the first delivery)."""
        topic = subscriber.topic
        partitions = self._engine.get_topic(topic).partitions
        states = [self._engine.partition_state(topic, p) for p in range(partitions)]
        positions = start_positions(topic, states, params, since_offsets)
        self._hub.register(subscriber)
        subscriber.assign(positions)
        subscriber.send_event(Subscribed(positions))
        subscriber.kick()

    async def _run_group_member(
        self,
        subscriber: Subscriber,
        params: SubscribeParams,
        incoming: AsyncIterator[str | bytes],
        client: str,
        since_offsets: Mapping[int, int],
    ) -> End:
        assert params.group is not None
        groups = self._groups
        self._hub.register(subscriber)  # before join: its assignment must see every commit
        try:
            member = await groups.join(
                params.group,
                subscriber.topic,
                subscriber,
                params.start_from,
                params.auto_commit,
                client,
                since_offsets if params.since is not None else None,
            )
        except BaseException:
            self._hub.unregister(subscriber)
            raise
        try:
            return await subscriber.run(incoming, lambda frame: groups.handle_frame(member, frame))
        finally:
            self._hub.unregister(subscriber)
            await groups.leave(member)

    async def publish(
        self,
        topic: str,
        producer_id: str | None,
        sink: AnswerSink,
        incoming: FrameSource,
        principal: Principal,
    ) -> End:
        """Run one publishing connection until it ends; returns how it ended."""
        self._authorize(principal, Action.WRITE, topic)
        await self._topics.for_use(principal, topic)

        def target() -> tuple[TopicMeta, dict[str, Any]]:
            meta = self._engine.get_topic(topic)
            return meta, self._topics.config_of(meta)

        submit = submitter(
            self._producer,
            target,
            lambda: self._rate_limiter.check(principal.name),
            PRODUCER_WINDOW,
        )

        # An idempotent publisher may not have more in flight than is remembered, so that
        # every resend after a reconnect gets its original ack.
        in_flight = PUBLISH_MAX_IN_FLIGHT
        session = PublishSession(
            topic,
            submit,
            sink,
            min(in_flight, PRODUCER_WINDOW) if producer_id else in_flight,
            producer_id,
            lambda error: self._metrics.count_rejection(error.code, Transport.WEBSOCKET),
        )
        self._hub.register_publisher(session)
        try:
            return await session.run(incoming)
        finally:
            self._hub.unregister_publisher(session)

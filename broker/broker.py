"""The broker: the one service layer every transport calls (REST, WebSocket, SSE and the Kafka
listener): callers (authentication, authorization), topics, records (produce, fetch, reads by
offset or time), consumer groups and streaming sessions.

Created once in the app's lifespan around an `Engine`; routers reach it through a dependency.
This is the facade: each job lives in its own module (topic_admin, group_services, sessions,
reads, slots, auth_watch, disk_metrics), wired together here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from eddy.broker.access import AccessPolicy, Action, AuthenticationFailed, Principal
from eddy.broker.auth_watch import prefetch_signing_keys, watch_auth_file
from eddy.broker.config import BrokerConfig
from eddy.broker.disk_metrics import DiskMeter, partition_states
from eddy.broker.drafts import RecordDraft
from eddy.broker.events import End
from eddy.broker.fetcher import Fetcher
from eddy.broker.group_services import GroupServices
from eddy.broker.groups import GroupCoordinator, ResetTo
from eddy.broker.hub import FanoutHub
from eddy.broker.idempotence import SequenceRule, check_sequence
from eddy.broker.metrics import Metrics, Transport
from eddy.broker.positions import SubscribeParams
from eddy.broker.producer import Producer
from eddy.broker.publisher import AnswerSink, FrameSource
from eddy.broker.rate_limit import RateLimiter
from eddy.broker.reads import OffsetQuery, ReadablePartition, look_up_offset
from eddy.broker.retention import Cleaner
from eddy.broker.sessions import StreamingSessions
from eddy.broker.slots import ConnectionSlots
from eddy.broker.subscriber import Connection, Subscriber
from eddy.broker.topic_admin import TopicAdmin
from eddy.broker.topic_rules import validate_topic_name
from eddy.models.context import current_call
from eddy.models.errors import EddyError, PartitionNotFound, Unavailable
from eddy.models.groups import GroupDetail, GroupSummary
from eddy.models.log import (
    AppendedRecord,
    CommittedOffset,
    PartitionState,
    ProducerSequence,
    StoredRecord,
    TopicMeta,
)
from eddy.models.topics import TopicDetail, TopicSummary
from eddy.storage import Engine


class Broker:
    def __init__(
        self,
        engine: Engine,
        config: BrokerConfig,
        access: AccessPolicy | None = None,
        auth_file: Path | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.access = access or AccessPolicy()  # replaced when the auth file is reloaded
        self._auth_file = auth_file
        self._auth_watcher: asyncio.Task[None] | None = None
        self.rate_limiter = RateLimiter(
            config.produce_rate_limit, config.produce_rate_burst or config.produce_rate_limit
        )
        self.metrics = Metrics()
        self.hub = FanoutHub(engine, self.metrics)
        self.producer = Producer(engine, self.metrics, config.produce_queue_timeout)
        self.fetcher = Fetcher(engine, self.hub, self.metrics)
        self.groups = GroupCoordinator(engine, self.metrics, config.auto_commit_interval)
        # The log tells these what it did. Order matters on growth: subscribers of all
        # partitions start the new ones before groups rebalance over them.
        for listener in (self.hub, self.groups, self.producer, self.metrics):
            engine.add_listener(listener)
        self.metrics.watch_partitions(lambda: partition_states(engine))
        engine.observe_commits(self.metrics.commit_seconds.observe)
        self._disk = DiskMeter(engine, self.metrics)
        self.topics = TopicAdmin(engine, config, lambda: self.access)
        self.group_services = GroupServices(engine, self.groups, self.topics, lambda: self.access)
        self.cleaner = Cleaner(
            engine, self.topics.config_of, self.metrics, config.retention_check_interval
        )
        self.slots = ConnectionSlots(config.max_websockets)
        self.sessions = StreamingSessions(
            engine,
            config,
            self.topics,
            self.hub,
            self.groups,
            self.producer,
            self.rate_limiter,
            self.metrics,
            self.authorize,
            self.authorize_group,
        )

    async def start(self) -> None:
        await self.engine.open()
        self.topics.recount()
        self.cleaner.start()
        prefetch_signing_keys(self.access)
        if self._auth_file is not None:
            self._auth_watcher = asyncio.create_task(
                watch_auth_file(
                    self._auth_file,
                    self.config.auth_recheck_interval,
                    lambda: self.access,
                    self._install_policy,
                    self.metrics,
                )
            )

    def _install_policy(self, policy: AccessPolicy) -> None:
        self.access = policy

    def begin_shutdown(self) -> None:
        """The server stops: end streaming sessions (WebSockets close with 1001) and answer
        long-polls now (appends in flight still commit); called before the server waits for
        open requests to finish."""
        self.hub.close_all()

    async def stop(self) -> None:
        """End streaming sessions, commit queued appends, close storage."""
        if self._auth_watcher is not None:
            self._auth_watcher.cancel()
            await asyncio.gather(self._auth_watcher, return_exceptions=True)
        await self.cleaner.stop()
        self.hub.close_all()
        if self.access.jwt is not None and self.access.jwt.jwks is not None:
            await self.access.jwt.jwks.close()
        await self.engine.close()  # commits what is queued first

    async def check_ready(self) -> None:
        """Raise `Unavailable` unless storage is open and writable and the background tasks
        run."""
        await self.engine.check_writable()
        stopped = self.stopped_background_tasks()
        if stopped:
            raise Unavailable(
                f"background task not running: {', '.join(stopped)}", {"tasks": stopped}
            )

    def stopped_background_tasks(self) -> list[str]:
        """Server-wide loops that should run and do not (each one logged when it ended)."""
        stopped = [] if self.cleaner.running else ["cleaner"]
        if self._auth_watcher is not None and self._auth_watcher.done():
            stopped.append("auth-watcher")
        return stopped

    # --- callers ------------------------------------------------------------------------------
    async def authenticate(self, token: str | None) -> Principal:
        """The caller for a bearer token (None: none given), fetching a JWT's signing key from
        the identity provider if it is not known yet; raises `Unauthorized` (counted). Names
        the principal in the call being served (for the access log)."""
        try:
            principal = await self.access.authenticate_async(token)
        except AuthenticationFailed as exc:
            self.metrics.count_auth_failure(exc.reason)
            raise
        if principal.authenticated:
            call = current_call.get()
            if call is not None:
                call.principal = principal.name
        return principal

    def anonymous(self) -> Principal:
        """The caller without credentials (the auth file's [anonymous] grants)."""
        return self.access.authenticate(None)

    def still_valid(self, principal: Principal) -> bool:
        """False once the principal's JWT has expired or its key was revoked."""
        return self.access.still_valid(principal)

    @property
    def access_enabled(self) -> bool:
        """Whether an auth file is in force (else everyone may do everything)."""
        return self.access.enabled

    def allows(self, principal: Principal, action: Action, name: str) -> bool:
        """Whether the caller may do `action` on the topic or group `name` (no audit)."""
        return self.access.allows(principal, action, name)

    def authorize(self, principal: Principal, action: Action, topic: str) -> None:
        """Validate the topic name and require the permission (raises `EddyError`)."""
        validate_topic_name(topic)
        self.access.require(principal, action, topic)

    def authorize_group(self, principal: Principal, action: Action, group: str) -> None:
        """Validate the group name and require the permission (raises `EddyError`)."""
        self.group_services.authorize(principal, action, group)

    # --- topics -------------------------------------------------------------------------------
    async def create_topic(
        self, principal: Principal, name: str, partitions: int | None, config: Mapping[str, Any]
    ) -> TopicSummary:
        return await self.topics.create(principal, name, partitions, config)

    def list_topics(self, principal: Principal) -> list[TopicSummary]:
        """The topics the caller may read."""
        return self.topics.list_topics(principal)

    def describe_topic(self, principal: Principal, name: str) -> TopicDetail:
        return self.topics.describe(principal, name)

    async def update_topic(
        self,
        principal: Principal,
        name: str,
        partitions: int | None,
        config: Mapping[str, Any] | None,
    ) -> TopicDetail:
        return await self.topics.update(principal, name, partitions, config)

    async def replace_topic_config(
        self, principal: Principal, name: str, config: Mapping[str, Any]
    ) -> TopicDetail:
        """Set the topic's overrides to exactly `config` (keys left out: the defaults)."""
        return await self.topics.replace_config(principal, name, config)

    async def delete_topic(self, principal: Principal, name: str) -> None:
        await self.topics.delete(principal, name)

    def topic(self, name: str) -> TopicMeta:
        """The topic's metadata (raises `TopicNotFound`)."""
        return self.topics.topic(name)

    # --- records ------------------------------------------------------------------------------
    async def produce(
        self,
        principal: Principal,
        topic: str,
        drafts: Sequence[RecordDraft],
        producer: ProducerSequence | None = None,
        rule: SequenceRule = check_sequence,
    ) -> list[AppendedRecord]:
        self.authorize(principal, Action.WRITE, topic)
        self.rate_limiter.check(principal.name)
        meta = await self.topics.for_use(principal, topic)
        return await self.producer.produce(
            meta, drafts, self.topics.config_of(meta), producer, rule
        )

    async def prepare_produce(self, principal: Principal, topic: str) -> None:
        """What `produce` does before it queues: authorize, and auto-create the topic. For a
        transport that queues requests in arrival order with `submit_produce` and collects
        the outcomes later (Kafka clients keep several produce requests in flight)."""
        self.authorize(principal, Action.WRITE, topic)
        await self.topics.for_use(principal, topic)

    def submit_produce(
        self,
        principal: Principal,
        topic: str,
        drafts: Sequence[RecordDraft],
        producer: ProducerSequence | None,
        rule: SequenceRule = check_sequence,
    ) -> asyncio.Future[list[AppendedRecord]]:
        """Queue `drafts` now (synchronously: calls commit in call order); the future resolves
        when they are committed. Call `prepare_produce` first."""
        self.authorize(principal, Action.WRITE, topic)
        self.rate_limiter.check(principal.name)
        meta = self.engine.get_topic(topic)
        return self.producer.submit(meta, drafts, self.topics.config_of(meta), producer, rule=rule)

    async def fetch(
        self,
        principal: Principal,
        topic: str,
        partition: int,
        offset: str,
        limit: int,
        max_bytes: int,
        timeout_ms: int,
    ) -> bytes:
        """REST's fetch: the JSON body (long-polls up to `timeout_ms` for new records)."""
        self.authorize(principal, Action.READ, topic)
        self.topics.topic(topic)
        return await self.fetcher.fetch(topic, partition, offset, limit, max_bytes, timeout_ms)

    async def offset_for_timestamp(
        self, principal: Principal, topic: str, partition: int, timestamp: int
    ) -> int | None:
        self.authorize(principal, Action.READ, topic)
        self.topics.topic(topic)
        return await self.engine.offset_for_timestamp(topic, partition, timestamp)

    def partition_for_read(
        self, principal: Principal, topic: str, partition: int
    ) -> ReadablePartition:
        """Authorize reading the topic and check the partition exists (raises `EddyError`)."""
        self.authorize(principal, Action.READ, topic)
        meta = self.engine.get_topic(topic)
        if not 0 <= partition < meta.partitions:
            raise PartitionNotFound(topic, partition, meta.partitions)
        state = self.engine.partition_state(topic, partition)
        return ReadablePartition(meta, state, self.topics.config_of(meta))

    async def read_records(
        self, readable: ReadablePartition, offset: int, max_bytes: int, limit: int = 100_000
    ) -> list[StoredRecord]:
        """Records from `offset` on (at least one if any exists), of a checked partition."""
        return await self.engine.read(readable.topic, readable.partition, offset, limit, max_bytes)

    async def list_offset(
        self, principal: Principal, topic: str, partition: int, at: OffsetQuery
    ) -> tuple[int, int]:
        """(offset, timestamp) of a Kafka ListOffsets query (-1: none)."""
        readable = self.partition_for_read(principal, topic, partition)
        return await look_up_offset(self.engine, readable, at)

    def partition_state(self, topic: str, partition: int) -> PartitionState:
        """A partition's offsets and size, from memory."""
        return self.engine.partition_state(topic, partition)

    def high_watermark(self, topic: str, partition: int) -> int:
        return self.engine.high_watermark(topic, partition)

    async def wait_for_data(self, topic: str, partition: int, seconds: float) -> None:
        """Until a commit to the partition (or `seconds`, or shutdown)."""
        await self.hub.wait_for_data(topic, partition, seconds)

    @property
    def closing(self) -> bool:
        """The server is shutting down: long-polls answer now."""
        return self.hub.closing

    @property
    def embedded_log(self) -> bool:
        """Whether records live in Eddy's own log (not a Kafka cluster's)."""
        return self.engine.embedded_log

    # --- consumer groups ------------------------------------------------------------------------
    def list_groups(self, principal: Principal) -> list[GroupSummary]:
        """The groups the caller may use."""
        return self.group_services.list_groups(principal)

    def describe_group(self, principal: Principal, group: str) -> GroupDetail:
        return self.group_services.describe(principal, group)

    async def commit_group_offsets(
        self,
        principal: Principal,
        group: str,
        topic: str,
        offsets: Mapping[str, int],
        metadata: str = "",
    ) -> None:
        await self.group_services.commit(principal, group, topic, offsets, metadata)

    async def reset_group(
        self, principal: Principal, group: str, topic: str, to: ResetTo
    ) -> dict[int, int]:
        return await self.group_services.reset(principal, group, topic, to)

    async def delete_group(self, principal: Principal, group: str) -> None:
        await self.group_services.delete(principal, group)

    def add_member_kind(self, has_members: Callable[[str], bool]) -> None:
        """Another kind of group member (the Kafka listener's): one group name is used by
        one kind of member at a time."""
        self.group_services.add_member_kind(has_members)

    def remove_member_kind(self, has_members: Callable[[str], bool]) -> None:
        self.group_services.remove_member_kind(has_members)

    def group_has_members(self, group: str) -> bool:
        """Whether WebSocket members are in the group."""
        return self.group_services.has_members(group)

    def committed_offsets(self, group: str) -> list[CommittedOffset]:
        """The group's committed offsets, from memory (the caller filters what it may read)."""
        return self.group_services.committed(group)

    async def commit_member_offsets(
        self,
        principal: Principal,
        group: str,
        topic: str,
        offsets: Mapping[int, int],
        metadata: Mapping[int, str],
    ) -> None:
        """A Kafka-protocol member's commit (its coordinator has checked the generation)."""
        await self.group_services.commit_member(principal, group, topic, offsets, metadata)

    # --- streaming sessions and their connection slots ----------------------------------------
    async def subscribe(
        self,
        topic: str,
        params: SubscribeParams,
        connection: Connection,
        incoming: AsyncIterator[str | bytes],
        client: str,
        principal: Principal,
    ) -> End:
        """Run one subscription until it ends (see `StreamingSessions.subscribe`)."""
        return await self.sessions.subscribe(topic, params, connection, incoming, client, principal)

    async def open_subscription(
        self,
        topic: str,
        params: SubscribeParams,
        connection: Connection,
        principal: Principal,
        on_end: Callable[[End], None],
    ) -> Subscriber:
        """Start a plain subscription without a task (see `StreamingSessions`)."""
        return await self.sessions.open_subscription(topic, params, connection, principal, on_end)

    async def publish(
        self,
        topic: str,
        producer_id: str | None,
        sink: AnswerSink,
        incoming: FrameSource,
        principal: Principal,
    ) -> End:
        """Run one publishing connection until it ends; returns how it ended."""
        return await self.sessions.publish(topic, producer_id, sink, incoming, principal)

    def open_websocket(self) -> bool:
        """Take a streaming connection slot; False when --max-websockets are open already."""
        return self.slots.take()

    def websocket_closed(self) -> None:
        self.slots.release()

    @property
    def open_streams(self) -> int:
        """Streaming connections (WebSockets and SSE streams) holding a slot."""
        return self.slots.open

    async def websockets_closed(self, seconds: float) -> None:
        """Wait (at most `seconds`) until no WebSocket is open."""
        await self.slots.all_released(seconds)

    # --- metrics ------------------------------------------------------------------------------
    def count_delivered(self, topic: str, via: Transport, records: int, nbytes: int) -> None:
        self.metrics.count_delivered(topic, via, records, nbytes)

    def count_rejection(self, code: str, transport: Transport) -> None:
        self.metrics.count_rejection(code, transport)

    def count_open_websocket(self, endpoint: str, change: int) -> None:
        """The open-WebSockets gauge of an endpoint, up or down."""
        self.metrics.websockets_open.labels(endpoint).inc(change)

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """Where a transport registers metrics of its own."""
        return self.metrics.registry

    def metrics_exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.metrics.registry)

    async def refresh_disk_metrics(self) -> None:
        """Measure the data dir's disk usage for the scrape (in a thread, shared)."""
        await self._disk.refresh()


__all__ = ["Broker", "BrokerConfig", "EddyError"]

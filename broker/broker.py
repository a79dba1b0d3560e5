"""The broker: the services the routers call (topics, produce, fetch, subscribe, publish).

Created once in the app's lifespan around an `Engine`; routers reach it through a dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from eddy.broker.access import (
    AccessPolicy,
    Action,
    AuthenticationFailed,
    AuthFileError,
    Principal,
    load_access_policy,
)
from eddy.broker.config import PUBLISH_MAX_IN_FLIGHT, BrokerConfig
from eddy.broker.drafts import RecordDraft
from eddy.broker.events import End, Subscribed
from eddy.broker.fetcher import Fetcher
from eddy.broker.groups import GroupCoordinator, ResetTo
from eddy.broker.hub import FanoutHub
from eddy.broker.idempotence import SequenceRule, check_sequence
from eddy.broker.metrics import Metrics, Transport
from eddy.broker.positions import SubscribeParams, partitions_to_look_up, start_positions
from eddy.broker.producer import Producer
from eddy.broker.publisher import AnswerSink, FrameSource, PublishSession, submitter
from eddy.broker.rate_limit import RateLimiter
from eddy.broker.reads import OffsetQuery, ReadablePartition, look_up_offset
from eddy.broker.retention import Cleaner
from eddy.broker.subscriber import Connection, Subscriber
from eddy.broker.subscription import CloseWhenFull, ConflateWhenFull
from eddy.broker.topic_rules import (
    effective_config,
    validate_config,
    validate_group_name,
    validate_partition_count,
    validate_topic_name,
)
from eddy.models.context import current_call
from eddy.models.errors import (
    EddyError,
    InvalidRequest,
    PartitionNotFound,
    TopicExists,
    TopicLimitReached,
    TopicNotFound,
    Unauthorized,
    Unavailable,
)
from eddy.models.groups import GroupDetail, GroupSummary
from eddy.models.topics import PartitionInfo, TopicDetail, TopicSummary
from eddy.storage import (
    PRODUCER_WINDOW,
    AppendedRecord,
    CommittedOffset,
    Engine,
    PartitionState,
    ProducerSequence,
    SQLiteEngine,
    StoredRecord,
    TopicMeta,
)

log = logging.getLogger("eddy.broker")


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
        self.access = access or AccessPolicy()
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
        self.metrics.watch_partitions(self._partition_states)
        engine.observe_commits(self.metrics.commit_seconds.observe)
        self._disk_usage: asyncio.Future[None] | None = None
        self.cleaner = Cleaner(
            engine, self._config_of, self.metrics, config.retention_check_interval
        )
        self._creating: dict[str, asyncio.Lock] = {}
        # Topics against max_topics: kept as a count (listing is O(n log n) per create),
        # recounted exactly whenever it says the limit is reached.
        self._topic_count = 0
        self._creations_in_flight = 0
        self._open_websockets = 0
        self._no_websockets = asyncio.Event()
        self._no_websockets.set()

    async def start(self) -> None:
        await self.engine.open()
        self._topic_count = len(self.engine.list_topics())
        self.cleaner.start()
        self._prefetch_signing_keys()
        if self._auth_file is not None:
            self._auth_watcher = asyncio.create_task(self._watch_auth_file(self._auth_file))

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

    async def _watch_auth_file(self, path: Path) -> None:
        """Reload the auth file when it changes (revoking a key takes effect without a
        restart); a broken edit keeps the previous policy and is logged."""
        last = (await asyncio.to_thread(path.stat)).st_mtime_ns
        while True:
            await asyncio.sleep(self.config.auth_recheck_interval)
            try:
                mtime = (await asyncio.to_thread(path.stat)).st_mtime_ns
                if mtime == last:
                    continue
                last = mtime
                policy = await asyncio.to_thread(load_access_policy, path)
                old = self.access.jwt.jwks if self.access.jwt is not None else None
                if old is not None and policy.jwt is not None and policy.jwt.jwks is not None:
                    policy.jwt.jwks.adopt(old)  # same URL: keep the keys fetched already
                self.access = policy
                self._prefetch_signing_keys()
                log.info("reloaded auth file %s", path)
            except (OSError, AuthFileError) as exc:
                log.error("auth file not reloaded, keeping the previous one: %s", exc)
            except Exception:  # unforeseen: keep watching (the old policy stays in force)
                log.exception("auth file check failed, keeping the previous policy")
                self.metrics.background_errors.labels("auth-watcher", "").inc()

    # --- callers ------------------------------------------------------------------------------
    async def authenticate(self, token: str | None) -> Principal:
        """The caller for a bearer token (None: none given); raises `Unauthorized`. Names the
        principal in the call being served (for the access log)."""
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
        validate_group_name(group)
        self.access.require(principal, action, group, what="group")

    def _prefetch_signing_keys(self) -> None:
        if self.access.jwt is not None and self.access.jwt.jwks is not None:
            self.access.jwt.jwks.prefetch()

    # --- metrics ------------------------------------------------------------------------------
    def _partition_states(self) -> list[tuple[str, list[PartitionState]]]:
        """Every partition's state, from memory (for the scrape)."""
        engine = self.engine
        found = []
        for meta in engine.list_topics():
            try:
                states = [engine.partition_state(meta.name, p) for p in range(meta.partitions)]
            except EddyError:  # deleted or unavailable meanwhile: not reported
                continue
            found.append((meta.name, states))
        return found

    async def refresh_disk_metrics(self) -> None:
        """Measure the data dir's disk usage (in a thread; one measurement at a time, shared
        by concurrent scrapes)."""
        if self._disk_usage is None:
            self._disk_usage = asyncio.ensure_future(self._measure_disk())
        try:
            await asyncio.shield(self._disk_usage)
        finally:
            if self._disk_usage is not None and self._disk_usage.done():
                self._disk_usage = None

    async def _measure_disk(self) -> None:
        try:
            usage = await self.engine.disk_usage()
        except OSError as exc:
            log.warning("cannot measure the data dir's disk usage: %s", exc)
            return
        if usage is not None:
            self.metrics.set_disk_usage(*usage)

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
        self, principal: Principal, name: str, partitions: int | None, config: Mapping[str, Any]
    ) -> TopicSummary:
        validate_topic_name(name)
        self.access.require(principal, Action.ADMIN, name)
        count = validate_partition_count(partitions or self.config.default_partitions)
        checked = validate_config(config)
        self._check_topic_limit(name)
        self._creations_in_flight += 1
        try:
            meta = await self.engine.create_topic(name, count, checked)
        finally:
            self._creations_in_flight -= 1
        self._topic_count += 1
        self.access.audit_admin(principal, "create_topic", f"topic:{name}", "ok")
        log.info("created topic %s with %d partitions", name, count)
        return self._summary(meta)

    def list_topics(self, principal: Principal) -> list[TopicSummary]:
        """The topics the caller may read."""
        if self.access.enabled and not principal.authenticated and principal.grants.empty:
            raise Unauthorized("credentials required")
        return [
            self._summary(meta)
            for meta in self.engine.list_topics()
            if self.access.allows(principal, Action.READ, meta.name)
        ]

    def describe_topic(self, principal: Principal, name: str) -> TopicDetail:
        validate_topic_name(name)
        self.access.require(principal, Action.READ, name)
        return self._describe(name)

    def _describe(self, name: str) -> TopicDetail:
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
        self,
        principal: Principal,
        name: str,
        partitions: int | None,
        config: Mapping[str, Any] | None,
    ) -> TopicDetail:
        validate_topic_name(name)
        self.access.require(principal, Action.ADMIN, name)
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
            # The engine has told the listeners (in the same step that made the partitions
            # writable): live subscribers of "all partitions" start the new ones at offset 0
            # and groups rebalance.
            log.info("topic %s now has %d partitions", name, updated.partitions)
        self.access.audit_admin(principal, "update_topic", f"topic:{name}", "ok")
        return self._describe(name)

    async def replace_topic_config(
        self, principal: Principal, name: str, config: Mapping[str, Any]
    ) -> TopicDetail:
        """Set the topic's overrides to exactly `config` (Kafka's AlterConfigs: keys left out
        go back to the server's defaults)."""
        validate_topic_name(name)
        self.access.require(principal, Action.ADMIN, name)
        self._topic(name)
        await self.engine.update_topic(name, None, validate_config(config))
        self.access.audit_admin(principal, "update_topic", f"topic:{name}", "ok")
        return self._describe(name)

    async def delete_topic(self, principal: Principal, name: str) -> None:
        validate_topic_name(name)
        self.access.require(principal, Action.ADMIN, name)
        await self.engine.delete_topic(name)
        self._topic_count -= 1
        self.access.audit_admin(principal, "delete_topic", f"topic:{name}", "ok")
        log.info("deleted topic %s", name)

    def _check_topic_limit(self, name: str) -> None:
        """Raise `TopicLimitReached` if creating `name` would pass --max-topics (`TopicExists`
        if it exists: that is the better answer)."""
        limit = self.config.max_topics
        if self._topic_count + self._creations_in_flight < limit:
            return
        self._topic_count = len(self.engine.list_topics())
        if self._topic_count + self._creations_in_flight < limit:
            return
        with contextlib.suppress(TopicNotFound):
            self.engine.get_topic(name)
            raise TopicExists(name)
        raise TopicLimitReached(name, limit)

    def _topic(self, name: str) -> TopicMeta:
        validate_topic_name(name)
        return self.engine.get_topic(name)

    async def _topic_for_use(self, principal: Principal, name: str) -> TopicMeta:
        """The topic, auto-created with the defaults if that is on and the caller may
        administer the name (produce and subscribe); else as if auto-create were off."""
        try:
            return self.engine.get_topic(name)
        except TopicNotFound:
            if not self.config.auto_create_topics or not self.access.allows(
                principal, Action.ADMIN, name
            ):
                raise
        lock = self._creating.setdefault(name, asyncio.Lock())
        async with lock:  # concurrent first produces create the topic once
            try:
                return self.engine.get_topic(name)
            except TopicNotFound:
                # (on a shared cluster another server may have created it meanwhile)
                with contextlib.suppress(TopicExists):
                    await self.create_topic(principal, name, None, {})
                return self.engine.get_topic(name)
            finally:
                self._creating.pop(name, None)

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
        meta = await self._topic_for_use(principal, topic)
        return await self.producer.produce(meta, drafts, self._config_of(meta), producer, rule)

    async def prepare_produce(self, principal: Principal, topic: str) -> None:
        """What `produce` does before it queues: authorize, and auto-create the topic. For a
        transport that queues requests in arrival order with `submit_produce` and collects
        the outcomes later (Kafka clients keep several produce requests in flight)."""
        self.authorize(principal, Action.WRITE, topic)
        await self._topic_for_use(principal, topic)

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
        return self.producer.submit(meta, drafts, self._config_of(meta), producer, rule=rule)

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
        self.authorize(principal, Action.READ, topic)
        self._topic(topic)
        return await self.fetcher.fetch(topic, partition, offset, limit, max_bytes, timeout_ms)

    async def offset_for_timestamp(
        self, principal: Principal, topic: str, partition: int, timestamp: int
    ) -> int | None:
        self.authorize(principal, Action.READ, topic)
        self._topic(topic)
        return await self.engine.offset_for_timestamp(topic, partition, timestamp)

    # --- reads below the Kafka listener -------------------------------------------------------
    def topic(self, name: str) -> TopicMeta:
        """The topic's metadata (raises `TopicNotFound`)."""
        return self._topic(name)

    def partition_state(self, topic: str, partition: int) -> PartitionState:
        """A partition's offsets and size, from memory."""
        return self.engine.partition_state(topic, partition)

    def high_watermark(self, topic: str, partition: int) -> int:
        return self.engine.high_watermark(topic, partition)

    def partition_for_read(
        self, principal: Principal, topic: str, partition: int
    ) -> ReadablePartition:
        """Authorize reading the topic and check the partition exists (raises `EddyError`)."""
        self.authorize(principal, Action.READ, topic)
        meta = self.engine.get_topic(topic)
        if not 0 <= partition < meta.partitions:
            raise PartitionNotFound(topic, partition, meta.partitions)
        state = self.engine.partition_state(topic, partition)
        return ReadablePartition(meta, state, self._config_of(meta))

    async def read_records(
        self, readable: ReadablePartition, offset: int, max_bytes: int, limit: int = 100_000
    ) -> list[StoredRecord]:
        """Records from `offset` on (at least one if any exists), of a checked partition."""
        return await self.engine.read(readable.topic, readable.partition, offset, limit, max_bytes)

    async def list_offset(
        self, principal: Principal, topic: str, partition: int, at: OffsetQuery
    ) -> tuple[int, int]:
        """(offset, timestamp) of a Kafka ListOffsets query (-1: none)."""
        return await look_up_offset(
            self.engine, self.partition_for_read(principal, topic, partition), at
        )

    async def wait_for_data(self, topic: str, partition: int, seconds: float) -> None:
        """Until a commit to the partition (or `seconds`, or shutdown)."""
        await self.hub.wait_for_data(topic, partition, seconds)

    @property
    def closing(self) -> bool:
        """The server is shutting down: long-polls answer now."""
        return self.hub.closing

    def count_delivered(self, topic: str, via: Transport, records: int, nbytes: int) -> None:
        self.metrics.count_delivered(topic, via, records, nbytes)

    def count_rejection(self, code: str, transport: Transport) -> None:
        self.metrics.count_rejection(code, transport)

    @property
    def embedded_log(self) -> bool:
        """Whether records live in Eddy's own log (not a Kafka cluster's)."""
        return isinstance(self.engine, SQLiteEngine)

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """Where a transport registers metrics of its own."""
        return self.metrics.registry

    def metrics_exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.metrics.registry)

    # --- consumer groups (REST) ---------------------------------------------------------------
    def list_groups(self, principal: Principal) -> list[GroupSummary]:
        """The groups the caller may use."""
        return [
            g
            for g in self.groups.list_groups()
            if self.access.allows(principal, Action.GROUP, g.group)
        ]

    def describe_group(self, principal: Principal, group: str) -> GroupDetail:
        self.authorize_group(principal, Action.GROUP, group)
        detail = self.groups.describe_group(group)
        readable = {
            o.topic for o in detail.offsets if self.access.allows(principal, Action.READ, o.topic)
        } | {m.topic for m in detail.members if self.access.allows(principal, Action.READ, m.topic)}
        return detail.model_copy(
            update={
                "members": [m for m in detail.members if m.topic in readable],
                "offsets": [o for o in detail.offsets if o.topic in readable],
            }
        )

    async def commit_group_offsets(
        self,
        principal: Principal,
        group: str,
        topic: str,
        offsets: Mapping[str, int],
        metadata: str = "",
    ) -> None:
        self.authorize_group(principal, Action.GROUP, group)
        self.authorize(principal, Action.READ, topic)
        self._topic(topic)
        await self.groups.commit_from_rest(group, topic, offsets, metadata)

    async def reset_group(
        self, principal: Principal, group: str, topic: str, to: ResetTo
    ) -> dict[int, int]:
        self.authorize_group(principal, Action.ADMIN, group)
        self._topic(topic)
        offsets = await self.groups.reset(group, topic, to)
        self.access.audit_admin(principal, "reset_group", f"group:{group}", "ok")
        return offsets

    async def delete_group(self, principal: Principal, group: str) -> None:
        self.authorize_group(principal, Action.ADMIN, group)
        await self.groups.delete(group)
        self.access.audit_admin(principal, "delete_group", f"group:{group}", "ok")

    # --- consumer groups (Kafka-protocol members) ----------------------------------------------
    def add_member_kind(self, has_members: Callable[[str], bool]) -> None:
        """Another kind of group member (the Kafka listener's): while `has_members(group)`,
        WebSocket members and REST commits, resets and deletes are refused `group_active`
        (one group name is used by one kind of member at a time)."""
        self.groups.other_members.append(has_members)

    def remove_member_kind(self, has_members: Callable[[str], bool]) -> None:
        with contextlib.suppress(ValueError):  # never added (a listener that did not start)
            self.groups.other_members.remove(has_members)

    def group_has_members(self, group: str) -> bool:
        """Whether WebSocket members are in the group."""
        return self.groups.has_members(group)

    def committed_offsets(self, group: str) -> list[CommittedOffset]:
        """The group's committed offsets, from memory (the caller filters what it may read)."""
        return self.engine.committed_offsets(group)

    async def commit_member_offsets(
        self,
        principal: Principal,
        group: str,
        topic: str,
        offsets: Mapping[int, int],
        metadata: Mapping[int, str],
    ) -> None:
        """A Kafka-protocol member's commit (its coordinator has checked the generation)."""
        self.authorize(principal, Action.READ, topic)
        meta = self.engine.get_topic(topic)
        for partition in offsets:
            if not 0 <= partition < meta.partitions:
                raise PartitionNotFound(topic, partition, meta.partitions)
        await self.engine.commit_offsets(group, topic, offsets, metadata)

    # --- streaming connection slots ---------------------------------------------------------------
    def count_open_websocket(self, endpoint: str, change: int) -> None:
        """The open-WebSockets gauge of an endpoint, up or down."""
        self.metrics.websockets_open.labels(endpoint).inc(change)

    def open_websocket(self) -> bool:
        """Take a connection slot; False when --max-websockets are open already."""
        if self._open_websockets >= self.config.max_websockets:
            return False
        self._open_websockets += 1
        self._no_websockets.clear()
        return True

    def websocket_closed(self) -> None:
        self._open_websockets -= 1
        if self._open_websockets == 0:
            self._no_websockets.set()

    async def websockets_closed(self, seconds: float) -> None:
        """Wait (at most `seconds`) until no WebSocket is open."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_websockets.wait(), seconds)

    # --- streaming sessions (the transports drive them) -------------------------------------
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
            self.hub.unregister(subscriber)

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
            self.hub.unregister(subscriber)
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
        count = self.engine.get_topic(topic).partitions
        for partition in partitions_to_look_up(params, count):
            high_watermark = self.engine.high_watermark(topic, partition)
            found = await self.engine.offset_for_timestamp(topic, partition, params.since)
            offsets[partition] = high_watermark if found is None else found
        return offsets

    async def _new_subscriber(
        self, topic: str, params: SubscribeParams, connection: Connection, principal: Principal
    ) -> Subscriber:
        self.authorize(principal, Action.READ, topic)
        if params.group is not None:
            self.authorize_group(principal, Action.GROUP, params.group)
        await self._topic_for_use(principal, topic)
        return Subscriber(
            topic=topic,
            keys=params.keys,
            connection=connection,
            engine=self.engine,
            metrics=self.metrics,
            max_buffer_bytes=self.config.ws_buffer_bytes,
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
        partitions = self.engine.get_topic(topic).partitions
        states = [self.engine.partition_state(topic, p) for p in range(partitions)]
        positions = start_positions(topic, states, params, since_offsets)
        self.hub.register(subscriber)
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
        self.hub.register(subscriber)  # before join: its assignment must see every commit
        try:
            member = await self.groups.join(
                params.group,
                subscriber.topic,
                subscriber,
                params.start_from,
                params.auto_commit,
                client,
                since_offsets if params.since is not None else None,
            )
        except BaseException:
            self.hub.unregister(subscriber)
            raise
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
        producer_id: str | None,
        sink: AnswerSink,
        incoming: FrameSource,
        principal: Principal,
    ) -> End:
        """Run one publishing connection until it ends; returns how it ended."""
        self.authorize(principal, Action.WRITE, topic)
        await self._topic_for_use(principal, topic)

        def target() -> tuple[TopicMeta, dict[str, Any]]:
            meta = self.engine.get_topic(topic)
            return meta, self._config_of(meta)

        submit = submitter(
            self.producer, target, lambda: self.rate_limiter.check(principal.name), PRODUCER_WINDOW
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
            lambda error: self.metrics.count_rejection(error.code, Transport.WEBSOCKET),
        )
        self.hub.register_publisher(session)
        try:
            return await session.run(incoming)
        finally:
            self.hub.unregister_publisher(session)


__all__ = ["Broker", "BrokerConfig", "EddyError"]

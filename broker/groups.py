"""Consumer groups: members on WebSockets share a topic's partitions; committed offsets.

A group's members on one topic are kept in join order. Every join or leave rebalances: the
assignment is recomputed (balanced, sticky: `assignment.py`) and applied to every member's
subscriber in one synchronous step, so a revoked partition stops delivering before its new
owner starts it. A newly owned partition starts at the group's committed offset, else at the
member's `from`. Records sent but not committed when a member leaves are delivered again to the
next owner (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from eddy.broker.assignment import assign_partitions
from eddy.broker.codec import parse_json
from eddy.broker.events import Assigned, Committed, Refused
from eddy.broker.metrics import Metrics
from eddy.broker.positions import StartFrom, StartPosition, default_start
from eddy.broker.subscriber import Subscriber
from eddy.broker.topic_rules import validate_group_name
from eddy.models.errors import (
    EddyError,
    GroupActive,
    GroupNotFound,
    InvalidRequest,
    NotAssigned,
    OffsetOutOfRange,
    PartitionNotFound,
    TopicNotFound,
)
from eddy.models.groups import (
    GroupDetail,
    GroupMemberInfo,
    GroupOffsetInfo,
    GroupSummary,
)
from eddy.models.log import StoredRecord
from eddy.storage import Engine

log = logging.getLogger("eddy.groups")

ResetTo = Literal["earliest", "latest"] | int  # an int is a timestamp (ms)


@dataclass(eq=False)
class Member:
    member_id: str
    group: str
    topic: str
    subscriber: Subscriber
    start_from: StartFrom
    auto_commit: bool
    client: str
    joined_at: int
    # since=: per partition of the topic when it joined, where one without a commit starts
    since_offsets: Mapping[int, int] | None = None
    auto_committer: asyncio.Task[None] | None = None


@dataclass
class _TopicGroup:
    """One group's members on one topic, in join order, and who owns which partition."""

    members: dict[str, Member] = field(default_factory=dict)
    assignment: dict[str, set[int]] = field(default_factory=dict)
    generation: int = 0
    joining: bool = False  # the engine is taking this server into the group (join rebalances)


class GroupCoordinator:
    def __init__(self, engine: Engine, metrics: Metrics, auto_commit_interval: float) -> None:
        self._engine = engine
        self._metrics = metrics
        self._auto_commit_interval = auto_commit_interval
        self._groups: dict[tuple[str, str], _TopicGroup] = {}
        self._ids = itertools.count(1)
        # Whether another kind of member (the Kafka protocol listener's) is in a group: one group
        # name is used by one kind at a time.
        self.other_members: list[Callable[[str], bool]] = []
        metrics.registry.register(_GroupLagCollector(self._engine))

    # --- membership ---------------------------------------------------------------------------
    async def join(
        self,
        group: str,
        topic: str,
        subscriber: Subscriber,
        start_from: StartFrom,
        auto_commit: bool,
        client: str,
        since_offsets: Mapping[int, int] | None = None,
    ) -> Member:
        """Add a member and rebalance (its subscriber is assigned on return). The first member
        of a group on this server first takes the server's part in the group across servers
        (on a Kafka cluster; at once on the embedded engine)."""
        validate_group_name(group)
        self._refuse_if_external(group)
        member = Member(
            member_id=f"{group}-{next(self._ids)}-{secrets.token_hex(3)}",
            group=group,
            topic=topic,
            subscriber=subscriber,
            start_from=start_from,
            auto_commit=auto_commit,
            client=client,
            joined_at=int(time.time() * 1000),
            since_offsets=since_offsets,
        )
        key = (group, topic)
        state = self._groups.get(key)
        first = state is None
        if state is None:
            state = self._groups[key] = _TopicGroup()
        # In the group before any await, so that members leaving meanwhile do not end it.
        state.members[member.member_id] = member
        if first:
            state.joining = True
            try:
                await self._engine.join_group(
                    group, topic, lambda: self._engine_reassigned(group, topic)
                )
            except BaseException:
                del state.members[member.member_id]
                if not state.members and self._groups.get(key) is state:
                    del self._groups[key]
                raise
            finally:
                state.joining = False
        self._rebalance(group, topic, state)
        if auto_commit:
            member.auto_committer = asyncio.create_task(self._auto_commit_loop(member))
        return member

    async def leave(self, member: Member) -> None:
        """Remove a member (after committing what it was sent, with auto_commit) and rebalance."""
        if member.auto_committer is not None:
            member.auto_committer.cancel()
            with contextlib.suppress(asyncio.CancelledError, EddyError):
                await member.auto_committer
            with contextlib.suppress(EddyError):
                await self._commit_sent(member)
        key = (member.group, member.topic)
        state = self._groups.get(key)
        if state is None or member.member_id not in state.members:
            return
        del state.members[member.member_id]
        state.assignment.pop(member.member_id, None)
        if not state.members:
            del self._groups[key]
            await self._engine.leave_group(member.group, member.topic)
            return
        with contextlib.suppress(TopicNotFound):  # the topic was deleted: nothing to hand over
            self._rebalance(member.group, member.topic, state)

    # --- LogListener ---------------------------------------------------------------------------
    def on_commit(self, topic: str, records: Sequence[StoredRecord]) -> None:
        pass

    def on_topic_deleted(self, topic: str) -> None:
        pass  # its members' connections are closed by the hub; they leave as they end

    def on_partitions_added(self, topic: str, partitions: int) -> None:
        """The topic grew: every group on it rebalances over the new partition count."""
        for (group, group_topic), state in list(self._groups.items()):
            if group_topic == topic and state.members:
                self._rebalance(group, topic, state)

    def _engine_reassigned(self, group: str, topic: str) -> None:
        """The partitions this server's members of the group share changed (another server
        joined or left the group): rebalance the local members over the new share."""
        state = self._groups.get((group, topic))
        if state is not None and state.members and not state.joining:
            with contextlib.suppress(TopicNotFound):
                self._rebalance(group, topic, state)

    def _rebalance(self, group: str, topic: str, state: _TopicGroup) -> None:
        count = self._engine.get_topic(topic).partitions
        shared = self._engine.group_partitions(group, topic)
        partitions = sorted(p for p in range(count) if shared is None or p in shared)
        # assign_partitions deals in 0..n-1: map this server's share onto that and back
        index = {p: i for i, p in enumerate(partitions)}
        previous = {m: {index[p] for p in ps if p in index} for m, ps in state.assignment.items()}
        new = {
            m: {partitions[i] for i in ps}
            for m, ps in assign_partitions(len(partitions), list(state.members), previous).items()
        }
        state.generation += 1
        self._metrics.group_rebalances.labels(group, topic).inc()
        # Revocations first: once this loop is done no member delivers a partition it lost.
        for member_id, member in state.members.items():
            kept = new[member_id] & member.subscriber.partitions
            member.subscriber.assign({p: StartPosition(0) for p in kept})
        for member_id, member in state.members.items():
            subscriber = member.subscriber
            starts = {
                p: self._start_position(group, topic, p, member)
                for p in new[member_id] - subscriber.partitions
            }
            subscriber.assign({**{p: StartPosition(0) for p in subscriber.partitions}, **starts})
            positions = subscriber.next_offsets()
            subscriber.send_event(
                Assigned(
                    state.generation,
                    member_id,
                    {
                        p: StartPosition(positions[p], p in starts and starts[p].reset)
                        for p in sorted(new[member_id])
                    },
                )
            )
            subscriber.kick()
        state.assignment = new
        log.info(
            "group %s on %s: generation %d, %d member(s)",
            group,
            topic,
            state.generation,
            len(state.members),
        )

    def _start_position(
        self, group: str, topic: str, partition: int, member: Member
    ) -> StartPosition:
        state = self._engine.partition_state(topic, partition)
        committed = self._committed(group, topic).get(partition)
        if committed is None:
            # since= was looked up when the member joined; a partition added to the topic
            # after that has no entry and starts by `from`, as for members without since=.
            since = (member.since_offsets or {}).get(partition)
            return default_start(state, member.start_from, since)
        if committed < state.log_start_offset:  # removed by retention since the commit
            return StartPosition(state.log_start_offset, reset=True)
        return StartPosition(min(committed, state.high_watermark))

    def _committed(self, group: str, topic: str) -> dict[int, int]:
        return {
            c.partition: c.offset for c in self._engine.committed_offsets(group) if c.topic == topic
        }

    # --- commits from members -----------------------------------------------------------------
    async def handle_frame(self, member: Member, frame: str | bytes) -> None:
        """A client frame in group mode: only `commit` is accepted."""
        try:
            data: Any = parse_json(frame) if isinstance(frame, str) else None
            if not isinstance(data, dict) or data.get("type") != "commit":
                raise InvalidRequest('expected {"type": "commit", "offsets": {"0": 42}}')
            offsets = await self.commit_from_member(member, data.get("offsets"))
            member.subscriber.send_event(Committed(offsets))
        except EddyError as exc:
            member.subscriber.send_event(Refused(exc))
        except Exception:  # a bug must not end the member's receive loop
            log.exception("commit frame from %s failed", member.member_id)
            member.subscriber.send_event(Refused(InvalidRequest("commit failed")))

    async def commit_from_member(self, member: Member, raw: Any) -> dict[int, int]:
        offsets = self._parse_offsets(member.topic, raw)
        state = self._groups.get((member.group, member.topic))
        owned = state.assignment.get(member.member_id, set()) if state else set()
        stale = sorted(p for p in offsets if p not in owned)
        if stale:
            raise NotAssigned(
                f"partition(s) {stale} of '{member.topic}' are not assigned to this member",
                {"partitions": stale, "assigned": sorted(owned)},
            )
        await self._engine.commit_offsets(member.group, member.topic, offsets)
        return offsets

    async def _commit_sent(self, member: Member) -> None:
        sent = member.subscriber.sent_positions()
        committed = self._committed(member.group, member.topic)
        changed = {p: o for p, o in sent.items() if committed.get(p) != o}
        if changed:
            await self._engine.commit_offsets(member.group, member.topic, changed)

    async def _auto_commit_loop(self, member: Member) -> None:
        while True:
            await asyncio.sleep(self._auto_commit_interval)
            try:
                await self._commit_sent(member)
            except EddyError as exc:
                log.warning("auto-commit for %s failed: %s", member.member_id, exc)

    def _parse_offsets(self, topic: str, raw: Any) -> dict[int, int]:
        """{"0": 42, ...} -> {0: 42}, each offset within [0, high watermark]."""
        if not isinstance(raw, dict) or not raw:
            raise InvalidRequest('offsets must be an object like {"0": 42}')
        meta = self._engine.get_topic(topic)
        offsets: dict[int, int] = {}
        for key, offset in raw.items():
            try:
                partition = int(key)
            except (TypeError, ValueError):
                raise InvalidRequest(f"'{str(key)[:20]}' is not a partition number") from None
            if not 0 <= partition < meta.partitions:
                raise PartitionNotFound(topic, partition, meta.partitions)
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise InvalidRequest(f"offset of partition {partition} must be an integer")
            state = self._engine.partition_state(topic, partition)
            if not 0 <= offset <= state.high_watermark:
                raise OffsetOutOfRange(
                    topic, partition, offset, state.log_start_offset, state.high_watermark
                )
            offsets[partition] = offset
        return offsets

    def _refuse_if_external(self, group: str) -> None:
        if any(has_members(group) for has_members in self.other_members):
            raise GroupActive(
                f"group '{group}' has Kafka-protocol members; one group name is used by one kind "
                "of member at a time",
                {"group": group},
            )

    async def _check_unknown_group_idle(self, group: str) -> None:
        """A group this server knows no offsets of may still have members elsewhere (on a
        shared cluster, members that never committed): ask the engine. For a group with
        offsets, the engine's own commit and delete refuse a group with members."""
        if not self._engine.committed_offsets(group):
            await self._engine.check_group_idle(group)

    def has_members(self, group: str) -> bool:
        """Whether WebSocket members are in the group (on any topic)."""
        return bool(self._active_topics(group))

    # --- REST -----------------------------------------------------------------------------------
    def _active_topics(self, group: str) -> dict[str, _TopicGroup]:
        return {t: s for (g, t), s in self._groups.items() if g == group and s.members}

    def list_groups(self) -> list[GroupSummary]:
        topics: dict[str, set[str]] = {}
        members: dict[str, int] = {}
        for (group, topic), state in self._groups.items():
            topics.setdefault(group, set()).add(topic)
            members[group] = members.get(group, 0) + len(state.members)
        for committed in self._engine.committed_offsets():
            topics.setdefault(committed.group, set()).add(committed.topic)
        return [
            GroupSummary(group=g, topics=sorted(topics[g]), members=members.get(g, 0))
            for g in sorted(topics)
        ]

    def describe_group(self, group: str) -> GroupDetail:
        validate_group_name(group)
        active = self._active_topics(group)
        committed = self._engine.committed_offsets(group)
        if not active and not committed:
            raise GroupNotFound(group)
        members = [
            GroupMemberInfo(
                member_id=m.member_id,
                topic=topic,
                client=m.client,
                joined_at=m.joined_at,
                auto_commit=m.auto_commit,
                partitions=sorted(state.assignment.get(m.member_id, ())),
            )
            for topic, state in sorted(active.items())
            for m in state.members.values()
        ]
        owners = {
            (topic, p): member_id
            for topic, state in active.items()
            for member_id, parts in state.assignment.items()
            for p in parts
        }
        committed_at = {(c.topic, c.partition): c for c in committed}
        offsets: list[GroupOffsetInfo] = []
        for topic in sorted({c.topic for c in committed} | set(active)):
            try:
                partitions = self._engine.get_topic(topic).partitions
            except TopicNotFound:
                continue
            for p in range(partitions):
                high_watermark = self._engine.high_watermark(topic, p)
                commit = committed_at.get((topic, p))
                offset = None if commit is None else commit.offset
                offsets.append(
                    GroupOffsetInfo(
                        topic=topic,
                        partition=p,
                        committed_offset=offset,
                        metadata=None if commit is None else commit.metadata,
                        high_watermark=high_watermark,
                        lag=None if offset is None else max(high_watermark - offset, 0),
                        member_id=owners.get((topic, p)),
                    )
                )
        return GroupDetail(group=group, members=members, offsets=offsets)

    async def commit_from_rest(
        self, group: str, topic: str, raw: Mapping[str, Any], metadata: str = ""
    ) -> None:
        """Commit for a worker that consumes over REST (it picks its partitions itself), with
        one metadata string for each partition committed."""
        validate_group_name(group)
        self._refuse_if_external(group)
        if topic in self._active_topics(group):
            raise GroupActive(
                f"group '{group}' has WebSocket members on '{topic}'; they commit their own "
                "partitions",
                {"group": group, "topic": topic},
            )
        offsets = self._parse_offsets(topic, dict(raw))
        await self._engine.commit_offsets(group, topic, offsets, dict.fromkeys(offsets, metadata))

    async def reset(self, group: str, topic: str, to: ResetTo) -> dict[int, int]:
        validate_group_name(group)
        self._refuse_if_external(group)
        if self._active_topics(group):
            raise GroupActive(f"group '{group}' has members; stop them first", {"group": group})
        meta = self._engine.get_topic(topic)
        await self._check_unknown_group_idle(group)
        offsets: dict[int, int] = {}
        for p in range(meta.partitions):
            state = self._engine.partition_state(topic, p)
            if to == "earliest":
                offsets[p] = state.log_start_offset
            elif to == "latest":
                offsets[p] = state.high_watermark
            else:
                found = await self._engine.offset_for_timestamp(topic, p, to)
                offsets[p] = state.high_watermark if found is None else found
        await self._engine.commit_offsets(group, topic, offsets)
        return offsets

    async def delete(self, group: str) -> None:
        validate_group_name(group)
        self._refuse_if_external(group)
        if self._active_topics(group):
            raise GroupActive(f"group '{group}' has members; stop them first", {"group": group})
        await self._check_unknown_group_idle(group)
        if not self._engine.committed_offsets(group):
            raise GroupNotFound(group)
        await self._engine.delete_committed_offsets(group)


class _GroupLagCollector(Collector):
    """Per group and partition: committed offset and lag, computed at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["group", "topic", "partition"]
        committed = GaugeMetricFamily(
            "eddy_group_committed_offset", "Committed offset (next to read)", labels=labels
        )
        lag = GaugeMetricFamily(
            "eddy_group_lag", "High watermark minus committed offset", labels=labels
        )
        for c in self._engine.committed_offsets():
            try:
                high_watermark = self._engine.high_watermark(c.topic, c.partition)
            except EddyError:
                continue
            values = [c.group, c.topic, str(c.partition)]
            committed.add_metric(values, c.offset)
            lag.add_metric(values, max(high_watermark - c.offset, 0))
        yield committed
        yield lag

"""Consumer groups on the Kafka engine. Offsets are committed to Kafka: by a group's members
through this server's group consumer, otherwise as an outside tool does (OffsetCommit without a
generation), and read back with OffsetFetch. Across servers, each Eddy server takes one seat in
the Kafka group per topic; the local members' membership stays on each server (README)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.protocol.commit import OffsetCommitRequest
from aiokafka.structs import OffsetAndMetadata

from eddy.models.errors import GroupActive, InvalidRequest, NotAssigned, Unavailable
from eddy.models.log import CommittedOffset
from eddy.storage.kafka.base import EDDY_NAME, KafkaEngineBase, kafka_unavailable
from eddy.storage.kafka_client import KafkaSettings

log = logging.getLogger("eddy.storage.kafka")

# Group errors that mean Kafka consumers are members of the group right now.
_ACTIVE_GROUP_ERRORS = {
    "UnknownMemberIdError",
    "IllegalGenerationError",
    "RebalanceInProgressError",
}


@dataclass(eq=False)
class GroupSeat:
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


class SeatListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: KafkaGroups, seat: GroupSeat) -> None:
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


class KafkaGroups(KafkaEngineBase):
    """Group seats (join, leave, rebalances) and the committed offsets this server knows."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self._offsets: dict[tuple[str, str, int], CommittedOffset] = {}
        # bumped by every local change of a group's offsets, so that a refresh that read Kafka
        # before the change does not put the old view back
        self._group_changes: dict[str, int] = defaultdict(int)
        self._seats: dict[tuple[str, str], GroupSeat] = {}

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
        seat = GroupSeat(group, topic, consumer, on_change)
        self._seats[(group, topic)] = seat
        consumer.subscribe([self._kafka_name(topic)], listener=SeatListener(self, seat))
        try:
            await consumer.start()
        except KafkaError as exc:
            self._seats.pop((group, topic), None)
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise kafka_unavailable(f"cannot join group '{group}'", exc) from exc
        seat.poller = asyncio.create_task(self._hold_seat(seat), name=f"group-{group}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seat.assigned.wait(), 30)

    async def _hold_seat(self, seat: GroupSeat) -> None:
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

    def _seat_changed(self, seat: GroupSeat) -> None:
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

    async def _load_committed(self, seat: GroupSeat, assigned: Any) -> None:
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

    async def _stop_seat(self, seat: GroupSeat) -> None:
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
        self, seat: GroupSeat, offsets: Mapping[int, int], notes: Mapping[int, str]
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
            raise kafka_unavailable(f"cannot commit offsets of group '{seat.group}'", exc) from exc

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
            raise kafka_unavailable(f"cannot commit offsets of group '{group}'", exc) from exc
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
            raise kafka_unavailable(f"cannot describe group '{group}'", exc) from exc
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
            raise kafka_unavailable(f"cannot delete group '{group}'", exc) from exc
        for _, error_code in response.results:
            if error_code and for_code(error_code).__name__ != "GroupIdNotFoundError":
                _raise_group_error(group, error_code, "delete")
        self._group_changes[group] += 1
        for key in [k for k in self._offsets if k[0] == group]:
            del self._offsets[key]

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

    def _eddy_group(self, kafka_group: str) -> str | None:
        if not kafka_group.startswith(self._prefix):
            return None
        name = kafka_group[len(self._prefix) :]
        return name if EDDY_NAME.match(name) else None


def _raise_group_error(group: str, error_code: int, what: str) -> None:
    error = for_code(error_code)
    if error.__name__ in _ACTIVE_GROUP_ERRORS or error.__name__ == "NonEmptyGroupError":
        raise GroupActive(
            f"group '{group}' has members (on another Eddy server, or Kafka consumers); Kafka "
            f"lets only them {what} it",
            {"group": group},
        )
    raise Unavailable(f"cannot {what} group '{group}': Kafka answered {error.__name__}")

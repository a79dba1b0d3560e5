"""Kafka-protocol consumer groups: the coordinator's answers delivered to waiting requests,
session timeouts checked by a clock task, and committed offsets kept where Eddy keeps every
group's (the engine's group offsets), so REST describe/reset/delete see them.

One group name is used by one kind of member at a time: while Kafka-protocol members are in a
group, a WebSocket member that joins it is refused (`group_active`), and while WebSocket members
are in it, a Kafka JoinGroup gets INCONSISTENT_GROUP_PROTOCOL. Their committed offsets are the
same either way, so a group can move from one kind to the other once it is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from kio.schema.errors import ErrorCode

from eddy.broker import Action, Broker
from eddy.models.errors import EddyError, GroupActive, GroupNotFound
from eddy.models.groups import METADATA_MAX_CHARS
from eddy.models.log import CommittedOffset
from eddy.routers.kafka.coordinator import (
    Answer,
    Group,
    JoinAnswer,
    Pending,
    State,
    SyncAnswer,
    new_member_id,
)
from eddy.routers.kafka.errors import error_code
from eddy.routers.kafka.messages import Request
from eddy.routers.kafka.session import Session

log = logging.getLogger("eddy.kafka.groups")

TICK_SECONDS = 0.25
NO_OFFSET = -1


class KafkaGroups:
    def __init__(self, broker: Broker, initial_delay: float = 3.0) -> None:
        self._broker = broker
        self._initial_delay = initial_delay  # Kafka's group.initial.rebalance.delay.ms
        self._groups: dict[str, Group] = {}
        self._waiting: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self._clock: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._broker.add_member_kind(self.has_members)
        self._clock = asyncio.create_task(self._tick_forever())

    async def stop(self) -> None:
        self._broker.remove_member_kind(self.has_members)
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        for future in self._waiting.values():
            if not future.done():
                future.set_result(JoinAnswer(ErrorCode.coordinator_not_available, ""))

    def has_members(self, group: str) -> bool:
        state = self._groups.get(group)
        return state is not None and bool(state.members)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            for group_id, group in list(self._groups.items()):
                try:
                    self._deliver(group_id, group.tick(now))
                except Exception:  # one group's bug must not stop the others' clocks
                    log.exception("group %s: tick failed", group_id)
                if group.state is State.EMPTY and not group.members and not group.issued_ids:
                    del self._groups[group_id]

    def _deliver(self, group_id: str, answers: list[tuple[str, Answer]]) -> None:
        for member_id, answer in answers:
            future = self._waiting.pop((group_id, member_id), None)
            if future is not None and not future.done():
                future.set_result(answer)

    async def _wait(self, group_id: str, member_id: str) -> Answer:
        key = (group_id, member_id)
        previous = self._waiting.pop(key, None)
        if previous is not None and not previous.done():  # a client retry replaces its request
            previous.set_result(JoinAnswer(ErrorCode.rebalance_in_progress, member_id))
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        try:
            return await future
        finally:
            if self._waiting.get(key) is future:
                del self._waiting[key]

    def _refusal(self, session: Session, group_id: str) -> ErrorCode | None:
        """Why this session may not use the group as a Kafka group, if it may not."""
        try:
            self._broker.authorize_group(session.principal, Action.GROUP, group_id)
        except EddyError as exc:
            if isinstance(exc, GroupActive):
                return ErrorCode.inconsistent_group_protocol
            return (
                ErrorCode.invalid_group_id
                if exc.code == "invalid_request"
                else error_code(exc, what="group")
            )
        if self._broker.group_has_members(group_id):
            return ErrorCode.inconsistent_group_protocol  # WebSocket members use this name
        return None

    # --- membership ---------------------------------------------------------------------------
    async def join(self, session: Session, request: Request) -> dict[str, Any]:
        body = request.body
        refused = self._refusal(session, body.group_id)
        if refused is not None:
            return _join_body(JoinAnswer(refused, body.member_id))
        session_timeout = body.session_timeout.total_seconds()
        rebalance = getattr(body, "rebalance_timeout", None)
        rebalance_timeout = session_timeout if rebalance is None else rebalance.total_seconds()
        if rebalance_timeout <= 0:
            rebalance_timeout = session_timeout
        group = self._groups.get(body.group_id)
        if group is None:
            group = self._groups[body.group_id] = Group(
                body.group_id, initial_delay=self._initial_delay
            )
        new_id = new_member_id(session.client_id, secrets.token_hex(4))
        answer, settled = group.join(
            body.member_id,
            body.protocol_type,
            [(p.name, p.metadata) for p in body.protocols],
            session_timeout,
            rebalance_timeout,
            session.client_id,
            session.client.rsplit(":", 1)[0],
            time.monotonic(),
            require_known_id=request.version >= 4,
            new_id=new_id,
        )
        self._deliver(body.group_id, settled)
        if isinstance(answer, Pending):
            member_id = body.member_id or new_id
            waited = await self._wait(body.group_id, member_id)
            answer = (
                waited if isinstance(waited, JoinAnswer) else JoinAnswer(waited.error, member_id)
            )
        return _join_body(answer, group.protocol_type)

    async def sync(self, session: Session, request: Request) -> dict[str, Any]:
        body = request.body
        refused = self._refusal(session, body.group_id)
        group = self._groups.get(body.group_id)
        if refused is not None or group is None:
            return _sync_body(SyncAnswer(refused or ErrorCode.unknown_member_id))
        answer, settled = group.sync(
            body.member_id,
            body.generation_id,
            {a.member_id: a.assignment for a in body.assignments},
        )
        if body.member_id in group.members:
            group.members[body.member_id].last_seen = time.monotonic()
        self._deliver(body.group_id, settled)
        if isinstance(answer, Pending):
            waited = await self._wait(body.group_id, body.member_id)
            answer = waited if isinstance(waited, SyncAnswer) else SyncAnswer(waited.error)
        return _sync_body(answer, group.protocol_type)

    async def heartbeat(self, session: Session, request: Request) -> dict[str, Any]:
        body = request.body
        refused = self._refusal(session, body.group_id)
        group = self._groups.get(body.group_id)
        if refused is not None or group is None:
            return {"error_code": refused or ErrorCode.unknown_member_id}
        return {"error_code": group.heartbeat(body.member_id, body.generation_id, time.monotonic())}

    async def leave(self, session: Session, request: Request) -> dict[str, Any]:
        body = request.body
        members = getattr(body, "members", None)
        member_ids = [m.member_id for m in members] if members else [body.member_id]
        refused = self._refusal(session, body.group_id)
        group = self._groups.get(body.group_id)
        results = []
        for member_id in member_ids:
            code = refused or ErrorCode.unknown_member_id
            if refused is None and group is not None:
                code, settled = group.leave(member_id, time.monotonic())
                self._deliver(body.group_id, settled)
            results.append({"member_id": member_id, "error_code": code})
        top = results[0]["error_code"] if not members else (refused or ErrorCode.none)
        return {"error_code": top, "members": results}

    # --- offsets --------------------------------------------------------------------------------
    async def offset_commit(self, session: Session, request: Request) -> dict[str, Any]:
        body = request.body
        generation = int(
            getattr(body, "generation_id_or_member_epoch", getattr(body, "generation_id", -1))
        )
        refused = self._refusal(session, body.group_id)
        group = self._groups.get(body.group_id)
        if refused is None and group is not None:
            check = group.check_commit(body.member_id, generation)
            refused = None if check is ErrorCode.none else check
        elif refused is None and generation >= 0:
            refused = ErrorCode.unknown_member_id  # no such generation: the group is empty
        topics = []
        for topic in body.topics:
            partitions = [
                {"partition_index": p.partition_index, "error_code": refused or ErrorCode.none}
                for p in topic.partitions
            ]
            if refused is None:
                # Kafka's offset.metadata.max.bytes: a partition whose string is longer is
                # refused alone, the others are committed
                fits = [
                    p
                    for p in topic.partitions
                    if len(p.committed_metadata or "") <= METADATA_MAX_CHARS
                ]
                offsets = {p.partition_index: int(p.committed_offset) for p in fits}
                notes = {p.partition_index: p.committed_metadata or "" for p in fits}
                code = (
                    await self._commit(session, body.group_id, topic.name, offsets, notes)
                    if fits
                    else ErrorCode.none
                )
                for p in partitions:
                    p["error_code"] = (
                        code
                        if p["partition_index"] in offsets
                        else ErrorCode.offset_metadata_too_large
                    )
            topics.append({"name": topic.name, "partitions": partitions})
        return {"topics": topics}

    async def _commit(
        self,
        session: Session,
        group_id: str,
        topic: str,
        offsets: dict[int, int],
        notes: dict[int, str],
    ) -> ErrorCode:
        try:
            await self._broker.commit_member_offsets(
                session.principal, group_id, topic, offsets, notes
            )
        except EddyError as exc:
            return error_code(exc)
        return ErrorCode.none

    async def offset_fetch(self, session: Session, request: Request) -> dict[str, Any]:
        body = request.body
        refused = self._refusal(session, body.group_id)
        if refused is ErrorCode.inconsistent_group_protocol:
            refused = None  # reading a WebSocket group's offsets is fine
        committed: dict[tuple[str, int], CommittedOffset] = {}
        if refused is None:
            committed = {
                (c.topic, c.partition): c for c in self._broker.committed_offsets(body.group_id)
            }
        if body.topics is None:
            wanted: dict[str, list[int]] = {}
            for topic, partition in sorted(committed):
                wanted.setdefault(topic, []).append(partition)
        else:
            wanted = {t.name: list(t.partition_indexes) for t in body.topics}
        topics = []
        for name, partitions in wanted.items():
            readable = refused is None and self._broker.allows(session.principal, Action.READ, name)
            answers = []
            for p in partitions:
                commit = committed.get((name, p)) if readable else None
                answers.append(
                    {
                        "partition_index": p,
                        "committed_offset": commit.offset if commit else NO_OFFSET,
                        "committed_leader_epoch": -1,
                        "metadata": commit.metadata if commit else "",
                        "error_code": ErrorCode.none
                        if readable or refused is not None
                        else ErrorCode.topic_authorization_failed,
                    }
                )
            topics.append({"name": name, "partitions": answers})
        return {"topics": topics, "error_code": refused or ErrorCode.none}

    # --- administration -------------------------------------------------------------------------
    async def list_groups(self, session: Session, request: Request) -> dict[str, Any]:
        states = set(getattr(request.body, "states_filter", ()) or ())
        listed: dict[str, tuple[str, str]] = {}
        for summary in self._broker.list_groups(session.principal):
            # groups of WebSocket members, or only committed offsets (REST or Kafka consumers)
            listed[summary.group] = ("consumer", "Stable" if summary.members else "Empty")
        for group_id, group in self._groups.items():
            if self._broker.allows(session.principal, Action.GROUP, group_id):
                listed[group_id] = (group.protocol_type, group.state.value)
        return {
            "error_code": ErrorCode.none,
            "groups": [
                {"group_id": g, "protocol_type": kind, "group_state": state}
                for g, (kind, state) in sorted(listed.items())
                if not states or state in states
            ],
        }

    async def describe_groups(self, session: Session, request: Request) -> dict[str, Any]:
        described = []
        for group_id in request.body.groups:
            refused = self._refusal(session, group_id)
            group = self._groups.get(group_id)
            out: dict[str, Any] = {
                "group_id": group_id,
                "error_code": ErrorCode.none,
                "group_state": "Dead",
                "protocol_type": "",
                "protocol_data": "",
                "members": [],
            }
            if refused is ErrorCode.inconsistent_group_protocol:
                out.update(group_state="Stable", protocol_type="eddy-websocket")
            elif refused is not None:
                out["error_code"] = refused
            elif group is not None:
                out.update(
                    group_state=group.state.value,
                    protocol_type=group.protocol_type,
                    protocol_data=group.protocol or "",
                    members=[
                        {
                            "member_id": m.member_id,
                            "client_id": m.client_id,
                            "client_host": m.client_host,
                            "member_metadata": dict(m.protocols).get(group.protocol or "", b""),
                            "member_assignment": m.assignment,
                        }
                        for m in group.members.values()
                    ],
                )
            elif self._broker.committed_offsets(group_id):
                out.update(group_state="Empty", protocol_type="consumer")
            described.append(out)
        return {"groups": described}

    async def delete_groups(self, session: Session, request: Request) -> dict[str, Any]:
        results = []
        for group_id in request.body.groups_names:
            code = ErrorCode.none
            if self.has_members(group_id):
                code = ErrorCode.non_empty_group
            else:
                try:
                    await self._broker.delete_group(session.principal, group_id)
                    self._groups.pop(group_id, None)
                except GroupNotFound:
                    code = ErrorCode.group_id_not_found
                except EddyError as exc:
                    code = error_code(exc, what="group")
            results.append({"group_id": group_id, "error_code": code})
        return {"results": results}


def _join_body(answer: JoinAnswer, protocol_type: str = "consumer") -> dict[str, Any]:
    return {
        "error_code": answer.error,
        "generation_id": answer.generation,
        "protocol_type": protocol_type,
        "protocol_name": answer.protocol or "",
        "leader": answer.leader,
        "member_id": answer.member_id,
        "members": [
            {"member_id": m, "metadata": metadata, "group_instance_id": None}
            for m, metadata in answer.members
        ],
    }


def _sync_body(answer: SyncAnswer, protocol_type: str = "consumer") -> dict[str, Any]:
    return {
        "error_code": answer.error,
        "protocol_type": protocol_type,
        "protocol_name": answer.protocol,
        "assignment": answer.assignment,
    }

"""Kafka's group membership protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) as a pure
state machine: no I/O, no clock, no tasks. Time is an input (`now`, in seconds), and every call
returns the answers it settles, so the transport only delivers them.

Kafka-protocol groups assign partitions on the client: the coordinator elects a leader, hands it
every member's subscription metadata, and passes the leader's assignment to each member. The
states are Kafka's: Empty -> PreparingRebalance (waiting for every member to (re)join, at most
the rebalance timeout) -> CompletingRebalance (waiting for the leader's SyncGroup) -> Stable.
A member that sends no heartbeat for its session timeout is removed and the group rebalances.

The first rebalance of an empty group waits `initial_delay` (Kafka's
group.initial.rebalance.delay.ms, 3 s by default) for more members, each new one extending the
wait by as much up to the rebalance timeout, so consumers started together share the first
generation. Without it the first to join takes every partition and the others cause a second
rebalance at once, which clients revoke in their rebalance callbacks; librdkafka's test 0118
(commit during a rebalance) counts on Kafka's delay: there, the second consumer otherwise waited
through a revocation of the first before it got any partition.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from kio.schema.errors import ErrorCode


class State(enum.StrEnum):
    EMPTY = "Empty"
    PREPARING = "PreparingRebalance"
    COMPLETING = "CompletingRebalance"
    STABLE = "Stable"


@dataclass
class Member:
    member_id: str
    client_id: str
    client_host: str
    session_timeout: float  # seconds
    rebalance_timeout: float
    protocols: list[tuple[str, bytes]]  # (assignor name, subscription metadata), preferred first
    last_seen: float
    assignment: bytes = b""
    joined: bool = False  # has (re)joined in the rebalance under way


@dataclass(frozen=True)
class JoinAnswer:
    error: ErrorCode
    member_id: str
    generation: int = -1
    protocol: str | None = None
    leader: str = ""
    members: tuple[tuple[str, bytes], ...] = ()  # for the leader: (member id, metadata)


@dataclass(frozen=True)
class SyncAnswer:
    error: ErrorCode
    protocol: str | None = None
    assignment: bytes = b""


Answer = JoinAnswer | SyncAnswer


@dataclass(frozen=True)
class Pending:
    """The answer will come later (in what a later call returns)."""


PENDING = Pending()


@dataclass
class Group:
    group_id: str
    protocol_type: str = "consumer"
    state: State = State.EMPTY
    generation: int = 0
    leader: str | None = None
    protocol: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    rebalance_deadline: float = 0.0
    issued_ids: set[str] = field(default_factory=set)  # MEMBER_ID_REQUIRED ids not yet joined
    awaiting_sync: set[str] = field(default_factory=set)
    initial_delay: float = 0.0  # seconds: Kafka's group.initial.rebalance.delay.ms
    initial_deadline: float | None = None  # while the first rebalance waits for more members

    # --- membership -----------------------------------------------------------------------
    def join(
        self,
        member_id: str,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_timeout: float,
        rebalance_timeout: float,
        client_id: str,
        client_host: str,
        now: float,
        require_known_id: bool,
        new_id: str,
    ) -> tuple[JoinAnswer | Pending, list[tuple[str, Answer]]]:
        """A JoinGroup. Returns this request's answer (or PENDING: it comes when the rebalance
        completes) and the answers to other members' waiting requests that this settles.
        `require_known_id`: JoinGroup v4+, where a member without an id is given one and asked
        to join again with it (MEMBER_ID_REQUIRED). `new_id`: the id to give."""
        if self.members and protocol_type != self.protocol_type:
            return JoinAnswer(ErrorCode.inconsistent_group_protocol, member_id), []
        if not protocols or (
            self.members and not self._common_protocols({m for m, _ in protocols})
        ):
            return JoinAnswer(ErrorCode.inconsistent_group_protocol, member_id), []
        if not member_id:
            if require_known_id:
                self.issued_ids.add(new_id)
                return JoinAnswer(ErrorCode.member_id_required, new_id), []
            member_id = new_id
        elif member_id not in self.members and member_id not in self.issued_ids:
            return JoinAnswer(ErrorCode.unknown_member_id, member_id), []
        self.issued_ids.discard(member_id)
        self.protocol_type = protocol_type
        was_empty = self.state is State.EMPTY
        is_new = member_id not in self.members
        member = self.members.get(member_id)
        if member is None:
            member = Member(
                member_id,
                client_id,
                client_host,
                session_timeout,
                rebalance_timeout,
                protocols,
                now,
            )
            self.members[member_id] = member
        else:
            member.protocols = protocols
            member.session_timeout = session_timeout
            member.rebalance_timeout = rebalance_timeout
            member.last_seen = now
        settled: list[tuple[str, Answer]] = []
        if self.state is not State.PREPARING:
            settled += self._prepare(now)
        if self.initial_delay > 0 and (was_empty or (is_new and self.initial_deadline)):
            self.initial_deadline = min(now + self.initial_delay, self.rebalance_deadline)
        member.joined = True
        answers = self._maybe_complete(now)
        mine = next((a for m, a in answers if m == member_id), None)
        settled += [(m, a) for m, a in answers if m != member_id]
        return (mine if isinstance(mine, JoinAnswer) else PENDING), settled

    def sync(
        self, member_id: str, generation: int, assignments: dict[str, bytes]
    ) -> tuple[SyncAnswer | Pending, list[tuple[str, Answer]]]:
        member = self.members.get(member_id)
        if member is None:
            return SyncAnswer(ErrorCode.unknown_member_id), []
        if generation != self.generation:
            return SyncAnswer(ErrorCode.illegal_generation), []
        if self.state is State.PREPARING:
            return SyncAnswer(ErrorCode.rebalance_in_progress), []
        if self.state is State.STABLE:
            return SyncAnswer(ErrorCode.none, self.protocol, member.assignment), []
        # CompletingRebalance: the leader's assignment settles everyone waiting.
        if member_id != self.leader:
            self.awaiting_sync.add(member_id)
            return PENDING, []
        for m in self.members.values():
            m.assignment = assignments.get(m.member_id, b"")
        self.state = State.STABLE
        waiting = sorted(self.awaiting_sync)
        self.awaiting_sync.clear()
        settled: list[tuple[str, Answer]] = [
            (m, SyncAnswer(ErrorCode.none, self.protocol, self.members[m].assignment))
            for m in waiting
            if m in self.members
        ]
        return SyncAnswer(ErrorCode.none, self.protocol, member.assignment), settled

    def heartbeat(self, member_id: str, generation: int, now: float) -> ErrorCode:
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        member.last_seen = now
        if generation != self.generation:
            return ErrorCode.illegal_generation
        if self.state is State.PREPARING:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave(self, member_id: str, now: float) -> tuple[ErrorCode, list[tuple[str, Answer]]]:
        if member_id not in self.members:
            return ErrorCode.unknown_member_id, []
        return ErrorCode.none, self._remove([member_id], now)

    def tick(self, now: float) -> list[tuple[str, Answer]]:
        """Expire members past their session timeout, and end a rebalance past its deadline
        (members that did not rejoin in time are removed)."""
        settled: list[tuple[str, Answer]] = []
        expired = [
            m.member_id
            for m in self.members.values()
            if now - m.last_seen > m.session_timeout
            and not (self.state is State.PREPARING and m.joined)
        ]
        if expired:
            settled += self._remove(expired, now)
        if self.state is State.PREPARING and now >= self.rebalance_deadline:
            late = [m.member_id for m in self.members.values() if not m.joined]
            for member_id in late:
                del self.members[member_id]
            settled += self._maybe_complete(now, force=True)
        elif self.initial_deadline is not None and now >= self.initial_deadline:
            settled += self._maybe_complete(now)
        return settled

    def check_commit(self, member_id: str, generation: int) -> ErrorCode:
        """May this OffsetCommit go through? Generation -1 with no member id is a consumer
        that assigns itself partitions: allowed while the group has no members."""
        if generation < 0 and not member_id:
            return ErrorCode.none if not self.members else ErrorCode.unknown_member_id
        if member_id not in self.members:
            return ErrorCode.unknown_member_id
        if generation != self.generation:
            return ErrorCode.illegal_generation
        if self.state is State.COMPLETING:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    # --- internals ----------------------------------------------------------------------------
    def _common_protocols(self, offered: set[str]) -> set[str]:
        common = set(offered)
        for m in self.members.values():
            common &= {name for name, _ in m.protocols}
        return common

    def _prepare(self, now: float) -> list[tuple[str, Answer]]:
        """Start a rebalance: everyone must rejoin; syncs still waiting are told so."""
        settled: list[tuple[str, Answer]] = [
            (m, SyncAnswer(ErrorCode.rebalance_in_progress)) for m in sorted(self.awaiting_sync)
        ]
        self.awaiting_sync.clear()
        self.state = State.PREPARING
        for m in self.members.values():
            m.joined = False
        timeout = max((m.rebalance_timeout for m in self.members.values()), default=0.0)
        self.rebalance_deadline = now + timeout
        return settled

    def _remove(self, member_ids: list[str], now: float) -> list[tuple[str, Answer]]:
        settled: list[tuple[str, Answer]] = []
        for member_id in member_ids:
            member = self.members.pop(member_id)
            if member_id in self.awaiting_sync:  # expired while waiting for the leader
                self.awaiting_sync.discard(member_id)
                settled.append((member_id, SyncAnswer(ErrorCode.unknown_member_id)))
            if self.state is State.PREPARING and member.joined:
                settled.append((member_id, JoinAnswer(ErrorCode.unknown_member_id, member_id)))
        if not self.members:
            settled += [
                (m, SyncAnswer(ErrorCode.rebalance_in_progress)) for m in self.awaiting_sync
            ]
            self.awaiting_sync.clear()
            self.state, self.leader, self.protocol = State.EMPTY, None, None
            self.initial_deadline = None
            self.generation += 1
            return settled
        if self.state is not State.PREPARING:
            settled += self._prepare(now)
        return settled + self._maybe_complete(now)

    def _maybe_complete(self, now: float, force: bool = False) -> list[tuple[str, Answer]]:
        """End the rebalance if every member has rejoined (or `force`): a new generation, a
        leader, a protocol; every joined member gets its JoinGroup answer."""
        if self.state is not State.PREPARING:
            return []
        if not self.members:
            self.state, self.leader, self.protocol = State.EMPTY, None, None
            self.initial_deadline = None
            return []
        if not force and not all(m.joined for m in self.members.values()):
            return []
        if not force and self.initial_deadline is not None and now < self.initial_deadline:
            return []  # the first rebalance still waits for more members
        self.initial_deadline = None
        self.generation += 1
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        leader = self.members[self.leader]
        common = self._common_protocols({name for name, _ in leader.protocols})
        self.protocol = next(name for name, _ in leader.protocols if name in common)
        self.state = State.COMPLETING
        members = tuple(
            (m.member_id, dict(m.protocols)[self.protocol]) for m in self.members.values()
        )
        answers: list[tuple[str, Answer]] = []
        for m in self.members.values():
            m.joined = False
            m.last_seen = now
            answers.append(
                (
                    m.member_id,
                    JoinAnswer(
                        ErrorCode.none,
                        m.member_id,
                        self.generation,
                        self.protocol,
                        self.leader,
                        members if m.member_id == self.leader else (),
                    ),
                )
            )
        return answers


_ids = itertools.count(1)


def new_member_id(client_id: str, token: str) -> str:
    """Kafka's form: the client id, a dash, something unique."""
    return f"{client_id or 'member'}-{next(_ids)}-{token}"

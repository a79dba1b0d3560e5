"""The Kafka group coordinator's state machine (routers/kafka/coordinator.py), driven directly:
time is an input, answers are return values."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from eddy.routers.kafka.coordinator import (
    PENDING,
    Answer,
    Group,
    JoinAnswer,
    Pending,
    State,
    SyncAnswer,
)

RANGE = [("range", b"meta")]


def join(
    group: Group, member_id: str, now: float = 0.0, new_id: str = "", session: float = 10.0
) -> tuple[JoinAnswer | Pending, list[tuple[str, Answer]]]:
    return group.join(
        member_id, "consumer", RANGE, session, 30.0, "client", "host", now, False, new_id
    )


def test_two_members_join_then_the_leader_assigns() -> None:
    group = Group("g")
    first, settled = join(group, "", new_id="a")
    # alone: the rebalance completes at once
    assert isinstance(first, JoinAnswer) and first.generation == 1 and first.leader == "a"
    assert first.members == (("a", b"meta"),) and settled == []
    assert group.sync("a", 1, {"a": b"all"}) == (SyncAnswer(ErrorCode.none, "range", b"all"), [])
    # a second member: the first must rejoin (its heartbeat says so)
    second, _ = join(group, "", new_id="b")
    assert second is PENDING
    assert group.heartbeat("a", 1, 1.0) is ErrorCode.rebalance_in_progress
    rejoined, settled = join(group, "a", now=1.0)
    assert isinstance(rejoined, JoinAnswer) and rejoined.generation == 2
    assert rejoined.members == (("a", b"meta"), ("b", b"meta"))  # a stays leader
    assert [(m, a.generation) for m, a in settled if isinstance(a, JoinAnswer)] == [("b", 2)]
    follower, _ = group.sync("b", 2, {})
    assert follower is PENDING
    leader, settled = group.sync("a", 2, {"a": b"p0", "b": b"p1"})
    assert leader == SyncAnswer(ErrorCode.none, "range", b"p0")
    assert settled == [("b", SyncAnswer(ErrorCode.none, "range", b"p1"))]
    assert group.state is State.STABLE
    assert group.sync("a", 1, {}) == (SyncAnswer(ErrorCode.illegal_generation), [])


def test_member_id_required_then_join_with_it() -> None:
    group = Group("g")
    answer, _ = group.join("", "consumer", RANGE, 10, 10, "c", "h", 0, True, "issued")
    assert answer == JoinAnswer(ErrorCode.member_id_required, "issued")
    answer, _ = group.join("issued", "consumer", RANGE, 10, 10, "c", "h", 0, True, "other")
    assert isinstance(answer, JoinAnswer) and answer.error is ErrorCode.none
    unknown, _ = group.join("forged", "consumer", RANGE, 10, 10, "c", "h", 0, True, "x")
    assert isinstance(unknown, JoinAnswer) and unknown.error is ErrorCode.unknown_member_id


def test_a_silent_member_expires_and_the_other_takes_over() -> None:
    group = Group("g")
    join(group, "", new_id="a", session=3)
    join(group, "", new_id="b", session=3)
    join(group, "a", now=0.1, session=3)
    group.sync("a", 2, {"a": b"1", "b": b"2"})
    group.sync("b", 2, {})
    assert group.heartbeat("a", 2, 2.0) is ErrorCode.none
    assert group.tick(2.5) == []
    group.heartbeat("a", 2, 4.0)
    assert group.tick(4.0) == []  # b was last seen at 0.1: 3.9 s > 3 s
    assert "b" not in group.members and group.state is State.PREPARING
    assert group.heartbeat("a", 2, 4.1) is ErrorCode.rebalance_in_progress
    answer, _ = join(group, "a", now=4.2, session=3)
    assert isinstance(answer, JoinAnswer) and answer.generation == 3
    assert answer.members == (("a", b"meta"),)


def test_commits_need_the_current_generation() -> None:
    group = Group("g")
    assert group.check_commit("", -1) is ErrorCode.none  # no members: self-assigned consumers
    join(group, "", new_id="a")
    assert group.check_commit("", -1) is ErrorCode.unknown_member_id
    assert group.check_commit("a", 1) is ErrorCode.rebalance_in_progress  # awaiting sync
    group.sync("a", 1, {"a": b""})
    assert group.check_commit("a", 1) is ErrorCode.none
    assert group.check_commit("a", 0) is ErrorCode.illegal_generation


def test_mismatched_protocols_are_refused() -> None:
    group = Group("g")
    join(group, "", new_id="a")
    answer, _ = group.join("", "consumer", [("other", b"")], 10, 10, "c", "h", 0, False, "b")
    assert isinstance(answer, JoinAnswer) and answer.error is ErrorCode.inconsistent_group_protocol


# --- interleavings -------------------------------------------------------------------------------
@dataclass
class Client:
    """What a well-behaved Kafka client is doing."""

    member_id: str = ""
    waiting: str | None = None  # "join" | "sync": a request without its answer yet
    generation: int = -1


operations = st.lists(
    st.tuples(
        st.sampled_from(["join", "sync", "heartbeat", "leave", "tick"]),
        st.integers(0, 2),
        st.floats(0.0, 5.0),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_answers_only_reach_waiting_requests_and_generations_agree(
    steps: list[tuple[str, int, float]],
) -> None:
    group = Group("g")
    clients = [Client() for _ in range(3)]
    now = 0.0
    last_generation = 0
    issued = 0

    def deliver(settled: list[tuple[str, Answer]]) -> None:
        for member_id, answer in settled:
            client = next(c for c in clients if c.member_id == member_id)
            kind = "join" if isinstance(answer, JoinAnswer) else "sync"
            assert client.waiting == kind, (member_id, answer, client)
            client.waiting = None
            if isinstance(answer, JoinAnswer) and answer.error is ErrorCode.none:
                client.generation = answer.generation
            elif isinstance(answer, JoinAnswer):
                client.member_id, client.generation = "", -1

    for op, index, dt in steps:
        now += dt
        client = clients[index]
        if op == "tick":
            deliver(group.tick(now))
        elif client.waiting is not None:
            continue  # a client waits for its answer before its next group request
        elif op == "join":
            issued += 1
            answer, settled = join(group, client.member_id, now, new_id=f"m{issued}", session=4)
            if not client.member_id:
                client.member_id = f"m{issued}"
            deliver(settled)
            if isinstance(answer, Pending):
                client.waiting = "join"
            elif answer.error is ErrorCode.none:
                client.generation = answer.generation
            else:
                client.member_id, client.generation = "", -1
        elif op == "sync" and client.member_id and client.generation >= 0:
            leader = group.leader == client.member_id
            assignments = {m: m.encode() for m in group.members} if leader else {}
            sync_answer, settled = group.sync(client.member_id, client.generation, assignments)
            deliver(settled)
            if isinstance(sync_answer, Pending):
                client.waiting = "sync"
            elif sync_answer.error is ErrorCode.none:
                assert sync_answer.assignment == client.member_id.encode()
        elif op == "heartbeat" and client.member_id:
            code = group.heartbeat(client.member_id, client.generation, now)
            if code is ErrorCode.unknown_member_id:
                client.member_id, client.generation = "", -1
        elif op == "leave" and client.member_id:
            _, settled = group.leave(client.member_id, now)
            deliver(settled)
            client.member_id, client.generation = "", -1
        # invariants after every step
        assert group.generation >= last_generation
        last_generation = group.generation
        assert (group.state is State.EMPTY) == (not group.members)
        if group.state in (State.COMPLETING, State.STABLE):
            assert group.leader in group.members and group.protocol == "range"
            members_generations = {
                c.generation for c in clients if c.member_id in group.members and not c.waiting
            }
            assert members_generations <= {group.generation, -1} | set(range(group.generation + 1))
        if group.state is State.STABLE:
            for member in group.members.values():
                assert member.assignment == member.member_id.encode()
    # the clock alone answers every request still waiting (no request waits forever)
    for later in (100.0, 200.0):
        deliver(group.tick(now + later))
    assert [c for c in clients if c.waiting] == []


def test_a_member_waiting_for_the_leader_that_expires_is_answered() -> None:
    group = Group("g")
    join(group, "", new_id="a", session=3)
    join(group, "", new_id="b", session=3)
    join(group, "a", now=0.1, session=3)
    assert group.sync("b", 2, {}) == (PENDING, [])  # the leader never syncs
    settled = group.tick(10.0)
    assert ("b", SyncAnswer(ErrorCode.unknown_member_id)) in settled
    assert group.state is State.EMPTY


def test_the_first_rebalance_waits_for_more_members() -> None:
    """Kafka's group.initial.rebalance.delay.ms: consumers started together share the first
    generation (librdkafka's 0118 counts on it), each new member extending the wait."""
    group = Group("g", initial_delay=3.0)
    first, settled = join(group, "", now=0.0, new_id="a")
    assert first is PENDING and settled == []
    assert group.tick(2.0) == []
    second, settled = join(group, "", now=1.0, new_id="b")  # extends the wait to 4.0
    assert second is PENDING and settled == []
    assert group.tick(3.5) == []
    answers = dict(group.tick(4.0))
    assert set(answers) == {"a", "b"}
    assert all(isinstance(a, JoinAnswer) and a.generation == 1 for a in answers.values())
    leader = answers["a"]
    assert isinstance(leader, JoinAnswer) and leader.members == (("a", b"meta"), ("b", b"meta"))
    # later rebalances of the group do not wait: it is not empty
    group.sync("a", 1, {"a": b"p0", "b": b"p1"})
    assert group.heartbeat("b", 1, 4.5) is ErrorCode.none
    third, _ = join(group, "", now=5.0, new_id="c")
    assert third is PENDING
    join(group, "a", now=5.0)
    done, settled = join(group, "b", now=5.0)
    assert isinstance(done, JoinAnswer) and done.generation == 2
    # empty again (everyone left): the next first rebalance waits again
    for member in ("a", "b", "c"):
        group.leave(member, 6.0)
    assert group.state is State.EMPTY
    again, _ = join(group, "", now=7.0, new_id="d")
    assert again is PENDING
    answered = dict(group.tick(10.0))
    assert isinstance(answered["d"], JoinAnswer) and answered["d"].generation > 2


def test_the_first_rebalance_never_waits_past_the_rebalance_timeout() -> None:
    group = Group("g", initial_delay=20.0)
    join(group, "", now=0.0, new_id="a")  # rebalance timeout 30 s
    join(group, "", now=15.0, new_id="b")  # would wait to 35: capped at 30
    assert group.tick(29.9) == []
    assert {m for m, _ in group.tick(30.0)} == {"a", "b"}

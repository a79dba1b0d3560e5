"""Records: Produce, Fetch (long-polling like Kafka: max_wait_ms / min_bytes) and ListOffsets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kio.schema.errors import ErrorCode

from eddy.broker import OffsetQuery, Transport, check_record_sequence, is_compacted
from eddy.models.errors import EddyError, InvalidRequest
from eddy.models.log import AppendedRecord
from eddy.routers.kafka.errors import error_code
from eddy.routers.kafka.idempotence import producer_sequence
from eddy.routers.kafka.messages import Request
from eddy.routers.kafka.records import CorruptBatch, ProducedBatch, build_batch, read_produced
from eddy.routers.kafka.session import Session

EARLIEST, LATEST, MAX_TIMESTAMP = -2, -1, -3
QUERIES: dict[int, OffsetQuery] = {
    EARLIEST: "earliest",
    LATEST: "latest",
    MAX_TIMESTAMP: "max_timestamp",
}
TRANSACTIONS_REFUSED = ErrorCode.transactional_id_authorization_failed  # no transactions


PartitionOutcome = tuple[str, int, "asyncio.Future[list[AppendedRecord]] | dict[str, Any]"]


async def _queue_partition(
    session: Session, topic: str, partition: int, records: bytes | None
) -> asyncio.Future[list[AppendedRecord]] | dict[str, Any]:
    """Decode and queue one partition's batch; its commit's future, or the error answer."""
    broker = session.broker
    batch: ProducedBatch | None = None
    try:
        if records is None:
            raise CorruptBatch("no records")
        batch = read_produced(records, partition)
        await broker.prepare_produce(session.principal, topic)
        committed = broker.submit_produce(
            session.principal,
            topic,
            batch.drafts,
            producer_sequence(batch, partition),
            check_record_sequence,
        )
        if batch.exact is not None and session.batches is not None:
            created_at = broker.topic(topic).created_at
            session.batches.remember(
                committed, topic, partition, batch.exact, len(batch.drafts), created_at
            )
        return committed
    except InvalidRequest as exc:
        index = exc.details.get("index")
        if batch is not None and isinstance(index, int) and batch.drafts[index].key is None:
            # a compacted topic's keyless records: Kafka refuses the batch with INVALID_RECORD
            # and names each such record (record_errors, KIP-467), so clients can tell them
            # from the batch's other records
            answer = _produce_error(partition, exc)
            answer["error_code"] = ErrorCode.invalid_record
            answer["record_errors"] = [
                {"batch_index": i, "batch_index_error_message": "a compacted topic needs keys"}
                for i, draft in enumerate(batch.drafts)
                if draft.key is None
            ]
            return answer
        return _produce_error(partition, exc)
    except EddyError as exc:
        return _produce_error(partition, exc)


def _produce_error(partition: int, exc: EddyError) -> dict[str, Any]:
    return {
        "index": partition,
        "base_offset": -1,
        "log_start_offset": -1,
        "error_code": error_code(exc),
        "error_message": exc.message,
    }


async def _partition_answer(
    session: Session, topic: str, partition: int, queued: Any
) -> dict[str, Any]:
    if isinstance(queued, dict):
        return queued
    try:
        appended = await queued
    except EddyError as exc:
        return _produce_error(partition, exc)
    state = session.broker.partition_state(topic, partition)
    return {
        "index": partition,
        "error_code": ErrorCode.none,
        "base_offset": appended[0].offset,
        "log_start_offset": state.log_start_offset,
    }


Answer = Callable[[], Awaitable[dict[str, Any] | None]]


async def submit_produce(session: Session, request: Request) -> Answer:
    """A Produce in two steps, so a connection can keep several in flight as Kafka clients do:
    this one (awaited in arrival order) decodes and queues every partition's batch, each an
    atomic append, so they commit in the order they were sent and share group commits; the
    function it returns waits for the commits and gives the answer (None for acks=0, which
    Kafka does not answer). The answer always comes after the commit, whatever `acks` said."""
    body = request.body
    if body.transactional_id is not None:
        refused: dict[str, Any] = {
            "responses": [
                {
                    "name": t.name,
                    "partition_responses": [
                        {"index": p.index, "error_code": TRANSACTIONS_REFUSED}
                        for p in t.partition_data
                    ],
                }
                for t in body.topic_data
            ]
        }

        async def refuse() -> dict[str, Any] | None:
            return refused

        return refuse
    queued: list[PartitionOutcome] = []
    for t in body.topic_data:
        for p in t.partition_data:
            outcome = await _queue_partition(session, t.name, p.index, p.records)
            queued.append((t.name, p.index, outcome))

    async def answer() -> dict[str, Any] | None:
        results = [await _partition_answer(session, name, p, q) for name, p, q in queued]
        if body.acks == 0:
            return None
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (name, _, _), result in zip(queued, results, strict=True):
            by_topic.setdefault(name, []).append(result)
        return {"responses": [{"name": n, "partition_responses": r} for n, r in by_topic.items()]}

    return answer


async def _read_partition(
    session: Session, topic: str, partition: int, offset: int, max_bytes: int
) -> tuple[dict[str, Any], int]:
    """One partition's fetch answer and the bytes of records in it."""
    broker = session.broker
    out: dict[str, Any] = {"partition_index": partition, "records": b""}
    try:
        readable = broker.partition_for_read(session.principal, topic, partition)
        state = readable.state
        out.update(
            high_watermark=state.high_watermark,
            last_stable_offset=state.high_watermark,
            log_start_offset=state.log_start_offset,
            error_code=ErrorCode.none,
        )
        readable.check_offset(offset)
        if offset == state.high_watermark or max_bytes <= 0:  # nothing new, or no room left
            return out, 0
        limit = 100_000
        if session.batches is not None and not is_compacted(readable.config):
            kept = session.batches.get(
                topic, partition, offset, max_bytes, readable.meta.created_at
            )
            if kept is not None:  # the batches as produced: nothing read, nothing encoded
                data, end = kept
                out["records"] = data
                broker.count_delivered(topic, Transport.KAFKA, end - offset, len(data))
                return out, len(data)
            following = session.batches.next_base(topic, partition, offset)
            if following is not None:  # stop where a kept batch starts (the next fetch's)
                limit = min(limit, following - offset)
        records = await broker.read_records(readable, offset, max(max_bytes, 1), limit)
        if not records:
            return out, 0
        data = build_batch(records)
        out["records"] = data
        broker.count_delivered(topic, Transport.KAFKA, len(records), len(data))
        return out, len(data)
    except EddyError as exc:
        out["error_code"] = error_code(exc)
        out.setdefault("high_watermark", -1)
        return out, 0


def _grew(session: Session, topic: str, partition: int, high_watermark: int) -> bool:
    """Has the partition's high watermark passed `high_watermark` (or is the topic gone)?"""
    try:
        return session.broker.high_watermark(topic, partition) > high_watermark
    except EddyError:
        return True


async def fetch(session: Session, request: Request) -> dict[str, Any]:
    body = request.body
    deadline = time.monotonic() + body.max_wait.total_seconds()
    min_bytes = max(int(body.min_bytes), 1)
    wanted = [
        (t.topic, p.partition, p.fetch_offset, p.partition_max_bytes)
        for t in body.topics
        for p in t.partitions
    ]
    broker = session.broker
    response_max = int(getattr(body, "max_bytes", 0)) or 2**31 - 1
    while True:
        answers = []
        budget = response_max  # the response's limit, over all partitions (KIP-74)
        for topic, p, offset, max_bytes in wanted:
            read = await _read_partition(session, topic, p, offset, min(max_bytes, budget))
            budget = max(budget - read[1], 0)
            answers.append(read)
        total = sum(size for _, size in answers)
        remaining = deadline - time.monotonic()
        errors = any(a["error_code"] != ErrorCode.none for a, _ in answers)
        if total >= min_bytes or remaining <= 0 or errors or broker.closing or not wanted:
            break
        if any(
            _grew(session, topic, p, answer["high_watermark"])
            for (topic, p, _, _), (answer, _) in zip(wanted, answers, strict=True)
        ):
            continue  # a commit landed while reading: read again rather than wait for the next
        # Wait for a commit to any of the partitions (or the deadline), then read again.
        waits = [
            asyncio.ensure_future(broker.wait_for_data(topic, p, remaining))
            for topic, p, _, _ in wanted
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            for w in waits:
                with contextlib.suppress(asyncio.CancelledError):
                    await w
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, _, _, _), (answer, _) in zip(wanted, answers, strict=True):
        by_topic.setdefault(topic, []).append(answer)
    return {
        "error_code": ErrorCode.none,
        "session_id": 0,
        "responses": [{"topic": t, "partitions": parts} for t, parts in by_topic.items()],
    }


async def _list_offset(
    session: Session, topic: str, partition: int, timestamp: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"partition_index": partition, "timestamp": -1, "offset": -1}
    try:
        at = QUERIES.get(timestamp, timestamp)
        offset, found_at = await session.broker.list_offset(session.principal, topic, partition, at)
        out.update(offset=offset, timestamp=found_at, error_code=ErrorCode.none, leader_epoch=0)
    except EddyError as exc:
        out["error_code"] = error_code(exc)
    return out


async def list_offsets(session: Session, request: Request) -> dict[str, Any]:
    return {
        "topics": [
            {
                "name": t.name,
                "partitions": [
                    await _list_offset(session, t.name, p.partition_index, p.timestamp)
                    for p in t.partitions
                ],
            }
            for t in request.body.topics
        ]
    }

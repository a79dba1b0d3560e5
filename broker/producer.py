"""Producing: choose partitions, validate sizes, and commit with group commit.

Each topic has one writer task. Requests queue up while the previous commit is being fsynced;
the writer then commits everything that queued in one transaction. So under load many requests
share one fsync, and with no load a request is committed at once (no added latency).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.drafts import RecordDraft
from broker.idempotence import OutOfOrder, Retry, check_sequence
from broker.metrics import Metrics
from broker.partitioner import RoundRobin, partition_for_key
from broker.topic_rules import is_compacted
from models.errors import (
    EddyError,
    InvalidRequest,
    OutOfOrderSequence,
    PartitionNotFound,
    RecordTooLarge,
    TopicNotFound,
    Unavailable,
)
from storage import (
    PRODUCER_HISTORY,
    AppendBatch,
    AppendedRecord,
    Engine,
    NewRecord,
    ProducerSequence,
    StoredRecord,
    TopicMeta,
)
from storage.sqlite_engine import record_size

log = logging.getLogger("eddy.producer")

MAX_RECORDS_PER_COMMIT = 20_000  # bounds one transaction's size and the time it holds the lock


@dataclass(slots=True)
class _Pending:
    batch: AppendBatch
    done: asyncio.Future[list[AppendedRecord]]


class _TopicWriter:
    def __init__(self, topic: str, engine: Engine, metrics: Metrics) -> None:
        self.topic = topic
        self._engine = engine
        self._metrics = metrics
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"writer:{topic}")

    def submit(self, batch: AppendBatch) -> asyncio.Future[list[AppendedRecord]]:
        if self._closing:
            raise Unavailable("the broker is shutting down")
        done: asyncio.Future[list[AppendedRecord]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(batch, done))
        self._wakeup.set()
        return done

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        count = 0
        while self._queue and (
            not batch or count + len(self._queue[0].batch.records) <= MAX_RECORDS_PER_COMMIT
        ):
            pending = self._queue.pop(0)
            batch.append(pending)
            count += len(pending.batch.records)
        return batch

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take_batch()
            try:
                results = await self._engine.append(self.topic, [p.batch for p in batch])
            except EddyError as exc:
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                continue
            except Exception as exc:  # never leave a producer hanging
                log.exception("commit to %s failed", self.topic)
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(Unavailable(f"commit failed: {exc}"))
                continue
            records = [r for pending in batch for r in pending.batch.records]
            self._metrics.commit_batch_records.observe(len(records))
            self._metrics.records_in.labels(self.topic).inc(len(records))
            self._metrics.bytes_in.labels(self.topic).inc(
                sum(len(r.value or b"") + len(r.key or "") for r in records)
            )
            for pending, appended in zip(batch, results, strict=True):
                if not pending.done.done():
                    pending.done.set_result(appended)

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        await self._task

    def abort(self, error: EddyError) -> None:
        self._closing = True
        for pending in self._queue:
            if not pending.done.done():
                pending.done.set_exception(error)
        self._queue.clear()
        self._wakeup.set()


class Producer:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self._engine = engine
        self._metrics = metrics
        self._writers: dict[str, _TopicWriter] = {}
        self._round_robin: dict[str, RoundRobin] = {}
        # (topic, producer id) -> sequence -> its pending commit
        self._in_flight: dict[tuple[str, str], dict[int, asyncio.Future[list[AppendedRecord]]]] = {}

    async def produce(
        self,
        meta: TopicMeta,
        drafts: Sequence[RecordDraft],
        config: Mapping[str, Any],
        producer: ProducerSequence | None = None,
    ) -> list[AppendedRecord]:
        """Append `drafts` atomically to the topic; returns when they are committed."""
        return await asyncio.shield(self.submit(meta, drafts, config, producer))

    def submit(
        self,
        meta: TopicMeta,
        drafts: Sequence[RecordDraft],
        config: Mapping[str, Any],
        producer: ProducerSequence | None = None,
    ) -> asyncio.Future[list[AppendedRecord]]:
        """Validate and queue `drafts` now (synchronously, so calls commit in call order);
        the future resolves when they are committed. A client that goes away does not cancel
        the commit."""
        now = int(time.time() * 1000)
        max_bytes = int(config["max.message.bytes"])
        needs_key = is_compacted(config)
        records = [
            self._place(meta, index, draft, now, max_bytes, needs_key)
            for index, draft in enumerate(drafts)
        ]
        writer = self._writers.get(meta.name)
        if writer is None:
            writer = self._writers[meta.name] = _TopicWriter(meta.name, self._engine, self._metrics)
        if producer is None:
            return writer.submit(AppendBatch(records))
        return self._submit_idempotent(meta.name, writer, AppendBatch(records, producer))

    def _submit_idempotent(
        self, topic: str, writer: _TopicWriter, batch: AppendBatch
    ) -> asyncio.Future[list[AppendedRecord]]:
        assert batch.producer is not None
        producer_id, sequence = batch.producer.producer_id, batch.producer.sequence
        in_flight = self._in_flight.setdefault((topic, producer_id), {})
        decision = check_sequence(
            self._engine.producer_history(topic, producer_id), in_flight.keys(), sequence
        )
        if isinstance(decision, OutOfOrder):
            raise OutOfOrderSequence(
                f"producer '{producer_id}' sent sequence {sequence}; expected "
                f"{decision.expected} (or a retry of one of the last {PRODUCER_HISTORY})",
                {"producer_id": producer_id, "sequence": sequence, "expected": decision.expected},
            )
        if isinstance(decision, Retry):
            if decision.entry is None:
                return in_flight[sequence]  # the original is still being committed
            retried: asyncio.Future[list[AppendedRecord]] = (
                asyncio.get_running_loop().create_future()
            )
            retried.set_result(list(decision.entry.appended))
            return retried
        done = writer.submit(batch)
        in_flight[sequence] = done

        def settled(_: asyncio.Future[list[AppendedRecord]]) -> None:
            in_flight.pop(sequence, None)  # committed (now in history) or failed (not used up)
            if not in_flight:
                self._in_flight.pop((topic, producer_id), None)

        done.add_done_callback(settled)
        return done

    def _place(
        self,
        meta: TopicMeta,
        index: int,
        draft: RecordDraft,
        now: int,
        max_bytes: int,
        needs_key: bool,
    ) -> NewRecord:
        size = record_size(draft.key, draft.value, None) + sum(
            len(k) + len(v) for k, v in draft.headers.items()
        )
        if size > max_bytes:
            raise RecordTooLarge(
                f"record {index} is {size} bytes; this topic's max.message.bytes is {max_bytes}",
                {"index": index, "size": size, "max_message_bytes": max_bytes},
            )
        if needs_key and draft.key is None:
            raise InvalidRequest(
                f"record {index} has no key; a compacted topic keeps the newest record per key, "
                "so every record needs one",
                {"index": index},
            )
        if draft.partition is not None:
            partition = draft.partition
            if partition >= meta.partitions:
                raise PartitionNotFound(meta.name, partition, meta.partitions)
        elif draft.key is not None:
            partition = partition_for_key(draft.key, meta.partitions)
        else:
            rr = self._round_robin.setdefault(meta.name, RoundRobin())
            partition = rr.next_partition(meta.partitions)
        return NewRecord(
            partition,
            now if draft.timestamp is None else draft.timestamp,
            draft.key,
            draft.value,
            draft.value_format,
            draft.headers,
        )

    # --- LogListener ---------------------------------------------------------------------------
    def on_commit(self, topic: str, records: Sequence[StoredRecord]) -> None:
        pass

    def on_partitions_added(self, topic: str, partitions: int) -> None:
        pass

    def on_topic_deleted(self, topic: str) -> None:
        """Fail what is queued for the deleted topic."""
        writer = self._writers.pop(topic, None)
        if writer is not None:
            writer.abort(TopicNotFound(topic))
        self._round_robin.pop(topic, None)

    async def close(self) -> None:
        writers, self._writers = list(self._writers.values()), {}
        await asyncio.gather(*(w.close() for w in writers), return_exceptions=True)

"""Producing: choose partitions, validate sizes, check idempotent sequences, hand to storage.

The engine queues each batch for the topic's one writer and commits everything queued meanwhile
in one transaction (group commit), so under load many requests share one fsync, and with no load
a request is committed at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from eddy.broker.drafts import RecordDraft
from eddy.broker.idempotence import Duplicate, OutOfOrder, Retry, SequenceRule, check_sequence
from eddy.broker.metrics import Metrics
from eddy.broker.partitioner import RoundRobin, partition_for_key
from eddy.broker.topic_rules import is_compacted
from eddy.models.errors import (
    DuplicateSequence,
    EddyError,
    InvalidRequest,
    OutOfOrderSequence,
    PartitionNotFound,
    RecordTooLarge,
)
from eddy.models.log import AppendedRecord, ProducerSequence, StoredRecord, TopicMeta
from eddy.storage import PRODUCER_HISTORY, AppendBatch, Engine, NewRecord, record_size

log = logging.getLogger("eddy.producer")

# Builds a NewRecord from a tuple of its fields without the named tuple's Python-level
# __new__ (a lambda): less than half the cost, per record of every batch.
_new = tuple.__new__


class Producer:
    def __init__(self, engine: Engine, metrics: Metrics, queue_timeout: float = 5.0) -> None:
        self._engine = engine
        self._metrics = metrics
        self._queue_timeout = queue_timeout  # how long a batch waits for room in a full queue
        self._round_robin: dict[str, RoundRobin] = {}
        # (topic, producer id) -> sequence -> its pending commit, oldest first
        self._in_flight: dict[tuple[str, str], dict[int, asyncio.Future[list[AppendedRecord]]]] = {}

    async def produce(
        self,
        meta: TopicMeta,
        drafts: Sequence[RecordDraft],
        config: Mapping[str, Any],
        producer: ProducerSequence | None = None,
        rule: SequenceRule = check_sequence,
    ) -> list[AppendedRecord]:
        """Append `drafts` atomically to the topic; returns when they are committed.

        Awaited without a shield of its own: a caller that is cancelled cancels only its view
        of the outcome (the engine's future, or the idempotent path's shield); the batch is
        queued already and commits anyway, and the engine resolves only futures not done."""
        return await self.submit(meta, drafts, config, producer, rule=rule)

    def submit(
        self,
        meta: TopicMeta,
        drafts: Sequence[RecordDraft],
        config: Mapping[str, Any],
        producer: ProducerSequence | None = None,
        retry_window: int = PRODUCER_HISTORY,
        rule: SequenceRule = check_sequence,
    ) -> asyncio.Future[list[AppendedRecord]]:
        """Validate and queue `drafts` now (synchronously, so calls commit in call order);
        the future resolves when they are committed. A client that goes away does not cancel
        the commit. `retry_window`: how many recent sequences count as retries; `rule`: how
        sequences follow each other (Eddy's numbered requests, or Kafka's numbered records)."""
        records, sizes = self._place(meta, drafts, config, int(time.time() * 1000))
        batch = AppendBatch(records, producer, sizes)
        if producer is None:
            return self._engine.append(meta.name, batch, self._queue_timeout)
        return self._submit_idempotent(meta.name, batch, retry_window, rule)

    def _place(
        self, meta: TopicMeta, drafts: Sequence[RecordDraft], config: Mapping[str, Any], now: int
    ) -> tuple[list[NewRecord], list[int]]:
        """The drafts as records with their partitions and sizes; raises for the first draft
        that is refused (its index in the details)."""
        max_bytes = int(config["max.message.bytes"])
        needs_key = is_compacted(config)
        partitions = meta.partitions
        round_robin: RoundRobin | None = None
        sizes: list[int] = []
        records: list[NewRecord] = []
        # One pass per record, with the hot names in locals: a 1,000-record batch runs this
        # loop a thousand times per request.
        add_size, add_record, size_of, new = sizes.append, records.append, record_size, _new
        for index, (key, value, value_format, headers, partition, timestamp) in enumerate(drafts):
            size = size_of(key, value, headers)
            if size > max_bytes:
                raise RecordTooLarge(
                    f"record {index} is {size} bytes; this topic's max.message.bytes is "
                    f"{max_bytes}",
                    {"index": index, "size": size, "max_message_bytes": max_bytes},
                )
            if key is None:
                if needs_key:
                    raise InvalidRequest(
                        f"record {index} has no key; a compacted topic keeps the newest record "
                        "per key, so every record needs one",
                        {"index": index},
                    )
                if partition is None:
                    if round_robin is None:
                        round_robin = self._round_robin.setdefault(meta.name, RoundRobin())
                    partition = round_robin.next_partition(partitions)
            elif partition is None:
                partition = 0 if partitions == 1 else partition_for_key(key, partitions)
            if partition >= partitions:
                raise PartitionNotFound(meta.name, partition, partitions)
            add_size(size)
            add_record(
                new(
                    NewRecord,
                    (
                        partition,
                        now if timestamp is None else timestamp,
                        key,
                        value,
                        value_format,
                        headers,
                    ),
                )
            )
        return records, sizes

    def submit_each(
        self, meta: TopicMeta, drafts: Sequence[RecordDraft], config: Mapping[str, Any]
    ) -> tuple[asyncio.Future[list[AppendedRecord]] | None, list[int | EddyError]]:
        """Queue each draft as a request of its own (no producer sequence) in one call: each is
        validated on its own (its error is its outcome; the others go on), and the valid ones
        are queued together, in order, as one batch (one job and one future for records that
        arrived together; they would share the group commit anyway). Returns that future (None
        if none was valid) and, per draft, its index in the future's result or its error."""
        now = int(time.time() * 1000)
        records: list[NewRecord] = []
        sizes: list[int] = []
        outcomes: list[int | EddyError] = []
        for draft in drafts:
            try:  # one at a time: each draft is its own request (errors read as for index 0)
                placed, size = self._place(meta, (draft,), config, now)
            except EddyError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(len(records))
            records += placed
            sizes += size
        if not records:
            return None, outcomes
        try:
            done = self._engine.append(
                meta.name, AppendBatch(records, None, sizes), self._queue_timeout
            )
        except EddyError as exc:
            return None, [exc if isinstance(o, int) else o for o in outcomes]
        return done, outcomes

    def _submit_idempotent(
        self, topic: str, batch: AppendBatch, retry_window: int, rule: SequenceRule
    ) -> asyncio.Future[list[AppendedRecord]]:
        assert batch.producer is not None
        producer_id, sequence = batch.producer.producer_id, batch.producer.sequence
        in_flight = self._in_flight.setdefault((topic, producer_id), {})
        decision = rule(
            self._engine.producer_history(topic, producer_id), in_flight, sequence, retry_window
        )
        if isinstance(decision, Duplicate):
            if not in_flight:
                self._in_flight.pop((topic, producer_id), None)
            raise DuplicateSequence(
                f"producer '{producer_id}' resent sequence {sequence}, committed long ago",
                {"producer_id": producer_id, "sequence": sequence},
            )
        if isinstance(decision, OutOfOrder):
            if not in_flight:
                self._in_flight.pop((topic, producer_id), None)
            raise OutOfOrderSequence(
                f"producer '{producer_id}' sent sequence {sequence}; expected "
                f"{decision.expected} (or a retry of one of the last {retry_window})",
                {"producer_id": producer_id, "sequence": sequence, "expected": decision.expected},
            )
        if isinstance(decision, Retry):
            if decision.entry is None:  # the original is still being committed: its outcome
                return asyncio.shield(in_flight[sequence])
            if not in_flight:
                self._in_flight.pop((topic, producer_id), None)
            retried: asyncio.Future[list[AppendedRecord]] = (
                asyncio.get_running_loop().create_future()
            )
            retried.set_result(list(decision.entry.appended))
            return retried
        if decision.after is not None:
            batch = replace(batch, producer=replace(batch.producer, after=decision.after))
        try:
            done = self._engine.append(topic, batch, self._queue_timeout)
        except BaseException:
            if not in_flight:
                self._in_flight.pop((topic, producer_id), None)
            raise
        in_flight[sequence] = done

        def settled(_: asyncio.Future[list[AppendedRecord]]) -> None:
            in_flight.pop(sequence, None)  # committed (now in history) or failed (not used up)
            if not in_flight and self._in_flight.get((topic, producer_id)) is in_flight:
                del self._in_flight[(topic, producer_id)]

        done.add_done_callback(settled)
        # Callers get a view: one that stops waiting (a closed WebSocket) must not cancel the
        # future a retry of the same sequence will wait on.
        return asyncio.shield(done)

    # --- LogListener ---------------------------------------------------------------------------
    def on_commit(self, topic: str, records: Sequence[StoredRecord]) -> None:
        """One commit (a group commit of any number of requests)."""
        self._metrics.commit_batch_records.observe(len(records))
        self._metrics.count_appended(topic, len(records), sum([r.size for r in records]))

    def on_partitions_added(self, topic: str, partitions: int) -> None:
        pass

    def on_topic_deleted(self, topic: str) -> None:
        self._round_robin.pop(topic, None)

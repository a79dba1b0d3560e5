"""Produce on the Kafka engine: one aiokafka producer with acks=all (and Kafka's idempotent
producer when enabled). A batch's records for one partition go as one Kafka record batch, which
Kafka appends atomically; a batch spanning partitions is one record batch per partition, each
atomic on its own (no Kafka transaction). The future resolves once the cluster acknowledged
every part, and on a followed topic once its follower announced the records too, as on the
embedded engine. Each produce has a deadline (--kafka-produce-timeout); the cluster's errors
become Eddy's (`_produce_error`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    UnknownTopicOrPartitionError,
)

from eddy.models.errors import (
    EddyError,
    InvalidRequest,
    OutcomeUnknown,
    PartitionNotFound,
    RecordTooLarge,
    TopicNotFound,
    Unavailable,
)
from eddy.models.headers import kafka_headers
from eddy.models.log import AppendedRecord, StoredRecord
from eddy.storage.engine import AppendBatch, ProducerWindow, record_size
from eddy.storage.kafka.base import kafka_unavailable
from eddy.storage.kafka.followers import KafkaFollowers
from eddy.storage.kafka_client import KafkaSettings, encode_key

log = logging.getLogger("eddy.storage.kafka")

RETRY_AFTER = 1.0  # seconds (Retry-After) after a produce the cluster did not take in time
BATCH_BYTES = 64 * 1_048_576  # record batch buffer: a request's records for a partition fit one


@dataclass(eq=False)
class PendingProduce:
    """One `append` on its way to the cluster, with its deadline (--kafka-produce-timeout)."""

    batch: AppendBatch
    future: asyncio.Future[list[AppendedRecord]]
    # aiokafka's MessageBatch per partition part handed to the producer (None: not found)
    handed: list[tuple[TopicPartition, Any]] = field(default_factory=list)
    abandoned: bool = False  # answered by its deadline: what is not sent yet is not sent
    deadline: asyncio.TimerHandle | None = None

    def settled(self, _: object) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None


class KafkaProduce(KafkaFollowers):
    """`append`: per topic a queue of produces and a task handing them to the producer in call
    order; their acks are awaited apart, so a send never waits for the acks before it."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        # per topic: batches waiting to be handed to the producer, and the task handing them
        # (one per topic, so a topic whose metadata is slow holds up no other topic)
        self._sends: dict[str, tuple[asyncio.Queue[PendingProduce], asyncio.Task[None]]] = {}
        self._acks: set[asyncio.Task[None]] = set()

    def append(
        self, topic: str, batch: AppendBatch, wait: float = 5.0
    ) -> asyncio.Future[list[AppendedRecord]]:
        partitions = len(self._topic(topic).partitions)
        for record in batch.records:
            if not 0 <= record.partition < partitions:
                raise PartitionNotFound(topic, record.partition, partitions)
        if batch.producer is not None:
            raise _idempotence_unsupported()
        if not self._open or self._closed:
            raise Unavailable("storage is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AppendedRecord]] = loop.create_future()
        produce = PendingProduce(batch, future)
        produce.deadline = loop.call_later(
            self.settings.produce_timeout, self._expire, topic, produce
        )
        future.add_done_callback(produce.settled)
        entry = self._sends.get(topic)
        if entry is None:
            queue: asyncio.Queue[PendingProduce] = asyncio.Queue()
            task = asyncio.create_task(self._send_loop(topic, queue), name=f"send-{topic}")
            entry = self._sends[topic] = (queue, task)
        entry[0].put_nowait(produce)
        return future

    def _expire(self, topic: str, produce: PendingProduce) -> None:
        """The produce's deadline passed without the cluster's acknowledgement. Parts the
        producer has not sent yet are taken back, so the answer can say for sure: nothing was
        sent (503 unavailable), or something was and its fate is unknown (outcome_unknown)."""
        produce.deadline = None
        if produce.future.done():
            return
        produce.abandoned = True
        timeout = self.settings.produce_timeout
        # (retry_count counts how often aiokafka's sender took the batch to send it)
        if any(part is None or part.retry_count > 0 for _, part in produce.handed):
            produce.future.set_exception(
                OutcomeUnknown(
                    f"the Kafka cluster has not acknowledged the records sent to '{topic}' "
                    f"within {timeout:g} s: they may be stored (now or once it is back) or "
                    "not; a retry may store them twice",
                    {"topic": topic, "timeout_seconds": timeout},
                    retry_after=RETRY_AFTER,
                )
            )
            return
        for tp, part in produce.handed:
            self._take_back(tp, part)
        produce.future.set_exception(
            Unavailable(
                f"the Kafka cluster did not take the records for '{topic}' within "
                f"{timeout:g} s (nothing was sent); retry later",
                {"topic": topic, "timeout_seconds": timeout},
                retry_after=RETRY_AFTER,
            )
        )

    def _take_back(self, tp: TopicPartition, part: Any) -> None:
        """Remove a batch the producer has not sent yet from its accumulator (it is never
        sent; it had no sequence number yet, which the producer gives a batch when it sends
        it), and wake what waits for it to drain."""
        producer = self._producer
        if producer is None:
            return
        batches = producer._message_accumulator._batches
        queued = batches.get(tp)
        if queued is not None and part in queued:
            queued.remove(part)
            if not queued:
                del batches[tp]
        if not part._drain_waiter.done():
            part._drain_waiter.set_result(None)  # the next batch for tp may go in now
        part.failure(KafkaTimeoutError("taken back at the produce's deadline"))

    async def _send_loop(self, topic: str, queue: asyncio.Queue[PendingProduce]) -> None:
        """Hands a topic's batches to the producer one at a time, in call order (the producer
        keeps that order per partition); their acks are awaited apart, so sends do not wait
        for acks."""
        while True:
            produce = await queue.get()
            batch, future = produce.batch, produce.future
            if future.done():  # answered by its deadline while it waited here: not sent
                queue.task_done()
                continue
            try:
                sent = await self._send(topic, produce)
            except asyncio.CancelledError:  # the topic is gone, or the engine closes
                gone = topic not in self._topics
                for waiting in [future, *drain_queued(queue)]:
                    if not waiting.done():
                        waiting.set_exception(
                            TopicNotFound(topic) if gone else Unavailable("storage is closing")
                        )
                raise
            except EddyError as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            except KafkaError as exc:
                if not future.done():
                    future.set_exception(_produce_error(topic, exc))
                continue
            except Exception as exc:  # (aiokafka asserts): fail this send, keep the loop going
                log.exception("sending to topic '%s' failed", topic)
                if not future.done():
                    future.set_exception(Unavailable(f"cannot produce to '{topic}': {exc!r}"))
                continue
            finally:
                queue.task_done()
            task = asyncio.create_task(self._await_acks(topic, batch, sent, future))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _send(
        self, topic: str, produce: PendingProduce
    ) -> list[tuple[int, list[int], asyncio.Future[Any]]]:
        """One record batch per partition; returns (partition, input indexes, ack future).
        Stops handing parts over once the produce's deadline answered it."""
        producer = self._producer
        if producer is None:
            raise Unavailable("storage is not open")
        batch = produce.batch
        by_partition: dict[int, list[int]] = defaultdict(list)
        for index, record in enumerate(batch.records):
            by_partition[record.partition].append(index)
        await self._know_partitions(producer, topic, max(by_partition))
        sent = []
        for partition, indexes in by_partition.items():
            builder = producer.create_batch()
            for index in indexes:
                record = batch.records[index]
                added = builder.append(
                    timestamp=record.timestamp,
                    key=encode_key(record),
                    value=record.value,
                    headers=kafka_headers(record.headers),
                )
                if added is None:
                    raise RecordTooLarge(
                        f"the request's records for partition {partition} do not fit one "
                        f"Kafka record batch ({BATCH_BYTES} bytes)",
                        {"partition": partition, "max_batch_bytes": BATCH_BYTES},
                    )
            if produce.abandoned:
                break
            kafka_name = self._kafka_name(topic)
            ack = await producer.send_batch(builder, kafka_name, partition=partition)
            # (no await since send_batch put it in the accumulator: the sender has not run)
            tp = TopicPartition(kafka_name, partition)
            part = _handed_batch(producer, tp, builder)
            if produce.abandoned and part is not None:
                self._take_back(tp, part)  # its deadline passed while it waited for room
                break
            produce.handed.append((tp, part))
            sent.append((partition, indexes, ack))
        return sent

    async def _know_partitions(self, producer: AIOKafkaProducer, topic: str, highest: int) -> None:
        """The producer's metadata shows `highest` as a partition of `topic`: right after
        partitions were added (by this server or another) it may not yet, and aiokafka's
        send_batch then fails an assertion (not a KafkaError), which used to end this topic's
        send loop and leave the request waiting forever. Refresh the metadata until it does."""
        kafka_name = self._kafka_name(topic)
        deadline = asyncio.get_running_loop().time() + 10
        while highest not in (producer.client.cluster.partitions_for_topic(kafka_name) or ()):
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable(
                    f"the Kafka cluster does not show partition {highest} of '{topic}'"
                )
            with contextlib.suppress(KafkaError):
                await asyncio.wait_for(producer.client.force_metadata_update(), 5)

    async def _await_acks(
        self,
        topic: str,
        batch: AppendBatch,
        sent: list[tuple[int, list[int], asyncio.Future[Any]]],
        future: asyncio.Future[list[AppendedRecord]],
    ) -> None:
        results: list[AppendedRecord | None] = [None] * len(batch.records)
        try:
            for partition, indexes, ack in sent:
                metadata = await ack
                for position, index in enumerate(indexes):
                    results[index] = AppendedRecord(
                        partition, metadata.offset + position, batch.records[index].timestamp
                    )
                self._saw(topic, partition, metadata.offset + len(indexes))
        except KafkaError as exc:
            if not future.done():
                future.set_exception(_produce_error(topic, exc))
            return
        # (acknowledged after its deadline answered outcome_unknown: the records are stored,
        # and announced below like any other; only the answer is gone)
        appended = [r for r in results if r is not None]
        if topic in self._followers:
            await self._announced(topic, appended)
        else:
            # Nobody here follows the topic: no tail to keep in order, so this server's own
            # records are announced at once (metrics, listeners); a follower started later
            # begins above them.
            self._announce_commit(topic, _stored(batch, appended))
        if not future.done():
            future.set_result(appended)

    def producer_history(self, topic: str, producer_id: str) -> ProducerWindow:
        raise _idempotence_unsupported()


def drain_queued(
    queue: asyncio.Queue[PendingProduce],
) -> list[asyncio.Future[list[AppendedRecord]]]:
    futures = []
    while not queue.empty():
        futures.append(queue.get_nowait().future)
    return futures


def _handed_batch(producer: AIOKafkaProducer, tp: TopicPartition, builder: Any) -> Any:
    """aiokafka's MessageBatch that `send_batch` just queued for `builder` (None if its
    accumulator no longer has it, or is built differently: then the part counts as sent)."""
    queued = producer._message_accumulator._batches.get(tp, ())
    for part in reversed(queued):
        if getattr(part, "_builder", None) is builder:
            return part
    return None


def _stored(batch: AppendBatch, appended: Sequence[AppendedRecord]) -> list[StoredRecord]:
    sizes = batch.sizes
    return [
        StoredRecord(
            where.partition,
            where.offset,
            record.timestamp,
            record.key,
            record.value,
            record.value_format,
            record.headers,
            sizes[index] if sizes else record_size(record.key, record.value, record.headers),
        )
        for index, (record, where) in enumerate(zip(batch.records, appended, strict=True))
    ]


def _idempotence_unsupported() -> EddyError:
    return InvalidRequest(
        "the idempotent producer (producer_id + sequence) is not available on the Kafka "
        "engine: its sequence state would have to be shared by every Eddy server; retry "
        "without producer_id (Kafka's own idempotent producer still guards each send)",
        {"reason": "idempotent_producer_unsupported", "engine": "kafka"},
    )


def _produce_error(topic: str, exc: KafkaError) -> EddyError:
    if isinstance(exc, MessageSizeTooLargeError):
        return RecordTooLarge(
            f"the Kafka cluster refused the records as too large for topic '{topic}' "
            "(its max.message.bytes limits a whole record batch)",
            {"topic": topic},
        )
    if isinstance(exc, UnknownTopicOrPartitionError):
        return TopicNotFound(topic)
    return kafka_unavailable(f"cannot produce to '{topic}'", exc)

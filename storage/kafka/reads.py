"""Reads and offset lookups on the Kafka engine: a small pool of group-less consumers (assign,
seek, fetch) and ListOffsets."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from eddy.models.errors import Unavailable
from eddy.models.log import StoredRecord
from eddy.storage.kafka.base import kafka_unavailable
from eddy.storage.kafka.followers import KafkaFollowers
from eddy.storage.kafka_client import KafkaSettings, stored_record

READERS = 4  # consumers for reads (replays and REST fetches), each doing one read at a time


class KafkaReads(KafkaFollowers):
    """`read` and `offset_for_timestamp`."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self._readers: asyncio.Queue[AIOKafkaConsumer] | None = None  # the idle ones
        self._all_readers: list[AIOKafkaConsumer] = []

    async def read(
        self, topic: str, partition: int, offset: int, limit: int, max_bytes: int
    ) -> list[StoredRecord]:
        state = self._partition(topic, partition)
        if offset >= state.high_watermark:
            await self._caught_up(topic, partition, offset)
            return []
        readers = self._readers
        if readers is None or self._closed:
            raise Unavailable("storage is not open")
        reader = await readers.get()
        try:
            return await self._read_with(reader, topic, partition, offset, limit, max_bytes)
        finally:
            readers.put_nowait(reader)

    async def _caught_up(self, topic: str, partition: int, offset: int) -> None:
        """Nothing to read at `offset` yet. If this topic's follower has not reached `offset`
        (an ack moved the high watermark ahead of it), wait a little for it: a replaying
        subscriber goes live once the follower's tail reaches its position, and must not spin
        on empty reads meanwhile."""
        follower = self._followers.get(topic)
        if follower is None or follower.task is None:
            await asyncio.sleep(0)
            return
        if follower.positions.get(partition, 0) >= offset:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        follower.waiters[partition].append((offset - 1, waiter))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, 1.0)

    async def _read_with(
        self,
        reader: AIOKafkaConsumer,
        topic: str,
        partition: int,
        offset: int,
        limit: int,
        max_bytes: int,
    ) -> list[StoredRecord]:
        tp = TopicPartition(self._kafka_name(topic), partition)
        if reader.assignment() != {tp}:
            reader.assign([tp])
        reader.seek(tp, offset)
        deadline = time.monotonic() + 5
        while True:
            try:
                batches = await reader.getmany(tp, timeout_ms=200, max_records=limit)
            except OffsetOutOfRangeError:
                # removed by Kafka's retention since: read from the log's start instead
                start = (await self._live_lookup().beginning_offsets([tp]))[tp]
                self._partition(topic, partition).log_start = start
                if start <= offset:
                    return []
                offset = start
                reader.seek(tp, offset)
                continue
            except KafkaError as exc:
                raise kafka_unavailable(f"cannot read {topic}/{partition}", exc) from exc
            found = batches.get(tp, [])
            if found or time.monotonic() > deadline:
                break
        highwater = reader.highwater(tp)
        if highwater is not None:
            self._saw(topic, partition, highwater)
        records: list[StoredRecord] = []
        size = 0
        for message in found:
            if message.offset < offset:
                continue
            record = stored_record(message)
            size += record.size
            if records and size > max_bytes:
                break
            records.append(record)
        if records:
            self._saw(topic, partition, records[-1].offset + 1)
        return records

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp: int) -> int | None:
        self._partition(topic, partition)
        tp = TopicPartition(self._kafka_name(topic), partition)
        try:
            found = (await self._live_lookup().offsets_for_times({tp: timestamp}))[tp]
        except KafkaError as exc:
            raise kafka_unavailable(f"cannot look up offsets of {topic}", exc) from exc
        if found is None:
            return None
        # Kafka's answer is exact; Tansu 0.6 answers with the first offset of the record batch
        # that holds it. Stepping to the first record at or after the time inside that batch is
        # right on both (on Kafka it is the first record read).
        # (Tansu 0.6 also answers 0 instead of "none" for a time after every record.)
        offset = int(found.offset)
        while offset < self._partition(topic, partition).high_watermark:
            records = await self.read(topic, partition, offset, 500, 1_048_576)
            if not records:
                break
            for record in records:
                if record.timestamp >= timestamp:
                    return record.offset
            offset = records[-1].offset + 1
        return None

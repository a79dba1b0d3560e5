"""`KafkaEngine`: the same `Engine` over an existing Kafka cluster (`--engine kafka`).

Topics are Kafka topics, records Kafka records, committed group offsets live in Kafka. The engine
keeps what the interface needs synchronously (topics, partition counts, log start offsets and high
watermarks, group offsets) in memory, refreshed from the cluster every `refresh_interval` and moved
forward at once by what this server sees itself (produce acks, fetched records).

Each job is one module and a class built on the parts it uses (the package's docstring lists them);
`KafkaEngine` puts them together and opens and closes the clients they share.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from eddy.models.errors import Unavailable
from eddy.storage.kafka.base import kafka_unavailable
from eddy.storage.kafka.produce import BATCH_BYTES, drain_queued
from eddy.storage.kafka.reads import READERS, KafkaReads
from eddy.storage.kafka.topics import KafkaTopics


class KafkaEngine(KafkaTopics, KafkaReads):
    """The `Engine` over a Kafka cluster: its parts (topics, produce, reads, followers, groups)
    put together, and the lifecycle of the clients they share."""

    async def open(self) -> None:
        settings = self.settings
        try:
            self._admin = AIOKafkaAdminClient(**settings.client_options(AIOKafkaAdminClient))
            await self._admin.start()
            self._producer = AIOKafkaProducer(
                **settings.client_options(AIOKafkaProducer),
                acks="all",
                enable_idempotence=settings.idempotence,
                max_batch_size=BATCH_BYTES,
                max_request_size=BATCH_BYTES,
                linger_ms=0,
            )
            await self._producer.start()
            self._lookup = self._consumer()
            await self._lookup.start()
            self._readers = asyncio.Queue()
            for _ in range(READERS):
                reader = self._consumer(fetch_max_wait_ms=min(100, settings.fetch_max_wait_ms))
                await reader.start()
                self._all_readers.append(reader)
                self._readers.put_nowait(reader)
            await self._refresh()
        except KafkaError as exc:
            await self.close()
            raise kafka_unavailable(
                f"cannot use the Kafka cluster at {settings.bootstrap_servers}", exc
            ) from exc
        except BaseException:
            await self.close()
            raise
        self._open = True
        self._refresher = asyncio.create_task(self._refresh_loop(), name="kafka-refresh")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # batches queued already are handed to the producer first (a bounded wait)
        joins = [asyncio.create_task(q.join()) for q, _ in self._sends.values()]
        if joins:
            await asyncio.wait(joins, timeout=5)
            for join in joins:
                join.cancel()
        senders = [task for _, task in self._sends.values()]
        for queue, _ in self._sends.values():
            for future in drain_queued(queue):
                if not future.done():
                    future.set_exception(Unavailable("storage is closing"))
        self._sends = {}
        for task in (self._refresher, *senders):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # produces already handed to the producer finish: their futures resolve or fail
        if self._acks:
            await asyncio.wait(set(self._acks), timeout=10)
        seats, self._seats = list(self._seats.values()), {}
        for seat in seats:
            await self._stop_seat(seat)
        followers, self._followers = list(self._followers.values()), {}
        for follower in followers:
            await self._stop_follower(follower)
        if self._stopping:
            await asyncio.wait(set(self._stopping), timeout=10)
        clients: list[Any] = [self._producer, self._lookup, *self._all_readers]
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
        self._producer = self._lookup = self._admin = None
        self._all_readers = []

    async def check_writable(self) -> None:
        admin = self._live_admin()
        try:
            await asyncio.wait_for(admin.describe_cluster(), self.settings.produce_timeout)
        except (KafkaError, TimeoutError) as exc:
            raise kafka_unavailable("the Kafka cluster is not reachable", exc) from exc

    # --- retention and compaction: Kafka's own ------------------------------------------------
    async def retention_point(
        self, topic: str, partition: int, before_timestamp: int | None, max_bytes: int | None
    ) -> int:
        # The cluster applies retention.ms/.bytes and compaction itself (the topic configs are
        # Kafka's): Eddy's cleaner has nothing to do.
        return self._partition(topic, partition).log_start

    async def delete_before(self, topic: str, partition: int, offset: int, limit: int) -> int:
        return 0

    async def compact(
        self,
        topic: str,
        partition: int,
        from_offset: int,
        to_offset: int,
        tombstones_before: int,
    ) -> int:
        return 0

    async def reclaim_space(self, topic: str) -> int:
        return 0

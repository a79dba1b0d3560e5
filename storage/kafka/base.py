"""What every part of the Kafka engine shares: the cluster's clients, Eddy's names for Kafka's,
and this server's picture of the topics (partition counts, log starts, high watermarks), kept in
memory because the `Engine` interface answers those synchronously."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from eddy.models.errors import PartitionNotFound, TopicNotFound, Unavailable
from eddy.models.log import PartitionState, TopicMeta
from eddy.storage.engine import Engine
from eddy.storage.kafka_client import KafkaSettings

log = logging.getLogger("eddy.storage.kafka")

# Kafka's own topic names: 1-249 of [a-zA-Z0-9._-]; Eddy shows only names it accepts itself.
EDDY_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


def kafka_unavailable(what: str, exc: BaseException) -> Unavailable:
    return Unavailable(f"{what}: the Kafka cluster answered {type(exc).__name__}: {exc}")


@dataclass
class KnownPartition:
    log_start: int = 0
    high_watermark: int = 0


@dataclass
class KnownTopic:
    meta: TopicMeta
    partitions: list[KnownPartition]
    known_since: float = field(default_factory=time.monotonic)  # when this server learnt of it


class KafkaEngineBase(Engine):
    """The state and helpers the engine's parts (the classes built on this one) share."""

    embedded_log = False  # the cluster's log, which other producers also write

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._prefix = settings.namespace
        self._topics: dict[str, KnownTopic] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._lookup: AIOKafkaConsumer | None = None  # ListOffsets (earliest/latest/by time)
        self._open = False
        self._closed = False
        self._warned: set[str] = set()
        self._stopping: set[asyncio.Task[None]] = set()

    # --- names --------------------------------------------------------------------------------
    def _kafka_name(self, name: str) -> str:
        return self._prefix + name

    def _eddy_name(self, kafka_name: str) -> str | None:
        if not kafka_name.startswith(self._prefix) or kafka_name.startswith("__"):
            return None
        name = kafka_name[len(self._prefix) :]
        return name if EDDY_NAME.match(name) and name not in (".", "..") else None

    # --- lifecycle ----------------------------------------------------------------------------
    def _consumer(self, **options: Any) -> AIOKafkaConsumer:
        defaults: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "none"}
        return AIOKafkaConsumer(
            **{**self.settings.client_options(AIOKafkaConsumer), **defaults, **options}
        )

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (stopping a client) in a task that `close` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _live_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None or self._closed:
            raise Unavailable("storage is not open")
        return self._admin

    def _live_lookup(self) -> AIOKafkaConsumer:
        if self._lookup is None or self._closed:
            raise Unavailable("storage is not open")
        return self._lookup

    def _warn_once(self, message: str) -> None:
        """A refresh that fails the same way every time is said once, not every interval."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    # --- topics -------------------------------------------------------------------------------
    def _topic(self, name: str) -> KnownTopic:
        topic = self._topics.get(name)
        if topic is None:
            raise TopicNotFound(name)
        return topic

    def list_topics(self) -> list[TopicMeta]:
        return [self._topics[name].meta for name in sorted(self._topics)]

    def get_topic(self, name: str) -> TopicMeta:
        return self._topic(name).meta

    # --- partitions ---------------------------------------------------------------------------
    def _partition(self, topic: str, partition: int) -> KnownPartition:
        states = self._topic(topic).partitions
        if not 0 <= partition < len(states):
            raise PartitionNotFound(topic, partition, len(states))
        return states[partition]

    def partition_state(self, topic: str, partition: int) -> PartitionState:
        state = self._partition(topic, partition)
        # size_bytes: Kafka tells it only per log dir (DescribeLogDirs, per broker); 0 here
        return PartitionState(partition, state.log_start, state.high_watermark, 0)

    def _saw(self, topic: str, partition: int, high_watermark: int) -> None:
        """This server learnt that the partition's log reaches at least `high_watermark`."""
        states = self._topics.get(topic)
        if states is not None and partition < len(states.partitions):
            state = states.partitions[partition]
            if high_watermark > state.high_watermark:
                state.high_watermark = high_watermark

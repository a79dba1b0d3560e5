"""Topics on the Kafka engine: creating, changing and deleting them with the admin client, and
the periodic refresh that keeps this server's picture of the cluster (topics, partitions,
configs, offsets, groups) up to date, moved forward in between by what the server sees itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    IncompatibleBrokerVersion,
    InvalidTopicError,
    KafkaError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)

from eddy.models.errors import EddyError, InvalidRequest, TopicExists, TopicNotFound
from eddy.models.log import TopicMeta
from eddy.storage.kafka.base import KnownPartition, KnownTopic, kafka_unavailable
from eddy.storage.kafka.groups import KafkaGroups
from eddy.storage.kafka.produce import KafkaProduce, drain_queued
from eddy.storage.kafka_client import KafkaSettings

log = logging.getLogger("eddy.storage.kafka")

# The topic configs Eddy knows (broker/topic_rules.py); the others stay Kafka's business.
KNOWN_CONFIGS = (
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "max.message.bytes",
    "delete.retention.ms",
)


class KafkaTopics(KafkaProduce, KafkaGroups):
    """Topic admin, and the refresh (every `refresh_interval`) of what the cluster has."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self._refresher: asyncio.Task[None] | None = None  # runs _refresh_loop once open

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            try:
                await self._refresh()
            except (KafkaError, TimeoutError, EddyError) as exc:
                log.warning("refreshing from the Kafka cluster failed: %s", exc)
            except Exception:
                log.exception("refreshing from the Kafka cluster failed")

    async def _refresh(self) -> None:
        """Topics, partitions, configs, offsets and groups as the cluster has them now."""
        admin = self._live_admin()
        started = time.monotonic()
        described = await admin.describe_topics()
        seen: dict[str, int] = {}
        for entry in described:
            name = self._eddy_name(entry["topic"])
            if name is None or entry.get("is_internal") or entry["error_code"]:
                continue
            seen[name] = len(entry["partitions"])
        # (a topic this server made after the metadata was read is not gone)
        gone = [n for n, t in self._topics.items() if n not in seen and t.known_since < started]
        for name in gone:
            del self._topics[name]
            self._forget_topic(name)
            self._announce_topic_deleted(name)
        new = [n for n in seen if n not in self._topics]
        try:
            configs = await self._describe_configs(list(seen)) if seen else {}
        except KafkaError as exc:  # (librdkafka's mock cluster has no DescribeConfigs)
            log.debug("DescribeConfigs failed: %s", exc)
            configs = {}
        for name, count in seen.items():
            topic = self._topics.get(name)
            config = configs.get(name, {})
            if topic is None:
                self._topics[name] = KnownTopic(
                    TopicMeta(name, count, config, 0), [KnownPartition() for _ in range(count)]
                )
                continue
            if name in configs:
                topic.meta = TopicMeta(name, topic.meta.partitions, config, 0)
            if count > topic.meta.partitions:
                self._grow(topic, count)
        await self._refresh_offsets(list(seen))
        if new:
            log.info("Kafka topics found: %s", ", ".join(sorted(new)))
        try:
            await self._refresh_groups()
        except KafkaError as exc:
            self._warn_once(f"reading consumer groups from Kafka failed: {exc}")

    async def _describe_configs(self, names: list[str]) -> dict[str, dict[str, Any]]:
        admin = self._live_admin()
        resources = [ConfigResource(ConfigResourceType.TOPIC, self._kafka_name(n)) for n in names]
        configs: dict[str, dict[str, Any]] = {}
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                error_code, _, _, kafka_name, entries = resource[:5]
                name = self._eddy_name(kafka_name)
                if error_code or name is None:
                    continue
                config: dict[str, Any] = {}
                for key, value, on_topic in _topic_level_entries(entries):
                    if key in KNOWN_CONFIGS and on_topic and value is not None:
                        config[key] = _config_value(value)
                configs[name] = config
        return configs

    async def _refresh_offsets(self, names: list[str]) -> None:
        lookup = self._lookup
        if lookup is None or not names:
            return
        partitions = [
            TopicPartition(self._kafka_name(n), p)
            for n in names
            if n in self._topics
            for p in range(len(self._topics[n].partitions))
        ]
        starts = await lookup.beginning_offsets(partitions)
        ends = await lookup.end_offsets(partitions)
        for tp, start in starts.items():
            name = self._eddy_name(tp.topic)
            topic = self._topics.get(name) if name else None
            if topic is None or tp.partition >= len(topic.partitions):
                continue
            state = topic.partitions[tp.partition]
            state.log_start = start
            # Only ever forward: a high watermark this server has seen (an ack, a fetched
            # record) is never taken back by a broker that reports less (Tansu 0.6 after a
            # multi-record batch).
            state.high_watermark = max(state.high_watermark, ends.get(tp, 0), start)

    def _grow(self, topic: KnownTopic, count: int) -> None:
        old = topic.meta.partitions
        topic.partitions += [KnownPartition() for _ in range(old, count)]
        topic.meta = TopicMeta(topic.meta.name, count, topic.meta.config, topic.meta.created_at)
        follower = self._followers.get(topic.meta.name)
        if follower is not None:
            for p in range(old, count):
                follower.positions[p] = 0
            if follower.started:
                self._assign_follower(follower)
        self._announce_partitions_added(topic.meta.name, count)

    async def create_topic(self, name: str, partitions: int, config: dict[str, Any]) -> TopicMeta:
        admin = self._live_admin()
        if name in self._topics:
            raise TopicExists(name)
        new = NewTopic(
            self._kafka_name(name),
            partitions,
            self.settings.replication_factor,
            topic_configs={k: str(v) for k, v in config.items()},
        )
        try:
            response = await admin.create_topics([new])
            _raise_topic_errors(response.topic_errors, name)
        except TopicAlreadyExistsError:
            await self._refresh_topic_soon(name)
            raise TopicExists(name) from None
        except InvalidTopicError as exc:
            # a name Eddy takes that the cluster does not: with --kafka-namespace's prefix, a
            # name of up to 249 characters can pass Kafka's limit of 249 (the client's error)
            raise InvalidRequest(
                f"the Kafka cluster refuses topic '{name}' as '{self._kafka_name(name)}': {exc}",
                {"topic": name},
            ) from exc
        except (KafkaError, AttributeError) as exc:
            # (aiokafka's admin fails with AttributeError when the cluster names no controller,
            # as librdkafka's mock cluster does)
            raise kafka_unavailable(f"cannot create topic '{name}'", exc) from exc
        meta = TopicMeta(name, partitions, dict(config), 0)
        if name not in self._topics:  # (a refresh may have found it meanwhile)
            self._topics[name] = KnownTopic(meta, [KnownPartition() for _ in range(partitions)])
        await self._wait_for_leaders(name)
        return self._topics[name].meta

    async def _wait_for_leaders(self, name: str) -> None:
        """A new topic takes produces once its partitions have leaders in the metadata."""
        producer = self._producer
        if producer is None:
            return
        with contextlib.suppress(KafkaError, TimeoutError):
            await asyncio.wait_for(producer.client._wait_on_metadata(self._kafka_name(name)), 10)

    async def _refresh_topic_soon(self, name: str) -> None:
        """Another server created it: take it into the picture now (not at the next refresh)."""
        with contextlib.suppress(KafkaError, EddyError):
            await self._refresh()

    async def update_topic(
        self, name: str, partitions: int | None, config: dict[str, Any] | None
    ) -> TopicMeta:
        admin = self._live_admin()
        topic = self._topic(name)
        kafka_name = self._kafka_name(name)
        try:
            if config is not None:
                resource = ConfigResource(
                    ConfigResourceType.TOPIC,
                    kafka_name,
                    configs={k: str(v) for k, v in config.items()},
                )
                for response in await admin.alter_configs([resource]):
                    for error_code, message, *_ in response.resources:
                        if error_code:
                            raise for_code(error_code)(message)
                topic.meta = TopicMeta(name, topic.meta.partitions, dict(config), 0)
            if partitions is not None and partitions > topic.meta.partitions:
                await admin.create_partitions({kafka_name: NewPartitions(partitions)})
                self._grow(topic, partitions)
        except UnknownTopicOrPartitionError:
            raise TopicNotFound(name) from None
        except IncompatibleBrokerVersion as exc:
            raise InvalidRequest(
                f"cannot change topic '{name}': the Kafka cluster does not support "
                f"{_request_name(exc)}",
                {"topic": name, "reason": "unsupported_by_cluster"},
            ) from exc
        except (KafkaError, AttributeError) as exc:
            raise kafka_unavailable(f"cannot change topic '{name}'", exc) from exc
        return topic.meta

    async def delete_topic(self, name: str) -> None:
        admin = self._live_admin()
        self._topic(name)
        try:
            response = await admin.delete_topics([self._kafka_name(name)])
            for topic_error in response.topic_error_codes:
                if topic_error[1]:
                    raise for_code(topic_error[1])(topic_error[0])
        except UnknownTopicOrPartitionError:
            pass  # deleted meanwhile (by another server): the outcome asked for
        except (KafkaError, AttributeError) as exc:
            raise kafka_unavailable(f"cannot delete topic '{name}'", exc) from exc
        if self._topics.pop(name, None) is not None:
            self._forget_topic(name)
            self._announce_topic_deleted(name)

    def _forget_topic(self, name: str) -> None:
        entry = self._sends.pop(name, None)
        if entry is not None:
            queue, task = entry
            task.cancel()
            for future in drain_queued(queue):
                if not future.done():
                    future.set_exception(TopicNotFound(name))
        for key in [k for k in self._offsets if k[1] == name]:
            del self._offsets[key]
        follower = self._followers.pop(name, None)
        if follower is not None:
            follower.wake_all()
            self._background(self._stop_follower(follower))


def _topic_level_entries(entries: Sequence[Any]) -> list[tuple[str, str | None, bool]]:
    """(name, value, set on the topic) per DescribeConfigs entry. v0 says is_default (a bool);
    v1+ says the source, 1 being the topic's own. Tansu 0.6 lists only the configs set on the
    topic, each with source 5 (default): when every entry says 5, they are taken as the
    topic's own (on Apache Kafka, a topic without any override then shows Kafka's defaults as
    its own values, which they are)."""
    sources = [entry[3] for entry in entries]
    only_defaults = bool(sources) and all(not isinstance(s, bool) and s == 5 for s in sources)
    out = []
    for entry in entries:
        key, value, _, source = entry[:4]
        if isinstance(source, bool):
            on_topic = not source
        else:
            on_topic = source == 1 or (only_defaults and source == 5)
        out.append((key, value, on_topic))
    return out


def _request_name(exc: IncompatibleBrokerVersion) -> str:
    match = re.search(r"(\w+)Request", str(exc))
    return match.group(1) if match else "this request"


def _config_value(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _raise_topic_errors(topic_errors: Sequence[Any], name: str) -> None:
    for entry in topic_errors:
        error_code = entry[1]
        if error_code:
            message = entry[2] if len(entry) > 2 else None
            raise for_code(error_code)(message or name)

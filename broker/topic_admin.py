"""Topic administration: create (against --max-topics), list, describe, update and delete, and
the auto-create of a topic on first use, under a lock per name so that concurrent first
produces create it once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from eddy.broker.access import AccessPolicy, Action, Principal
from eddy.broker.config import BrokerConfig
from eddy.broker.topic_rules import (
    effective_config,
    validate_config,
    validate_partition_count,
    validate_topic_name,
)
from eddy.models.errors import (
    InvalidRequest,
    TopicExists,
    TopicLimitReached,
    TopicNotFound,
    Unauthorized,
)
from eddy.models.log import TopicMeta
from eddy.models.topics import PartitionInfo, TopicDetail, TopicSummary
from eddy.storage import Engine

log = logging.getLogger("eddy.broker")


class TopicAdmin:
    def __init__(
        self, engine: Engine, config: BrokerConfig, access: Callable[[], AccessPolicy]
    ) -> None:
        self._engine = engine
        self._config = config
        self._access = access  # the policy in force (the auth file may be reloaded)
        self._creating: dict[str, asyncio.Lock] = {}
        # Topics against max_topics: kept as a count (listing is O(n log n) per create),
        # recounted exactly whenever it says the limit is reached.
        self._topic_count = 0
        self._creations_in_flight = 0

    def recount(self) -> None:
        """Count the topics (once storage is open)."""
        self._topic_count = len(self._engine.list_topics())

    def config_of(self, meta: TopicMeta) -> dict[str, Any]:
        """The topic's effective config: its overrides over the server's defaults."""
        return effective_config(self._config.topic_defaults, meta.config)

    @staticmethod
    def _config_sources(meta: TopicMeta, config: Mapping[str, Any]) -> dict[str, str]:
        return {key: "topic" if key in meta.config else "default" for key in config}

    def _summary(self, meta: TopicMeta) -> TopicSummary:
        config = self.config_of(meta)
        return TopicSummary(
            name=meta.name,
            partitions=meta.partitions,
            config=config,
            config_sources=self._config_sources(meta, config),
            created_at=meta.created_at,
        )

    def topic(self, name: str) -> TopicMeta:
        """The topic's metadata (raises `InvalidRequest` for a bad name, `TopicNotFound`)."""
        validate_topic_name(name)
        return self._engine.get_topic(name)

    def _require(self, principal: Principal, action: Action, name: str) -> None:
        validate_topic_name(name)
        self._access().require(principal, action, name)

    def _audit(self, principal: Principal, action: str, name: str) -> None:
        self._access().audit_admin(principal, action, f"topic:{name}", "ok")

    async def create(
        self, principal: Principal, name: str, partitions: int | None, config: Mapping[str, Any]
    ) -> TopicSummary:
        self._require(principal, Action.ADMIN, name)
        count = validate_partition_count(partitions or self._config.default_partitions)
        checked = validate_config(config)
        self._check_limit(name)
        self._creations_in_flight += 1
        try:
            meta = await self._engine.create_topic(name, count, checked)
        finally:
            self._creations_in_flight -= 1
        self._topic_count += 1
        self._audit(principal, "create_topic", name)
        log.info("created topic %s with %d partitions", name, count)
        return self._summary(meta)

    def list_topics(self, principal: Principal) -> list[TopicSummary]:
        """The topics the caller may read."""
        access = self._access()
        if access.enabled and not principal.authenticated and principal.grants.empty:
            raise Unauthorized("credentials required")
        return [
            self._summary(meta)
            for meta in self._engine.list_topics()
            if access.allows(principal, Action.READ, meta.name)
        ]

    def describe(self, principal: Principal, name: str) -> TopicDetail:
        self._require(principal, Action.READ, name)
        return self._describe(name)

    def _describe(self, name: str) -> TopicDetail:
        meta = self.topic(name)
        states = [self._engine.partition_state(name, p) for p in range(meta.partitions)]
        config = self.config_of(meta)
        return TopicDetail(
            name=meta.name,
            config=config,
            config_sources=self._config_sources(meta, config),
            created_at=meta.created_at,
            partitions=[
                PartitionInfo(
                    partition=s.partition,
                    log_start_offset=s.log_start_offset,
                    high_watermark=s.high_watermark,
                    size_bytes=s.size_bytes,
                )
                for s in states
            ],
        )

    async def update(
        self,
        principal: Principal,
        name: str,
        partitions: int | None,
        config: Mapping[str, Any] | None,
    ) -> TopicDetail:
        self._require(principal, Action.ADMIN, name)
        meta = self.topic(name)
        if partitions is not None:
            validate_partition_count(partitions)
            if partitions < meta.partitions:
                raise InvalidRequest(
                    f"partitions can only be increased (topic '{name}' has {meta.partitions})",
                    {"partitions": meta.partitions},
                )
        new_config = None if config is None else {**meta.config, **validate_config(config)}
        updated = await self._engine.update_topic(name, partitions, new_config)
        if updated.partitions > meta.partitions:
            # The engine has told the listeners (in the same step that made the partitions
            # writable): live subscribers of "all partitions" start the new ones at offset 0
            # and groups rebalance.
            log.info("topic %s now has %d partitions", name, updated.partitions)
        self._audit(principal, "update_topic", name)
        return self._describe(name)

    async def replace_config(
        self, principal: Principal, name: str, config: Mapping[str, Any]
    ) -> TopicDetail:
        """Set the topic's overrides to exactly `config` (Kafka's AlterConfigs: keys left out
        go back to the server's defaults)."""
        self._require(principal, Action.ADMIN, name)
        self.topic(name)
        await self._engine.update_topic(name, None, validate_config(config))
        self._audit(principal, "update_topic", name)
        return self._describe(name)

    async def delete(self, principal: Principal, name: str) -> None:
        self._require(principal, Action.ADMIN, name)
        await self._engine.delete_topic(name)
        self._topic_count -= 1
        self._audit(principal, "delete_topic", name)
        log.info("deleted topic %s", name)

    def _check_limit(self, name: str) -> None:
        """Raise `TopicLimitReached` if creating `name` would pass --max-topics (`TopicExists`
        if it exists: that is the better answer)."""
        limit = self._config.max_topics
        if self._topic_count + self._creations_in_flight < limit:
            return
        self.recount()
        if self._topic_count + self._creations_in_flight < limit:
            return
        with contextlib.suppress(TopicNotFound):
            self._engine.get_topic(name)
            raise TopicExists(name)
        raise TopicLimitReached(name, limit)

    async def for_use(self, principal: Principal, name: str) -> TopicMeta:
        """The topic, auto-created with the defaults if that is on and the caller may
        administer the name (produce and subscribe); else as if auto-create were off."""
        try:
            return self._engine.get_topic(name)
        except TopicNotFound:
            if not self._config.auto_create_topics or not self._access().allows(
                principal, Action.ADMIN, name
            ):
                raise
        lock = self._creating.setdefault(name, asyncio.Lock())
        async with lock:  # concurrent first produces create the topic once
            try:
                return self._engine.get_topic(name)
            except TopicNotFound:
                # (on a shared cluster another server may have created it meanwhile)
                with contextlib.suppress(TopicExists):
                    await self.create(principal, name, None, {})
                return self._engine.get_topic(name)
            finally:
                self._creating.pop(name, None)

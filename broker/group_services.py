"""Consumer-group services for every transport: REST administration (list, describe, commit,
reset, delete: authorized, audited) and the Kafka listener's members (their commits, committed
offsets, and the rule that one group name is used by one kind of member at a time)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

from eddy.broker.access import AccessPolicy, Action, Principal
from eddy.broker.groups import GroupCoordinator, ResetTo
from eddy.broker.topic_admin import TopicAdmin
from eddy.broker.topic_rules import validate_group_name, validate_topic_name
from eddy.models.errors import PartitionNotFound
from eddy.models.groups import GroupDetail, GroupSummary
from eddy.models.log import CommittedOffset
from eddy.storage import Engine


class GroupServices:
    def __init__(
        self,
        engine: Engine,
        groups: GroupCoordinator,
        topics: TopicAdmin,
        access: Callable[[], AccessPolicy],
    ) -> None:
        self._engine = engine
        self._groups = groups
        self._topics = topics
        self._access = access  # the policy in force (the auth file may be reloaded)

    def authorize(self, principal: Principal, action: Action, group: str) -> None:
        """Validate the group name and require the permission (raises `EddyError`)."""
        validate_group_name(group)
        self._access().require(principal, action, group, what="group")

    def _authorize_topic(self, principal: Principal, action: Action, topic: str) -> None:
        validate_topic_name(topic)
        self._access().require(principal, action, topic)

    def _audit(self, principal: Principal, action: str, group: str) -> None:
        self._access().audit_admin(principal, action, f"group:{group}", "ok")

    # --- REST -----------------------------------------------------------------------------------
    def list_groups(self, principal: Principal) -> list[GroupSummary]:
        """The groups the caller may use."""
        access = self._access()
        return [
            g for g in self._groups.list_groups() if access.allows(principal, Action.GROUP, g.group)
        ]

    def describe(self, principal: Principal, group: str) -> GroupDetail:
        """The group's members and offsets, of the topics the caller may read."""
        self.authorize(principal, Action.GROUP, group)
        access = self._access()
        detail = self._groups.describe_group(group)
        readable = {
            o.topic for o in detail.offsets if access.allows(principal, Action.READ, o.topic)
        } | {m.topic for m in detail.members if access.allows(principal, Action.READ, m.topic)}
        return detail.model_copy(
            update={
                "members": [m for m in detail.members if m.topic in readable],
                "offsets": [o for o in detail.offsets if o.topic in readable],
            }
        )

    async def commit(
        self,
        principal: Principal,
        group: str,
        topic: str,
        offsets: Mapping[str, int],
        metadata: str = "",
    ) -> None:
        """A REST worker's commit (it picks its partitions itself)."""
        self.authorize(principal, Action.GROUP, group)
        self._authorize_topic(principal, Action.READ, topic)
        self._topics.topic(topic)
        await self._groups.commit_from_rest(group, topic, offsets, metadata)

    async def reset(
        self, principal: Principal, group: str, topic: str, to: ResetTo
    ) -> dict[int, int]:
        self.authorize(principal, Action.ADMIN, group)
        self._topics.topic(topic)
        offsets = await self._groups.reset(group, topic, to)
        self._audit(principal, "reset_group", group)
        return offsets

    async def delete(self, principal: Principal, group: str) -> None:
        self.authorize(principal, Action.ADMIN, group)
        await self._groups.delete(group)
        self._audit(principal, "delete_group", group)

    # --- Kafka-protocol members -----------------------------------------------------------------
    def add_member_kind(self, has_members: Callable[[str], bool]) -> None:
        """Another kind of group member (the Kafka listener's): while `has_members(group)`,
        WebSocket members and REST commits, resets and deletes are refused `group_active`."""
        self._groups.other_members.append(has_members)

    def remove_member_kind(self, has_members: Callable[[str], bool]) -> None:
        with contextlib.suppress(ValueError):  # never added (a listener that did not start)
            self._groups.other_members.remove(has_members)

    def has_members(self, group: str) -> bool:
        """Whether WebSocket members are in the group."""
        return self._groups.has_members(group)

    def committed(self, group: str) -> list[CommittedOffset]:
        """The group's committed offsets, from memory (the caller filters what it may read)."""
        return self._engine.committed_offsets(group)

    async def commit_member(
        self,
        principal: Principal,
        group: str,
        topic: str,
        offsets: Mapping[int, int],
        metadata: Mapping[int, str],
    ) -> None:
        """A Kafka-protocol member's commit (its coordinator has checked the generation)."""
        self._authorize_topic(principal, Action.READ, topic)
        meta = self._topics.topic(topic)
        for partition in offsets:
            if not 0 <= partition < meta.partitions:
                raise PartitionNotFound(topic, partition, meta.partitions)
        await self._engine.commit_offsets(group, topic, offsets, metadata)

"""Cluster and topic administration: ApiVersions, Metadata, CreateTopics, DeleteTopics,
CreatePartitions, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs."""

from __future__ import annotations

import contextlib
from typing import Any

from kio.schema.errors import ErrorCode

from eddy.broker import Action, validate_config
from eddy.models.errors import EddyError, InvalidRequest, TopicExists, TopicNotFound
from eddy.routers.kafka.errors import error_code
from eddy.routers.kafka.messages import SUPPORTED, Request
from eddy.routers.kafka.session import Session

CLUSTER_ID = "eddy"
# Kafka's config names for Eddy's topic settings that are numbers (cleanup.policy is text).
_TEXT_CONFIGS = frozenset({"cleanup.policy"})
# Kafka's LIST configs, which IncrementalAlterConfigs may APPEND to and SUBTRACT from.
LIST_CONFIGS = frozenset({"cleanup.policy"})


def api_versions_body(error: ErrorCode = ErrorCode.none) -> dict[str, Any]:
    return {
        "error_code": error,
        "api_keys": [
            {"api_key": key, "min_version": low, "max_version": high}
            for key, (_, low, high) in sorted(SUPPORTED.items())
        ],
    }


async def api_versions(session: Session, request: Request) -> dict[str, Any]:
    return api_versions_body()


def _partitions(session: Session, count: int) -> list[dict[str, Any]]:
    node = session.advertised.node_id
    return [
        {
            "error_code": ErrorCode.none,
            "partition_index": p,
            "leader_id": node,
            "leader_epoch": 0,
            "replica_nodes": [node],
            "isr_nodes": [node],
            "offline_replicas": [],
        }
        for p in range(count)
    ]


async def _topic_metadata(session: Session, name: str, auto_create: bool) -> dict[str, Any]:
    broker, principal = session.broker, session.principal
    try:
        try:
            detail = broker.describe_topic(principal, name)
        except TopicNotFound:
            if not (auto_create and broker.config.auto_create_topics):
                raise
            with contextlib.suppress(TopicExists):
                await broker.create_topic(principal, name, None, {})
            detail = broker.describe_topic(principal, name)
    except EddyError as exc:
        code = error_code(exc)
        if isinstance(exc, InvalidRequest):
            code = ErrorCode.invalid_topic_exception
        return {"error_code": code, "name": name, "partitions": []}
    return {
        "error_code": ErrorCode.none,
        "name": name,
        "is_internal": False,
        "partitions": _partitions(session, len(detail.partitions)),
    }


async def metadata(session: Session, request: Request) -> dict[str, Any]:
    body = request.body
    # Before v4 there is no flag: asking for a topic creates it if the server auto-creates.
    auto_create = bool(getattr(body, "allow_auto_topic_creation", True))
    if body.topics is None or (request.version == 0 and not body.topics):
        try:
            names = [t.name for t in session.broker.list_topics(session.principal)]
        except EddyError:  # anonymous without grants: no topic to show
            names = []
        auto_create = False
    else:
        names = [t.name for t in body.topics]
    node = session.advertised
    return {
        "brokers": [{"node_id": node.node_id, "host": node.host, "port": node.port}],
        "cluster_id": CLUSTER_ID,
        "controller_id": node.node_id,
        "topics": [await _topic_metadata(session, n, auto_create) for n in names],
    }


def _config_value(name: str, value: str | None) -> Any:
    if value is None:
        raise InvalidRequest(f"config '{name}' needs a value")
    if name in _TEXT_CONFIGS:
        return value
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"config '{name}' must be an integer") from None


def _config_error(exc: EddyError) -> ErrorCode:
    if isinstance(exc, InvalidRequest) and "config" in exc.message:
        return ErrorCode.invalid_config
    return error_code(exc)


async def create_topics(session: Session, request: Request) -> dict[str, Any]:
    results = []
    broker = session.broker
    validate_only = bool(getattr(request.body, "validate_only", False))
    for topic in request.body.topics:
        result: dict[str, Any] = {"name": topic.name, "error_code": ErrorCode.none}
        try:
            if topic.replication_factor not in (-1, 1):
                result["error_code"] = ErrorCode.invalid_replication_factor
                result["error_message"] = "Eddy is one broker: replication factor 1"
                results.append(result)
                continue
            if topic.assignments:
                count: int | None = len(topic.assignments)
            else:
                count = None if topic.num_partitions == -1 else int(topic.num_partitions)
            if count is not None and count < 1:
                raise InvalidRequest("num_partitions must be at least 1")
            config = {c.name: _config_value(c.name, c.value) for c in topic.configs}
            if validate_only:
                broker.authorize(session.principal, Action.ADMIN, topic.name)
                summary_partitions = count or broker.config.default_partitions
            else:
                summary = await broker.create_topic(session.principal, topic.name, count, config)
                summary_partitions = summary.partitions
            result["num_partitions"] = summary_partitions
            result["replication_factor"] = 1
        except EddyError as exc:
            code = _config_error(exc)
            if isinstance(exc, InvalidRequest) and code is ErrorCode.invalid_request:
                code = (
                    ErrorCode.invalid_partitions
                    if "partition" in exc.message
                    else ErrorCode.invalid_topic_exception
                )
            result.update(error_code=code, error_message=exc.message, num_partitions=-1)
            result["replication_factor"] = -1
        results.append(result)
    return {"topics": results}


async def delete_topics(session: Session, request: Request) -> dict[str, Any]:
    names = getattr(request.body, "topic_names", None) or [t.name for t in request.body.topics]
    responses = []
    for name in names:
        result: dict[str, Any] = {"name": name, "error_code": ErrorCode.none}
        try:
            await session.broker.delete_topic(session.principal, name)
        except EddyError as exc:
            result.update(error_code=error_code(exc), error_message=exc.message)
        responses.append(result)
    return {"responses": responses}


async def find_coordinator(session: Session, request: Request) -> dict[str, Any]:
    """Eddy is its own group coordinator (and there are no transactions to coordinate)."""
    node = session.advertised
    if getattr(request.body, "key_type", 0) != 0:
        return {
            "error_code": ErrorCode.coordinator_not_available,
            "error_message": "transactions are not supported",
            "node_id": -1,
            "host": "",
            "port": -1,
        }
    return {
        "error_code": ErrorCode.none,
        "node_id": node.node_id,
        "host": node.host,
        "port": node.port,
    }


async def create_partitions(session: Session, request: Request) -> dict[str, Any]:
    results = []
    for topic in request.body.topics:
        result: dict[str, Any] = {"name": topic.name, "error_code": ErrorCode.none}
        try:
            current = session.broker.describe_topic(session.principal, topic.name)
            if topic.count <= len(current.partitions):
                result.update(
                    error_code=ErrorCode.invalid_partitions,
                    error_message=f"topic has {len(current.partitions)} partitions; "
                    "the count can only grow",
                )
            elif request.body.validate_only:
                session.broker.authorize(session.principal, Action.ADMIN, topic.name)
            else:
                await session.broker.update_topic(
                    session.principal, topic.name, int(topic.count), None
                )
        except EddyError as exc:
            code = error_code(exc)
            if isinstance(exc, InvalidRequest):
                code = ErrorCode.invalid_partitions
            result.update(error_code=code, error_message=exc.message)
        results.append(result)
    return {"results": results}


TOPIC_RESOURCE, BROKER_RESOURCE = 2, 4
DYNAMIC_TOPIC_CONFIG, DEFAULT_CONFIG = 1, 5
_CONFIG_TYPES = {"cleanup.policy": 7, "max.message.bytes": 3}  # 7 LIST, 3 INT; others LONG (5)


def _config_entries(
    config: dict[str, Any], sources: dict[str, str], keys: Any, read_only: bool
) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "value": str(value),
            "read_only": read_only,
            "config_source": DYNAMIC_TOPIC_CONFIG
            if sources.get(name) == "topic"
            else DEFAULT_CONFIG,
            "is_default": sources.get(name) != "topic",
            "is_sensitive": False,
            "config_type": _CONFIG_TYPES.get(name, 5),
        }
        for name, value in sorted(config.items())
        if keys is None or name in keys
    ]


async def describe_configs(session: Session, request: Request) -> dict[str, Any]:
    broker = session.broker
    results = []
    for resource in request.body.resources:
        result: dict[str, Any] = {
            "error_code": ErrorCode.none,
            "resource_type": resource.resource_type,
            "resource_name": resource.resource_name,
            "configs": [],
        }
        keys = resource.configuration_keys
        try:
            if resource.resource_type == TOPIC_RESOURCE:
                detail = broker.describe_topic(session.principal, resource.resource_name)
                result["configs"] = _config_entries(
                    dict(detail.config), dict(detail.config_sources), keys, False
                )
            elif resource.resource_type == BROKER_RESOURCE:
                defaults = dict(broker.config.topic_defaults)
                result["configs"] = _config_entries(defaults, {}, keys, True)
            else:
                result.update(
                    error_code=ErrorCode.invalid_request, error_message="unknown resource"
                )
        except EddyError as exc:
            result.update(error_code=error_code(exc), error_message=exc.message)
        results.append(result)
    return {"results": results}


async def _alter(
    session: Session, resource: Any, validate_only: bool, incremental: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "error_code": ErrorCode.none,
        "resource_type": resource.resource_type,
        "resource_name": resource.resource_name,
    }
    if resource.resource_type != TOPIC_RESOURCE:
        out.update(
            error_code=ErrorCode.invalid_request,
            error_message="only topic configs can be changed (broker defaults are flags)",
        )
        return out
    broker = session.broker
    try:
        detail = broker.describe_topic(session.principal, resource.resource_name)
        overrides = {k: v for k, v in detail.config.items() if detail.config_sources[k] == "topic"}
        new: dict[str, Any] = dict(overrides) if incremental else {}
        for entry in resource.configs:
            operation = getattr(entry, "config_operation", 0)
            if operation == 0:  # SET
                new[entry.name] = _config_value(entry.name, entry.value)
            elif operation == 1:  # DELETE: back to the default
                new.pop(entry.name, None)
            elif entry.name in LIST_CONFIGS:  # APPEND (2), SUBTRACT (3)
                current = str(new.get(entry.name, detail.config[entry.name])).split(",")
                items = [i.strip() for i in (entry.value or "").split(",") if i.strip()]
                if operation == 2:
                    kept = current + [i for i in items if i not in current]
                else:
                    kept = [i for i in current if i not in items]
                new[entry.name] = ",".join(kept)  # validate_config checks and orders it
            else:
                raise InvalidRequest(f"config '{entry.name}' is not a list: cannot append/subtract")
        validate_config(new)
        if not validate_only:
            await broker.replace_topic_config(session.principal, resource.resource_name, new)
        else:
            broker.authorize(session.principal, Action.ADMIN, resource.resource_name)
    except EddyError as exc:
        out.update(error_code=_config_error(exc), error_message=exc.message)
    return out


async def alter_configs(session: Session, request: Request) -> dict[str, Any]:
    body = request.body
    return {
        "responses": [await _alter(session, r, body.validate_only, False) for r in body.resources]
    }


async def incremental_alter_configs(session: Session, request: Request) -> dict[str, Any]:
    body = request.body
    return {
        "responses": [await _alter(session, r, body.validate_only, True) for r in body.resources]
    }

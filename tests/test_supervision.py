"""Background work never dies silently: absurd topic configs are refused, the cleaner survives
one anyway (an old data directory) and any failure on one topic, and /readyz reports a
background task that is not running."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eddy.app.factory import broker_config
from eddy.app.settings import Settings
from eddy.broker import Broker
from eddy.broker.topic_rules import INT_MAX, LONG_MAX, cleanup_plan, validate_config
from eddy.models.errors import InvalidRequest, Unavailable
from eddy.storage import SQLiteEngine
from tests.conftest import RunningServer, fetch_all, serve_in_thread, wait_until

DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def background_errors(client: httpx.Client, topic: str) -> float:
    text = client.get("/metrics").text
    match = re.search(
        rf'^eddy_background_errors_total\{{task="cleaner",topic="{re.escape(topic)}"\}} (\S+)$',
        text,
        re.MULTILINE,
    )
    return float(match.group(1)) if match else 0.0


# --- pure: the plan never leaves SQLite's integer range --------------------------------------
@pytest.mark.parametrize("absurd", [2**64 - 1, 2**63, 10**30])
def test_cleanup_plan_clamps_what_an_old_data_dir_may_hold(absurd: int) -> None:
    config = {
        "retention.ms": absurd,
        "retention.bytes": absurd,
        "delete.retention.ms": absurd,
        "cleanup.policy": "compact,delete",
    }
    plan = cleanup_plan(config, now_ms())
    for value in (plan.delete_before_timestamp, plan.max_bytes, plan.tombstones_before):
        assert value is not None
        assert -(2**63) <= value <= LONG_MAX


# --- refused at the API ----------------------------------------------------------------------
@pytest.fixture
def rserver(tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(tmp_path / "data", retention_check_interval=0.1) as running:
        yield running


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("retention.ms", 2**64 - 1),
        ("retention.ms", LONG_MAX + 1),
        ("delete.retention.ms", 2**64 - 1),
        ("retention.bytes", 2**64 - 1),
        ("max.message.bytes", INT_MAX + 1),
        ("retention.ms", 10**30),
        ("retention.ms", -(10**30)),
        ("retention.ms", -2),
        ("retention.bytes", -2),
        ("delete.retention.ms", -1),
        ("max.message.bytes", 0),
        ("retention.ms", 1.5),
        ("retention.ms", 1e300),
        ("retention.ms", True),
        ("retention.ms", "3600000"),
    ],
)
def test_out_of_range_configs_are_refused_at_create_and_patch(
    rserver: RunningServer, key: str, value: Any
) -> None:
    with rserver.client() as client:
        created = client.post("/v1/topics", json={"name": "t", "config": {key: value}})
        assert created.status_code == 422, created.text
        assert created.json()["error"]["code"] == "invalid_request"
        assert client.get("/v1/topics/t").status_code == 404
        assert client.post("/v1/topics", json={"name": "t"}).status_code == 201
        before = client.get("/v1/topics/t").json()["config"]
        patched = client.patch("/v1/topics/t", json={"config": {key: value}})
        assert patched.status_code == 422, patched.text
        assert client.get("/v1/topics/t").json()["config"] == before
        produced = client.post("/v1/topics/t/records", json={"records": [{"value": 1}]})
        assert produced.status_code == 200, produced.text


def test_the_largest_kafka_long_is_accepted_and_cleaned_with(rserver: RunningServer) -> None:
    config = {"retention.ms": LONG_MAX, "delete.retention.ms": LONG_MAX}
    with rserver.client() as client:
        created = client.post(
            "/v1/topics",
            json={"name": "forever", "config": {**config, "cleanup.policy": "compact,delete"}},
        )
        assert created.status_code == 201, created.text
        records = [{"key": "k", "value": 1, "timestamp": 0}, {"key": "k", "value": None}]
        assert client.post("/v1/topics/forever/records", json={"records": records}).is_success
        # compaction removes the older record of the key; nothing else goes, nothing fails
        wait_until(lambda: len(fetch_all(client, "forever", offset=1)) == 1)
        assert client.get("/readyz").status_code == 200
        assert background_errors(client, "forever") == 0


# --- the cleaner survives --------------------------------------------------------------------
def _old_data_dir(data_dir: Path) -> None:
    """Topics a version without range checks could have written."""

    async def write() -> None:
        engine = SQLiteEngine(data_dir)
        await engine.open()
        try:
            await engine.create_topic("a-broken", 1, {"retention.ms": "soon"})
            absurd = {
                "retention.ms": 2**64 - 1,
                "delete.retention.ms": 2**64 - 1,
                "cleanup.policy": "compact,delete",
            }
            await engine.create_topic("absurd", 1, absurd)
        finally:
            await engine.close()

    asyncio.run(write())


def test_the_cleaner_survives_an_old_data_dir_and_cleans_the_other_topics(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    _old_data_dir(data_dir)
    with (
        serve_in_thread(data_dir, retention_check_interval=0.1) as running,
        running.client() as client,
    ):
        created = client.post(
            "/v1/topics", json={"name": "aging", "config": {"retention.ms": DAY_MS}}
        )
        assert created.status_code == 201
        old = now_ms() - 2 * DAY_MS
        records: list[dict[str, Any]] = [{"value": i, "timestamp": old} for i in range(5)]
        assert client.post("/v1/topics/aging/records", json={"records": records}).is_success
        assert client.post(
            "/v1/topics/absurd/records", json={"records": [{"key": "k", "value": 1}]}
        ).is_success
        # "a-broken" comes first in every pass and fails in every pass; "aging" is cleaned.
        wait_until(
            lambda: client.get("/v1/topics/aging").json()["partitions"][0]["log_start_offset"] == 5
        )
        wait_until(lambda: background_errors(client, "a-broken") >= 3)  # retried each pass
        assert background_errors(client, "absurd") == 0
        assert client.get("/v1/topics/absurd").json()["partitions"][0]["log_start_offset"] == 0
        assert client.get("/readyz").status_code == 200


# --- /readyz ---------------------------------------------------------------------------------
def test_readyz_answers_503_naming_a_stopped_background_task(rserver: RunningServer) -> None:
    with rserver.client() as client:
        assert client.get("/readyz").status_code == 200
        task = rserver.app.state.broker.cleaner._task
        task.get_loop().call_soon_threadsafe(task.cancel)  # stands for any way the loop ends
        wait_until(lambda: client.get("/readyz").status_code == 503)
        error = client.get("/readyz").json()["error"]
        assert error["code"] == "unavailable"
        assert error["details"] == {"tasks": ["cleaner"]}
        assert client.get("/healthz").status_code == 200  # the process is up all the same


async def test_readyz_names_a_background_task_that_is_not_running(tmp_path: Path) -> None:
    broker = Broker(SQLiteEngine(tmp_path), broker_config(Settings(retention_check_interval=60)))
    await broker.start()
    try:
        await broker.check_ready()
        task = broker.cleaner._task
        assert task is not None
        task.cancel()  # stands for any way the loop could end
        await asyncio.gather(task, return_exceptions=True)
        with pytest.raises(Unavailable) as refused:
            await broker.check_ready()
        assert refused.value.details == {"tasks": ["cleaner"]}
        assert "cleaner" in refused.value.message
    finally:
        await broker.stop()


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("retention.ms", LONG_MAX, True),
        ("retention.ms", -1, True),
        ("retention.ms", LONG_MAX + 1, False),
        ("retention.ms", -2, False),
        ("retention.bytes", -1, True),
        ("delete.retention.ms", 0, True),
        ("delete.retention.ms", -1, False),
        ("max.message.bytes", INT_MAX, True),
        ("max.message.bytes", INT_MAX + 1, False),
        ("max.message.bytes", 0, False),
        ("retention.ms", 2.0, False),  # Kafka's longs are integers, a float is not one
        ("retention.ms", False, False),  # nor is a JSON boolean (a bool is an int in Python)
    ],
)
def test_config_bounds_are_kafkas(key: str, value: Any, accepted: bool) -> None:
    if accepted:
        assert validate_config({key: value}) == {key: value}
    else:
        with pytest.raises(InvalidRequest, match=key):
            validate_config({key: value})

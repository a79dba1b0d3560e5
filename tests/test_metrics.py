"""/metrics of a real server after real traffic, parsed with prometheus_client's parser (and
checked with promtool when it is installed: .ci/install-debian-packages.sh)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import platform
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from httpx_sse import EventSource
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.conftest import RunningServer, free_port, serve_in_thread

KEY = "metrics-test-key"
AUTH = f"""
[[principals]]
name = "ops"
key_sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"

[anonymous]
read = ["*"]
write = ["*"]
admin = ["*"]
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: RunningServer) -> tuple[str, Samples]:
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH)
    with serve_in_thread(tmp_path / "d", auth_file=auth) as running:
        yield running


def test_metrics_after_traffic(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        assert c.post("/v1/topics", json={"name": "m", "partitions": 2}).status_code == 201
        batch = [{"value": i, "partition": 0} for i in range(5)]
        batch += [{"value": i, "partition": 1} for i in range(3)]
        assert c.post("/v1/topics/m/records", json={"records": batch}).status_code == 200
        assert c.post("/v1/topics/m/records", json={"nope": 1}).status_code == 422
        assert c.get("/v1/topics/absent/partitions/0/records").status_code == 404
        for _ in range(2):
            wrong = c.get("/v1/topics", headers={"Authorization": "Bearer not-a-key"})
            assert wrong.status_code == 401
    with connect(f"{server.ws_url}/v1/topics/m/publish") as ws:
        ws.send("not json")
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid_request"
        ws.send(json.dumps({"id": 1, "value": "ok", "partition": 1}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"

    _, samples = scrape(server)
    for partition, count in ((0, 5), (1, 4)):
        labels = {"topic": "m", "partition": str(partition)}
        assert value(samples, "eddy_partition_high_watermark", **labels) == count
        assert value(samples, "eddy_partition_log_start_offset", **labels) == 0
        assert value(samples, "eddy_partition_size_bytes", **labels) > 0
    assert value(samples, "eddy_rejections_total", code="invalid_request", transport="http") == 1
    assert value(samples, "eddy_rejections_total", code="topic_not_found", transport="http") == 1
    assert value(samples, "eddy_rejections_total", code="unauthorized", transport="http") == 2
    assert (
        value(samples, "eddy_rejections_total", code="invalid_request", transport="websocket") == 1
    )
    assert value(samples, "eddy_auth_failures_total", reason="invalid_api_key") == 2
    # Two appends (one REST, one WebSocket), so two commits at least.
    assert value(samples, "eddy_storage_commit_seconds_count") >= 2
    assert value(samples, "eddy_storage_commit_seconds_sum") > 0
    assert value(samples, "eddy_data_dir_used_bytes") > 0
    assert value(samples, "eddy_data_dir_free_bytes") > 0
    build = [k for k in samples if k[0] == "eddy_build_info"]
    assert len(build) == 1 and dict(build[0][1])["python"] == platform.python_version()
    assert dict(build[0][1])["version"]
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "python_gc_collections_total", generation="0") >= 0

    httpx.delete(f"{server.base_url}/v1/topics/m", timeout=10).raise_for_status()
    _, samples = scrape(server)
    assert not [k for k in samples if k[0].startswith("eddy_partition_")]  # gone with the topic


def test_promtool_accepts_the_exposition(server: RunningServer) -> None:
    if shutil.which("promtool") is None:  # a failure, not a skip: CI installs it
        pytest.fail("promtool is missing: run `bash .ci/install-debian-packages.sh`")
    httpx.post(f"{server.base_url}/v1/topics/p/records", json={"value": 1}).raise_for_status()
    text, _ = scrape(server)
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    # promtool exits 0 when the exposition parses; it prints lint hints (e.g. about counters'
    # names) that are not errors.
    assert checked.returncode == 0, checked.stdout + checked.stderr


def kafka_read(bootstrap: str, topic: str, count: int) -> int:
    """Records a Kafka consumer reads from partition 0, from the beginning (at least `count`)."""

    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            read = 0
            while read < count:
                batch = await consumer.getmany(tp, timeout_ms=10_000)
                assert batch, "the Kafka fetch timed out"
                read += len(batch[tp])
            return read
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_deliveries_are_counted_per_transport_and_dropped_with_their_topic(
    tmp_path: Path,
) -> None:
    kafka = f"127.0.0.1:{free_port()}"
    with (
        serve_in_thread(tmp_path / "d", kafka_listener=kafka) as server,
        httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(20, read=20)) as c,
    ):
        assert c.post("/v1/topics", json={"name": "gone", "partitions": 1}).status_code == 201
        with c.stream(
            "GET", "/v1/topics/gone/events", headers={"Accept": "text/event-stream"}
        ) as response:
            events = EventSource(response).iter_sse()
            assert next(events).event == "subscribed"
            records = [{"value": i} for i in range(3)]
            assert c.post("/v1/topics/gone/records", json={"records": records}).status_code == 200
            assert [next(events).event for _ in range(3)] == ["record"] * 3  # live deliveries
        with connect(f"{server.ws_url}/v1/topics/gone/ws?from=earliest", open_timeout=10) as ws:
            frames = [json.loads(ws.recv(timeout=10)) for _ in range(4)]
            assert [f["type"] for f in frames] == ["subscribed", "record", "record", "record"]
        assert c.get("/v1/topics/gone/partitions/0/records?offset=0").status_code == 200
        assert kafka_read(kafka, "gone", 3) == 3

        _, samples = scrape(server)
        delivered = {
            dict(labels)["via"]: count
            for (name, labels), count in samples.items()
            if name == "eddy_records_out_total" and dict(labels)["topic"] == "gone"
        }
        assert delivered == {"sse": 3, "websocket": 3, "http": 3, "kafka": 3}

        assert c.delete("/v1/topics/gone").status_code == 204
        _, samples = scrape(server)
        left = [k for k in samples if ("topic", "gone") in k[1]]
        assert not left, left

"""Fault injection: absurd topic configs at create and PATCH. Each is accepted (201/200) or
refused with 422 in the contract's shape, never a 5xx; the cleaner keeps running through all of
it (a canary topic is still cleaned and /readyz stays 200); and what was accepted is usable."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, serve_in_thread, wait_until
from tests.faults import trials

KEYS = ["retention.ms", "retention.bytes", "delete.retention.ms", "max.message.bytes"]
NASTY: list[Any] = [
    2**64 - 1,
    2**63,
    2**63 - 1,
    -(2**63),
    10**100,
    -2,
    -1,
    0,
    1,
    1.5,
    float("1e308"),
    True,
    None,
    "",
    "1000",
    "soon",
    [],
    {},
    {"nested": [1, 2]},
]
CONFIG_REQUESTS = 60
DAY_MS = 86_400_000


@pytest.fixture
def cleaning(tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(tmp_path / "data", retention_check_interval=0.05) as running:
        yield running


def random_config(rng: random.Random) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for _ in range(rng.randint(1, 3)):
        config[rng.choice(KEYS)] = rng.choice(NASTY)
    if rng.random() < 0.2:
        config["cleanup.policy"] = rng.choice(["compact", "delete,compact", "nope", 7])
    return config


def old_records_removed(client: httpx.Client) -> bool:
    """Produce an old record to the canary and see the cleaner remove it."""
    old = int(time.time() * 1000) - 2 * DAY_MS
    produced = client.post("/v1/topics/canary/records", json={"value": 1, "timestamp": old})
    offset = produced.json()["offsets"][0]["offset"]
    wait_until(
        lambda: client.get("/v1/topics/canary").json()["partitions"][0]["log_start_offset"] > offset
    )
    return True


@pytest.mark.parametrize("trial", trials(in_ci=1))
def test_absurd_configs_are_refused_or_harmless(cleaning: RunningServer, trial: int) -> None:
    rng = random.Random(trial)
    with cleaning.client() as client:
        created = client.post(
            "/v1/topics", json={"name": "canary", "config": {"retention.ms": DAY_MS}}
        )
        assert created.status_code == 201
        accepted = []
        for i in range(CONFIG_REQUESTS):
            config = random_config(rng)
            if rng.random() < 0.5:
                name = f"t{i}"
                response = client.post("/v1/topics", json={"name": name, "config": config})
                expected = {201, 422}
            else:
                name = "canary-patched"
                if client.get(f"/v1/topics/{name}").status_code == 404:
                    assert client.post("/v1/topics", json={"name": name}).status_code == 201
                response = client.patch(f"/v1/topics/{name}", json={"config": config})
                expected = {200, 422}
            assert response.status_code in expected, (config, response.status_code, response.text)
            if response.status_code == 422:
                assert response.json()["error"]["code"] == "invalid_request"
            else:
                accepted.append(name)
        assert old_records_removed(client)  # the cleaner went through every accepted config
        for name in accepted:  # and every accepted topic takes records (if small enough)
            produced = client.post(f"/v1/topics/{name}/records", json={"key": "k", "value": 1})
            assert produced.status_code in (200, 413), (name, produced.text)
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text
        assert not re.search(r"^eddy_background_errors_total\{.*\} [1-9]", metrics, re.M)
        assert not re.search(r'status="5\d\d"', metrics)

"""Fault injection (short version; the storage suite has the deep one): consumer-group commits
racing each other and produce traffic. Every commit is answered 200, none is a 5xx, and after a
restart each (group, partition) holds the last offset its one writer had confirmed."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server_process
from tests.faults import STARTUP, trials

TOPIC = "commits"
PARTITIONS = 4
WRITERS = 4
ROUNDS = 40


def committer(
    base_url: str,
    writer: int,
    rng: random.Random,
    last: dict[tuple[str, int], int],
    errors: list[str],
) -> None:
    """Commits to its own group (all partitions) and to the shared group (its own partition),
    with offsets that go up and down, as resets and rewinds do."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for _ in range(ROUNDS):
            own = {str(p): rng.randrange(100) for p in range(PARTITIONS)}
            shared = {str(writer): rng.randrange(100)}
            for group, offsets in ((f"g{writer}", own), ("shared", shared)):
                response = client.post(
                    f"/v1/groups/{group}/offsets", json={"topic": TOPIC, "offsets": offsets}
                )
                if response.status_code != 200:
                    errors.append(f"{group}: {response.status_code} {response.text}")
                    return
                for p, o in offsets.items():
                    last[(group, int(p))] = o


def producer(base_url: str, stop: threading.Event, errors: list[str]) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while not stop.is_set():
            response = client.post(
                f"/v1/topics/{TOPIC}/records",
                json={"records": [{"value": i, "partition": i} for i in range(PARTITIONS)]},
            )
            if response.status_code != 200:
                errors.append(f"produce: {response.status_code} {response.text}")
                return


# Found by the fault campaign: concurrent commits used to share one connection and collide
# ("cannot start a transaction within a transaction", 503); groups.db now has one writer.
@pytest.mark.parametrize("trial", trials(in_ci=1))
def test_racing_group_commits_all_land(tmp_path: Path, trial: int) -> None:
    data = tmp_path / "data"
    server = start_server_process(data, startup_timeout=STARTUP)
    last: dict[tuple[str, int], int] = {}
    errors: list[str] = []
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            created = client.post("/v1/topics", json={"name": TOPIC, "partitions": PARTITIONS})
            assert created.status_code == 201
            # offsets up to 100 must exist to be committed
            batch = [{"value": i, "partition": p} for p in range(PARTITIONS) for i in range(100)]
            assert client.post(f"/v1/topics/{TOPIC}/records", json={"records": batch}).is_success
        stop = threading.Event()
        background = threading.Thread(target=producer, args=(server.base_url, stop, errors))
        writers = [
            threading.Thread(
                target=committer,
                args=(server.base_url, w, random.Random(trial * 100 + w), last, errors),
            )
            for w in range(WRITERS)
        ]
        background.start()
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=60)
        stop.set()
        background.join(timeout=30)
        assert errors == []
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.output, server.output
    restarted = start_server_process(data, startup_timeout=STARTUP)
    try:
        with httpx.Client(base_url=restarted.base_url, timeout=10) as client:
            for group in {g for g, _ in last}:
                detail = client.get(f"/v1/groups/{group}").json()
                stored = {o["partition"]: o["committed_offset"] for o in detail["offsets"]}
                expected = {p: o for (g, p), o in last.items() if g == group}
                assert stored == expected, group
    finally:
        assert restarted.stop() == 0

"""Fault injection: SIGKILL under mixed idempotent load, with a ledger of acknowledged records.

REST producers (one batch in flight each) and WebSocket publishers (a window of records in
flight), all idempotent and all retrying whatever was not acknowledged, against a server that is
SIGKILLed at a random point and restarted on the same data dir. The clients carry on against the
restarted server, then finish. Afterwards every record sent is stored exactly once (everything
was retried until acknowledged, and a retry of a committed record gets its original ack), at the
offset its ack named, in each producer's order, with batches whole (tests/test_crash.py's
checks, plus "all of it").
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import ServerProcess, start_server_process, wait_until
from tests.faults import STARTUP, trials
from tests.test_crash import PARTITIONS, TOPIC, Ledger, check_records, record_acks

# What a publisher keeps in flight: more than REST's 5 remembered sequences, within the window
# a WebSocket publisher's producer id is remembered for (PRODUCER_WINDOW), so each resend of a
# committed record is answered with its original ack.
WS_WINDOW = 50
GIVE_UP = 60.0  # seconds a client retries one request before it reports an error


@dataclass
class Target:
    """The server the clients talk to; replaced on restart (it comes back on a new port)."""

    server: ServerProcess
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        with self.lock:
            return self.server.base_url

    @property
    def ws_url(self) -> str:
        with self.lock:
            return self.server.ws_url

    def replace(self, server: ServerProcess) -> None:
        with self.lock:
            self.server = server


def post_until_answered(target: Target, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST, retrying the same request while the server is down or restarting."""
    deadline = time.monotonic() + GIVE_UP
    while True:
        try:
            with httpx.Client(base_url=target.base_url, timeout=10) as client:
                return client.post(path, json=body)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def rest_producer(target: Target, ledger: Ledger, name: str, stop: threading.Event) -> None:
    """Idempotent batches (one sequence per request) until `stop`, each retried until acked."""
    rng = random.Random(name)
    seq = sequence = 0
    while not stop.is_set():
        size = rng.choice([1, 1, 2, 3, 5])
        values = [f"{name}-{seq + i}" for i in range(size)]
        records = [{"key": f"key-{rng.randrange(20)}", "value": v} for v in values]
        ledger.send(name, f"{name}/{sequence}", values, seq)
        body = {"records": records, "producer": {"id": name, "sequence": sequence}}
        try:
            response = post_until_answered(target, f"/v1/topics/{TOPIC}/records", body)
        except httpx.TransportError as exc:
            ledger.error(f"{name}: no answer within {GIVE_UP} s: {exc}")
            return
        if not record_acks(ledger, name, values, response):
            return
        seq += size
        sequence += 1


def ws_publisher(target: Target, ledger: Ledger, name: str, stop: threading.Event) -> None:
    """Idempotent pipelined publishing; after a lost connection, reconnects and resends every
    unacknowledged record with its sequence, until `stop` and nothing is unacknowledged."""
    rng = random.Random(name)
    next_seq = 0
    unacked: list[tuple[int, str, str]] = []  # (sequence, key, value), in order
    deadline = time.monotonic() + GIVE_UP

    def frame(sequence: int, key: str, value: str) -> str:
        return json.dumps({"id": sequence, "sequence": sequence, "key": key, "value": value})

    while True:
        try:
            url = f"{target.ws_url}/v1/topics/{TOPIC}/publish?producer_id={name}"
            with connect(url, open_timeout=5, max_queue=None) as ws:
                for pending in unacked:
                    ws.send(frame(*pending))
                while True:
                    while len(unacked) < WS_WINDOW and not stop.is_set():
                        pending = (next_seq, f"key-{rng.randrange(20)}", f"{name}-{next_seq}")
                        ledger.send(name, f"{name}/{next_seq}", [pending[2]], next_seq)
                        unacked.append(pending)
                        next_seq += 1
                        ws.send(frame(*pending))
                    if not unacked:
                        return
                    answer = json.loads(ws.recv(timeout=10))
                    if answer.get("type") != "ack" or answer.get("id") != unacked[0][0]:
                        ledger.error(f"{name}: expected the ack of {unacked[0][0]}, got {answer}")
                        return
                    ledger.ack(unacked.pop(0)[2], answer["partition"], answer["offset"])
                    deadline = time.monotonic() + GIVE_UP
        except (ConnectionClosed, OSError):  # killed, restarting (refused), or a timeout
            if time.monotonic() > deadline:
                ledger.error(f"{name}: no ack for {GIVE_UP} s")
                return
            time.sleep(0.05)


def run_trial(data: Path, producers: int, publishers: int, kill_after: int, seed: int) -> Ledger:
    server = start_server_process(data, startup_timeout=STARTUP)
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        created = client.post("/v1/topics", json={"name": TOPIC, "partitions": PARTITIONS})
        assert created.status_code == 201, created.text
    target = Target(server)
    ledger = Ledger()
    stop = threading.Event()
    threads = [
        *(
            threading.Thread(target=rest_producer, args=(target, ledger, f"rest{i}", stop))
            for i in range(producers)
        ),
        *(
            threading.Thread(target=ws_publisher, args=(target, ledger, f"ws{i}", stop))
            for i in range(publishers)
        ),
    ]
    restarted: ServerProcess | None = None
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(ledger.acked) >= kill_after or ledger.errors, timeout=60)
        time.sleep(random.Random(seed).uniform(0, 0.05))  # somewhere inside a commit
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        acked_at_kill = len(ledger.acked)
        with ledger.lock:
            in_flight = len(ledger.sent) - len(ledger.acked)
        restarted = start_server_process(data, startup_timeout=STARTUP)
        target.replace(restarted)
        # the clients get through to the restarted server and go on
        wait_until(lambda: len(ledger.acked) >= acked_at_kill + 200 or ledger.errors, timeout=60)
        stop.set()
        for thread in threads:
            thread.join(timeout=GIVE_UP + 15)
        assert not any(t.is_alive() for t in threads), "a client is stuck"
        assert ledger.errors == []
        with httpx.Client(base_url=restarted.base_url, timeout=10) as client:
            check_records(client, ledger)
        unacked = set(ledger.sent) - set(ledger.acked)
        assert unacked == set(), f"sent, retried, never acknowledged: {sorted(unacked)[:10]}"
        # the figures docs/guarantees.md quotes (pytest -s shows them)
        print(
            f"\nfault-crash: {producers} REST + {publishers} WebSocket producers, killed after "
            f"{acked_at_kill} acks with {in_flight} records in flight; {len(ledger.acked)} "
            "acknowledged in all, 0 lost, 0 duplicated"
        )
    finally:
        stop.set()
        server.stop(signal.SIGKILL)
        if restarted is not None:
            assert restarted.stop() == 0
            assert "Traceback" not in restarted.output, restarted.output
    return ledger


@pytest.mark.parametrize("trial", trials(in_ci=1))
def test_sigkill_under_idempotent_retrying_load_loses_and_duplicates_nothing(
    tmp_path: Path, trial: int
) -> None:
    rng = random.Random(trial)
    ci = trial == 0
    ledger = run_trial(
        tmp_path / "data",
        producers=3 if ci else 8,
        publishers=2,
        kill_after=rng.randrange(100, 600 if ci else 3000),
        seed=trial,
    )
    assert len(ledger.acked) == len(ledger.sent) > 0

"""Crash safety: SIGKILL the real server while producers, publishers and a group member are busy,
restart it on the same data dir, and check that nothing acknowledged was lost.

Each run kills `python -m eddy serve` at a different point (after a different number of
acknowledged records, plus a random few milliseconds), then checks on the restarted server:
every acknowledged record is at its acknowledged offset with its value; offsets are dense
(0..high_watermark-1, every one fetchable); nothing stored was never sent, and batches are whole;
one client's records keep the order it sent them in; records pushed to a consumer were committed;
confirmed group commits are intact; offsets continue after the restart.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import ServerProcess, fetch_all, start_server_process, wait_until

TOPIC = "crash"
PARTITIONS = 3
GROUP = "crash-workers"
RESET_WHILE_SENDING = "reset while sending"


@dataclass
class Sent:
    """One record a client sent: who sent it, in which request (batch), and in what order."""

    writer: str
    seq: int
    batch: str


@dataclass
class Ledger:
    """Everything the clients sent and what the server acknowledged (shared by the threads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, Sent] = field(default_factory=dict)  # value -> who sent it
    batches: dict[str, list[str]] = field(default_factory=dict)  # request -> its values
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # value -> (partition, offset)
    confirmed_commits: dict[int, int] = field(default_factory=dict)  # partition -> offset
    delivered: dict[tuple[int, int], str] = field(default_factory=dict)  # pushed to consumers
    closes: dict[str, int | str | None] = field(default_factory=dict)  # WebSocket -> close code
    errors: list[str] = field(default_factory=list)  # anything a client did not expect

    def send(self, writer: str, batch: str, values: list[str], first_seq: int) -> None:
        with self.lock:
            self.batches[batch] = values
            for i, value in enumerate(values):
                self.sent[value] = Sent(writer, first_seq + i, batch)

    def ack(self, value: str, partition: int, offset: int) -> None:
        with self.lock:
            self.acked[value] = (partition, offset)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def closed(self, name: str, ws: ClientConnection, sending: bool = False) -> None:
        """Note the close code the server sent: None if it sent no close frame, RESET_WHILE_SENDING
        if our own send failed first (then the library may never read a close frame that had
        arrived: it shuts the socket down on a failed send)."""
        ws.recv_events_thread.join(timeout=5)  # let it handle what has arrived
        received = ws.protocol.close_rcvd
        with self.lock:
            if received is not None:
                self.closes[name] = received.code
            else:
                self.closes[name] = RESET_WHILE_SENDING if sending else None


def record_acks(ledger: Ledger, name: str, values: list[str], response: httpx.Response) -> bool:
    """Note a produce response's offsets in the ledger; False (and an error) if it failed."""
    if response.status_code != 200:
        ledger.error(f"{name}: {response.status_code} {response.text}")
        return False
    offsets = response.json()["offsets"]
    if len(offsets) != len(values):
        ledger.error(f"{name}: {len(values)} records, {len(offsets)} offsets")
    for value, meta in zip(values, offsets, strict=False):
        ledger.ack(value, meta["partition"], meta["offset"])
    return True


def rest_producer(server: ServerProcess, ledger: Ledger, name: str, stop: threading.Event) -> None:
    """Single records and small atomic batches, all keyed, until the server goes away."""
    rng = random.Random(name)
    seq = 0
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        while not stop.is_set():
            size = rng.choice([1, 1, 2, 3, 5])
            values = [f"{name}-{seq + i}" for i in range(size)]
            records = [{"key": f"key-{rng.randrange(20)}", "value": v} for v in values]
            body: dict[str, Any] = records[0] if size == 1 else {"records": records}
            ledger.send(name, f"{name}/{seq}", values, seq)
            seq += size
            try:
                response = c.post(f"/v1/topics/{TOPIC}/records", json=body)
            except httpx.TransportError:
                return  # the server went away (in flight or refused): not acknowledged
            if not record_acks(ledger, name, values, response):
                return


def ws_publisher(server: ServerProcess, ledger: Ledger, name: str, stop: threading.Event) -> None:
    """Pipelined publishing (1-10 frames in flight) with per-record acks, until the server
    goes away."""
    rng = random.Random(name)
    seq = 0
    url = f"{server.ws_url}/v1/topics/{TOPIC}/publish"
    ws: ClientConnection | None = None
    sending = False
    try:
        # max_queue=None: the library reads everything the server sends as it arrives (so a
        # close frame is never left unread in the socket when the server closes the TCP
        # connection).
        with connect(url, open_timeout=10, max_queue=None) as ws:
            while not stop.is_set():
                window = rng.randint(1, 10)
                values = [f"{name}-{seq + i}" for i in range(window)]
                for i, value in enumerate(values):
                    ledger.send(name, f"{name}/{seq + i}", [value], seq + i)
                    frame = {"id": seq + i, "key": f"key-{rng.randrange(20)}", "value": value}
                    sending = True
                    ws.send(json.dumps(frame))
                    sending = False
                for i, value in enumerate(values):
                    answer = json.loads(ws.recv(timeout=10))
                    if answer.get("type") != "ack" or answer.get("id") != seq + i:
                        ledger.error(f"{name}: expected the ack of {seq + i}, got {answer}")
                        return
                    ledger.ack(value, answer["partition"], answer["offset"])
                seq += window
    except TimeoutError:  # (before OSError, its base class)
        ledger.error(f"{name}: no ack within 10 s")
    except (ConnectionClosed, OSError):  # the server was killed or stopped
        if ws is not None:
            ledger.closed(name, ws, sending)


def group_member(server: ServerProcess, ledger: Ledger, stop: threading.Event) -> None:
    """Consumes everything and commits every 10 records; remembers the confirmed commits."""
    url = f"{server.ws_url}/v1/topics/{TOPIC}/ws?group={GROUP}&from=earliest"
    position: dict[int, int] = {}
    since_commit = 0
    ws: ClientConnection | None = None
    sending = False
    try:
        with connect(url, open_timeout=10, max_queue=None) as ws:
            while not stop.is_set():
                try:
                    frame: dict[str, Any] = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    continue
                kind = frame["type"]
                if kind == "record":
                    partition, offset = frame["partition"], frame["offset"]
                    if offset != position.get(partition, 0):
                        ledger.error(f"member: got {partition}/{offset}, expected {position}")
                    position[partition] = offset + 1
                    with ledger.lock:
                        ledger.delivered[(partition, offset)] = frame["value"]
                    since_commit += 1
                    if since_commit >= 10:
                        since_commit = 0
                        offsets = {str(p): o for p, o in position.items()}
                        sending = True
                        ws.send(json.dumps({"type": "commit", "offsets": offsets}))
                        sending = False
                elif kind == "committed":
                    with ledger.lock:
                        for p, o in frame["offsets"].items():
                            confirmed = ledger.confirmed_commits.get(int(p), 0)
                            ledger.confirmed_commits[int(p)] = max(confirmed, o)
                elif kind == "assignment":
                    if sorted(frame["partitions"]) != [str(p) for p in range(PARTITIONS)]:
                        ledger.error(f"member: unexpected assignment {frame}")
                else:
                    ledger.error(f"member: unexpected frame {frame}")
    except (ConnectionClosed, OSError):
        if ws is not None:
            ledger.closed("member", ws, sending)


def load_threads(
    server: ServerProcess, ledger: Ledger, stop: threading.Event
) -> list[threading.Thread]:
    """Create the topic; return (not started) 3 REST producers, 2 WebSocket publishers and a
    group member, all writing to `ledger` until `stop` is set."""
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        created = c.post("/v1/topics", json={"name": TOPIC, "partitions": PARTITIONS})
        assert created.status_code == 201, created.text
    return [
        *(
            threading.Thread(target=rest_producer, args=(server, ledger, f"rest{i}", stop))
            for i in range(3)
        ),
        *(
            threading.Thread(target=ws_publisher, args=(server, ledger, f"ws{i}", stop))
            for i in range(2)
        ),
        threading.Thread(target=group_member, args=(server, ledger, stop)),
    ]


def run_and_kill(data: Path, sync: str, kill_after: int, seed: int) -> Ledger:
    """Start the server, load it, SIGKILL it after `kill_after` acknowledged records."""
    server = start_server_process(data, "--sync", sync)
    ledger = Ledger()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        threads += load_threads(server, ledger, stop)
        for thread in threads:
            thread.start()
        wait_until(lambda: len(ledger.acked) >= kill_after or ledger.errors, timeout=30)
        time.sleep(random.Random(seed).uniform(0, 0.05))  # somewhere inside a commit
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
    finally:
        stop.set()
        server.stop(signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "a client did not notice the kill"
    assert server.process.returncode == -signal.SIGKILL
    assert ledger.errors == []
    return ledger


def check_records(c: httpx.Client, ledger: Ledger) -> None:
    """The stored log against what the clients sent and were told."""
    topic = c.get(f"/v1/topics/{TOPIC}")
    assert topic.status_code == 200, topic.text
    stored: dict[str, tuple[int, int]] = {}
    by_writer: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for info in topic.json()["partitions"]:
        partition, high_watermark = info["partition"], info["high_watermark"]
        assert info["log_start_offset"] == 0
        records = fetch_all(c, TOPIC, partition)
        # dense: every offset below the high watermark is there, once
        assert [r["offset"] for r in records] == list(range(high_watermark)), partition
        for r in records:
            value = r["value"]
            assert value in ledger.sent, f"stored a record nobody sent: {r}"
            assert value not in stored, f"stored twice: {value}"
            stored[value] = (partition, r["offset"])
            sent = ledger.sent[value]
            by_writer[(sent.writer, partition)].append((sent.seq, r["offset"]))
    lost = {v: at for v, at in ledger.acked.items() if stored.get(v) != at}
    assert lost == {}, f"acknowledged records lost or moved: {dict(list(lost.items())[:10])}"
    # consumers are only sent committed records: each one they saw is still there
    at_offset = {at: value for value, at in stored.items()}
    unstored = {at: v for at, v in ledger.delivered.items() if at_offset.get(at) != v}
    assert unstored == {}, f"records delivered, then lost: {dict(list(unstored.items())[:10])}"
    # batches are atomic: all of a request's records, or none
    for batch, values in ledger.batches.items():
        present = [v in stored for v in values]
        assert all(present) or not any(present), f"batch {batch} is partly stored: {present}"
    # one client's records keep their order within a partition
    for (writer, partition), seq_offsets in by_writer.items():
        offsets = [offset for _, offset in sorted(seq_offsets)]
        assert offsets == sorted(offsets), f"{writer} on {partition} committed out of order"
    assert len(stored) >= len(ledger.acked) > 0


def check_group(c: httpx.Client, ledger: Ledger) -> None:
    """Every commit the server confirmed is still there (or a later one)."""
    response = c.get(f"/v1/groups/{GROUP}")
    if not ledger.confirmed_commits:
        assert response.status_code in (200, 404), response.text
        return
    assert response.status_code == 200, response.text
    committed = {o["partition"]: o["committed_offset"] for o in response.json()["offsets"]}
    for partition, confirmed in ledger.confirmed_commits.items():
        assert committed.get(partition) is not None, (partition, committed)
        assert committed[partition] >= confirmed, (partition, committed, ledger.confirmed_commits)


def check_after_restart(data: Path, ledger: Ledger) -> None:
    server = start_server_process(data)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            check_records(c, ledger)
            check_group(c, ledger)
            # offsets continue after the last stored one (never reused)
            topic = c.get(f"/v1/topics/{TOPIC}").json()
            for p in topic["partitions"]:
                after = c.post(
                    f"/v1/topics/{TOPIC}/records",
                    json={"value": "after", "partition": p["partition"]},
                )
                assert after.status_code == 200, after.text
                assert after.json()["offsets"][0]["offset"] == p["high_watermark"]
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.output, server.output


@pytest.mark.parametrize(
    ("sync", "kill_after"),
    [("full", 60), ("full", 400), ("full", 1200), ("full", 2500), ("normal", 1500)],
)
def test_sigkill_mid_stream_loses_nothing_acknowledged(
    tmp_path: Path, sync: str, kill_after: int
) -> None:
    data = tmp_path / "data"
    ledger = run_and_kill(data, sync, kill_after, seed=kill_after)
    check_after_restart(data, ledger)

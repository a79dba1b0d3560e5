"""Fault injection: 1,000 Server-Sent Events clients in the middle of their replay when the server
is SIGKILLed; each reconnects with `Last-Event-ID` (as a browser's EventSource does) to the
restarted server, and records produced after the restart reach them too.

What must hold: every client receives every stored record exactly once (nothing lost, nothing
repeated across the two streams), in offset order per partition.

The clients are one asyncio loop of plain sockets in a thread (HTTP/1.1 and SSE parsed by hand:
a thousand httpx streams would need more CPU than the server under test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import fetch_all, free_port, start_server_process, wait_until
from tests.faults import STARTUP, trials

CLIENTS = 1_000
PARTITIONS = 4
BEFORE = 100  # records produced before the kill
AFTER = 50  # records produced after the restart
TOPIC = "resume"


@dataclass
class Client:
    name: int
    last_id: str | None = None
    seen: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset) in order
    streams: int = 0  # streams opened (2 after the restart: the first, and the resumed one)
    errors: list[str] = field(default_factory=list)


async def read_stream(host: str, port: int, client: Client) -> None:
    """One SSE stream until it ends (the server goes away)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        resume = f"Last-Event-ID: {client.last_id}\r\n" if client.last_id else ""
        query = "" if client.last_id else "?from=earliest"
        writer.write(
            f"GET /v1/topics/{TOPIC}/events{query} HTTP/1.1\r\nHost: {host}\r\n"
            f"Accept: text/event-stream\r\n{resume}\r\n".encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        if status != 200:
            raise ConnectionError(f"status {status}")  # (e.g. 503 while starting): retried
        client.streams += 1
        chunked = "transfer-encoding: chunked" in head
        buffer = b""
        while True:
            if chunked:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    return
                data = await reader.readexactly(size + 2)
                buffer += data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    return
                buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                take(client, event.decode())
    finally:
        writer.close()


def take(client: Client, event: str) -> None:
    fields: dict[str, str] = {}
    for line in event.split("\n"):
        if line.startswith(":"):
            continue  # keep-alive comment
        name, _, value = line.partition(": ")
        fields[name] = value
    if "id" in fields:
        client.last_id = fields["id"]
    if fields.get("event") == "record":
        record = json.loads(fields["data"])
        client.seen.append((record["partition"], record["offset"]))


async def run_client(host: str, port: int, client: Client, stop: asyncio.Event) -> None:
    """Stream, and reconnect with Last-Event-ID whenever the stream ends, until `stop`."""
    rng = random.Random(client.name)
    while not stop.is_set():
        # (the server went away mid-stream, or is not back yet)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
            await read_stream(host, port, client)
        # (EventSource waits about 3 s; a shorter, jittered wait keeps the test short)
        await asyncio.sleep(0.2 + rng.random() * 0.5)


def clients_thread(
    port: int, clients: list[Client], ready: threading.Event, stop: threading.Event
) -> None:
    async def main() -> None:
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(run_client("127.0.0.1", port, c, stopping)) for c in clients]
        ready.set()
        await asyncio.to_thread(stop.wait)
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


@pytest.mark.parametrize("trial", trials(1))
def test_sse_clients_resume_with_last_event_id_after_a_restart(tmp_path: Path, trial: int) -> None:
    rng = random.Random(trial)
    data, port = tmp_path / "data", free_port()
    server = start_server_process(data, port=port, startup_timeout=STARTUP)
    clients = [Client(n) for n in range(CLIENTS)]
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=clients_thread, args=(port, clients, ready, stop))
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as rest:
            created = rest.post("/v1/topics", json={"name": TOPIC, "partitions": PARTITIONS})
            assert created.status_code == 201, created.text
            records = [{"value": i} for i in range(BEFORE)]
            produced = rest.post(f"/v1/topics/{TOPIC}/records", json={"records": records})
            assert produced.status_code == 200, produced.text
        thread.start()
        assert ready.wait(30)
        # killed when the clients have received a share of what is there: most of them are in
        # the middle of their replay
        share = rng.uniform(0.2, 0.6)
        wait_until(lambda: sum(len(c.seen) for c in clients) >= share * CLIENTS * BEFORE, 60)
        server.stop(signal.SIGKILL)
        at_kill = sum(len(c.seen) for c in clients)
        streaming = sum(1 for c in clients if c.streams > 0)
        server = start_server_process(data, port=port, startup_timeout=STARTUP)
        with httpx.Client(base_url=server.base_url, timeout=30) as rest:
            records = [{"value": i} for i in range(BEFORE, BEFORE + AFTER)]
            produced = rest.post(f"/v1/topics/{TOPIC}/records", json={"records": records})
            assert produced.status_code == 200, produced.text
            wait_until(lambda: all(len(c.seen) >= BEFORE + AFTER for c in clients), 120)
            stored = sorted(
                (p, r["offset"]) for p in range(PARTITIONS) for r in fetch_all(rest, TOPIC, p)
            )
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=30)
        server.stop()
    assert len(stored) == BEFORE + AFTER
    lost = repeated = 0
    for client in clients:
        assert client.errors == []
        got = client.seen
        repeated += len(got) - len(set(got))
        lost += len(set(stored) - set(got))
        for p in range(PARTITIONS):
            offsets = [o for q, o in got if q == p]
            assert offsets == sorted(offsets), (client.name, p)
    resumed = sum(1 for c in clients if c.streams >= 2)
    assert lost == 0 and repeated == 0
    assert resumed >= streaming  # each stream the kill cut was resumed
    print(
        f"sse trial {trial}: {CLIENTS} clients, {at_kill} of {CLIENTS * BEFORE} deliveries done "
        f"at the kill, {resumed} resumed with Last-Event-ID; lost {lost}, repeated {repeated}"
    )

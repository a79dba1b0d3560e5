"""librdkafka producer throughput through the Kafka protocol listener, beside REST batch produce
on the same server in the same run (issue 15's benchmark row).

    .venv/bin/python -m bench.kafka_produce            # about 1 minute
    .venv/bin/python -m bench.kafka_produce --quick    # about 30 s

One `eddy serve --sync full --kafka-listener` on loopback. Baseline: REST batch produce as in
bench.run's measurement 2 (1,000 records of ~70-byte JSON values per request, 4 keep-alive
connections). Kafka: one confluent-kafka (librdkafka) producer in its own process sending the
same records (acks=all, linger.ms=5, uncompressed and lz4), counting the records acknowledged
inside the measured window. Prints one markdown table with each side's CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing.connection
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    child_main,
    eddy_server,
    free_port,
    machine_busy_seconds,
    self_cpu_seconds,
    spawn_child,
    wait_until,
)
from bench.sections.http_produce import batch_bodies, batch_records, measure_http
from bench.sections.servers import create_topic


@dataclass(frozen=True)
class KafkaSpec:
    bootstrap: str
    topic: str
    records: list[tuple[str, bytes]]
    compression: str
    start_at: float
    warmup: float
    duration: float


@dataclass(frozen=True)
class KafkaResult:
    records: int
    errors: int
    cpu_seconds: float


def kafka_worker(conn: multiprocessing.connection.Connection, spec: KafkaSpec) -> None:
    def body() -> KafkaResult:
        from confluent_kafka import Producer

        producer = Producer(
            {
                "bootstrap.servers": spec.bootstrap,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": spec.compression,
                "queue.buffering.max.messages": 200_000,
            }
        )
        counted = {"records": 0, "errors": 0}
        window = [spec.start_at + spec.warmup, spec.start_at + spec.warmup + spec.duration]

        def delivered(err: Any, _message: Any) -> None:
            if err is not None:
                counted["errors"] += 1
            elif window[0] <= time.time() < window[1]:
                counted["records"] += 1

        wait_until(spec.start_at)
        cpu_from = 0.0
        n = 0
        while time.time() < window[1]:
            if cpu_from == 0.0 and time.time() >= window[0]:
                cpu_from = self_cpu_seconds()
            key, value = spec.records[n % len(spec.records)]
            try:
                producer.produce(spec.topic, value, key, on_delivery=delivered)
                n += 1
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.01)
            if n % 1000 == 0:
                producer.poll(0)
        cpu = self_cpu_seconds() - cpu_from
        producer.flush(30)
        return KafkaResult(counted["records"], counted["errors"], cpu)

    child_main(conn, body)


def measure_kafka(
    server: Any,
    bootstrap: str,
    topic: str,
    records: list[tuple[str, bytes]],
    cfg: argparse.Namespace,
    compression: str,
) -> dict[str, float]:
    start_at = time.time() + 1.5
    child = spawn_child(
        kafka_worker,
        KafkaSpec(bootstrap, topic, records, compression, start_at, cfg.warmup, cfg.duration),
    )
    try:
        wait_until(start_at + cfg.warmup)
        cpu_from, busy_from = server.cpu_seconds(), machine_busy_seconds()
        wait_until(start_at + cfg.warmup + cfg.duration)
        cpu_to, busy_to = server.cpu_seconds(), machine_busy_seconds()
        result: KafkaResult = child.receive(cfg.duration + cfg.warmup + 90)
    finally:
        child.stop()
    server_cpu = (cpu_to - cpu_from) / cfg.duration
    client_cpu = result.cpu_seconds / cfg.duration
    return {
        "records_per_s": result.records / cfg.duration,
        "errors": result.errors,
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "other_cpu": max(0.0, (busy_to - busy_from) / cfg.duration - server_cpu - client_cpu),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    cfg = parser.parse_args(argv)
    cfg.warmup, cfg.duration = (1.0, 3.0) if cfg.quick else (1.0, 6.0)
    load_before = os.getloadavg()
    batches = [batch_records(1000, b) for b in range(4)]
    records = [r for batch in batches for r in batch]
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="eddy-bench-kafka-") as tmp_dir:
        tmp = Path(tmp_dir)
        kafka_port = free_port()
        server = eddy_server(
            tmp / "data", tmp, "full", ["--kafka-listener", f"127.0.0.1:{kafka_port}"]
        )
        server.start()
        try:
            create_topic(server, "rest")
            create_topic(server, "kafka")
            create_topic(server, "kafka-lz4")
            rest = measure_http(
                server,
                "/v1/topics/rest/records",
                batch_bodies(batches),
                1000,
                4,
                1,
                cfg.warmup,
                cfg.duration,
            )
            rows.append(
                (
                    "REST batch produce (baseline): 1,000 records/request, 4 connections",
                    {
                        "records_per_s": rest.records_per_s,
                        "errors": sum(rest.errors.values())
                        + sum(n for s, n in rest.statuses.items() if s != 200),
                        "server_cpu": rest.server_cpu,
                        "client_cpu": rest.loadgen_cpu,
                        "other_cpu": rest.other_cpu,
                    },
                )
            )
            bootstrap = f"127.0.0.1:{kafka_port}"
            for topic, compression in (("kafka", "none"), ("kafka-lz4", "lz4")):
                measured = measure_kafka(server, bootstrap, topic, records, cfg, compression)
                rows.append(
                    (
                        f"librdkafka producer via --kafka-listener, acks=all, linger.ms=5, "
                        f"compression {compression}",
                        measured,
                    )
                )
        finally:
            server.stop()
    baseline = rows[0][1]["records_per_s"] or float("nan")
    lines = [
        f"Kafka listener produce throughput (--sync full, {cfg.duration:.0f} s windows; "
        f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}, 2 cores)",
        "",
        "| Producer | records/s | ratio to REST batch | errors | Eddy CPU | client CPU "
        "| other CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {m['records_per_s']:,.0f} | {m['records_per_s'] / baseline:.2f} | "
            f"{m['errors']:.0f} | {m['server_cpu']:.0%} | {m['client_cpu']:.0%} | "
            f"{m['other_cpu']:.0%} |"
        )
    table = "\n".join(lines)
    print(table)
    output = cfg.output or Path(__file__).parent / "results" / "kafka-produce.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

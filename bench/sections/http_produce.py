"""HTTP produce load as several sections measure it: the load-generator processes against one
server, the measured window's throughput, latency and CPU, and the request bodies (single
records, batches)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from bench.common import ServerProcess, machine_busy_seconds, percentile, spawn_child, wait_until
from bench.httpload import LoadResult, LoadSpec, load_worker, merge_latencies, summarize
from bench.sections.config import Config
from bench.sections.report import Report


@dataclass
class HttpMeasurement:
    requests_per_s: float
    records_per_s: float
    p50_ns: float
    p99_ns: float
    statuses: dict[int, int]
    errors: dict[str, int]
    server_cpu: float
    loadgen_cpu: float
    other_cpu: float


def measure_http(
    server: ServerProcess,
    path: str,
    bodies: list[bytes],
    records_per_body: int,
    connections: int,
    processes: int,
    warmup: float,
    duration: float,
) -> HttpMeasurement:
    start_at = time.time() + 1.5  # time for the client processes to start and connect
    per_process = [
        connections // processes + (i < connections % processes) for i in range(processes)
    ]
    children = [
        spawn_child(
            load_worker,
            LoadSpec(server.port, path, bodies, records_per_body, n, start_at, warmup, duration),
        )
        for n in per_process
    ]
    try:
        wait_until(start_at + warmup)
        cpu_from, busy_from = server.cpu_seconds(), machine_busy_seconds()
        wait_until(start_at + warmup + duration)
        cpu_to, busy_to = server.cpu_seconds(), machine_busy_seconds()
        results: list[LoadResult] = [c.receive(duration + warmup + 90) for c in children]
    finally:
        for c in children:
            c.stop()
    total = summarize(results)
    if total["late_start"] > 0.5:
        total["errors"]["client_started_late"] = 1
    latencies = merge_latencies(results)
    return HttpMeasurement(
        requests_per_s=total["requests"] / duration,
        records_per_s=total["records"] / duration,
        p50_ns=percentile(latencies, 0.50),
        p99_ns=percentile(latencies, 0.99),
        statuses=total["statuses"],
        errors=total["errors"],
        server_cpu=(cpu_to - cpu_from) / duration,
        loadgen_cpu=total["cpu_seconds"] / duration,
        other_cpu=max(
            0.0, (busy_to - busy_from - (cpu_to - cpu_from) - total["cpu_seconds"]) / duration
        ),
    )


def http_problems(m: HttpMeasurement) -> str:
    bad = {s: n for s, n in m.statuses.items() if s != 200}
    parts = [f"{n}x HTTP {s}" for s, n in sorted(bad.items())]
    parts += [f"{n}x {name}" for name, n in sorted(m.errors.items())]
    return ", ".join(parts) or "0"


def single_bodies() -> list[bytes]:
    return [
        orjson.dumps(
            {
                "key": f"sensor-{i:04d}",
                "value": {"sensor": f"s-{i:04d}", "reading": 21.375, "seq": i, "unit": "celsius"},
            }
        )
        for i in range(64)
    ]


def least_disturbed(
    label: str, runs: list[HttpMeasurement], report: Report, unit: str = "req/s"
) -> HttpMeasurement:
    """Of repeated measurements, the one with the least other activity on the machine."""
    if len(runs) > 1:
        report.details.append(
            f"{label}: repetitions "
            + ", ".join(
                f"{r.requests_per_s if unit == 'req/s' else r.records_per_s:,.0f} {unit} "
                f"(other CPU {r.other_cpu:.2f})"
                for r in runs
            )
            + "; the table shows the one with the least other CPU."
        )
    return min(runs, key=lambda r: r.other_cpu)


def batch_records(batch_size: int, batch_number: int) -> list[tuple[str, bytes]]:
    """(key, compact JSON value) of one batch; values are ~70 bytes."""
    out = []
    for i in range(batch_size):
        n = batch_number * batch_size + i
        value = {
            "sensor": f"s-{n % 997:04d}",
            "reading": round(20 + (n % 100) / 8, 3),
            "seq": n,
            "unit": "celsius",
        }
        out.append((f"sensor-{n % 997:04d}", orjson.dumps(value)))
    return out


def batch_bodies(batches: list[list[tuple[str, bytes]]]) -> list[bytes]:
    """The produce request body of each batch."""
    return [
        b'{"records":['
        + b",".join(b'{"key":"%s","value":%s}' % (k.encode(), v) for k, v in batch)
        + b"]}"
        for batch in batches
    ]


def measure_batch_rest(
    cfg: Config, eddy: ServerProcess, topic: str, bodies: list[bytes]
) -> HttpMeasurement:
    return measure_http(
        eddy,
        f"/v1/topics/{topic}/records",
        bodies,
        cfg.batch_size,
        cfg.batch_connections,
        1,
        cfg.warmup_seconds,
        cfg.batch_seconds,
    )

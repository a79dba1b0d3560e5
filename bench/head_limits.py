"""What the bounded request head costs: Eddy's HTTP protocol class against stock uvicorn.

    .venv/bin/python -m bench.head_limits [--seconds 5] [--rounds 3] [--connections 32]

Serves `bench/raw_asgi.py` (the produce baseline: read the body, answer a small JSON) with
uvicorn's own httptools protocol and with `eddy.app.http_protocol.EddyHttpProtocol` (head size,
header count and head deadline checks), alternating the two each round, and drives each with
`wrk` (POSTs of a ~60-byte JSON record on keep-alive connections). Prints a markdown table: the
median round of each side, the ratio, and the server's CPU per request.

On a busy machine the end-to-end figures wander more than the overhead itself, so a second
table measures it in-process: the same request fed to one connection of each protocol class
(its ASGI app, `raw_asgi`, running on the loop as under uvicorn), in paired rounds; the median
of the paired differences is the cost of the checks per request. Needs `wrk` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, free_port, machine_busy_seconds, pid_cpu_seconds, run_async

PROTOCOLS = {
    "uvicorn httptools (baseline)": "httptools",
    "Eddy head limits": "eddy.app.http_protocol:EddyHttpProtocol",
}
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"records":[{"key":"AAPL","value":{"price":187.3,"n":12345}}]}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Round:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_us_per_request: float
    machine_busy: float  # share of all CPUs busy during the round


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def measure(http: str, seconds: float, connections: int, script: Path) -> Round:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.raw_asgi:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--http",
            http,
        ],
        cwd=REPO_ROOT,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/topics/produce/records"
        deadline = time.monotonic() + 20
        while not _listening(port):
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        cpu, busy, started = pid_cpu_seconds(server.pid), machine_busy_seconds(), time.monotonic()
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        elapsed = time.monotonic() - started
        cpu = pid_cpu_seconds(server.pid) - cpu
        busy = (machine_busy_seconds() - busy) / (elapsed * (os.cpu_count() or 1))
    finally:
        server.terminate()
        server.wait(timeout=10)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Round(
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        p99_ms=_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        server_cpu_us_per_request=cpu / max(total, 1) * 1e6,
        machine_busy=busy,
    )


class _MemoryTransport(asyncio.Transport):
    """Stands in for the socket in the in-process measurement: counts writes, drops data."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.answered = asyncio.Event()  # set when a response (head, then body) is written
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.writes % 2 == 0:
            self.answered.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


BODY = b'{"records":[{"key":"AAPL","value":{"price":187.3,"n":12345}}]}'
REQUEST = (
    b"POST /v1/topics/produce/records HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"User-Agent: bench\r\nAccept: */*\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
) + BODY


async def _in_process_us(protocol_class: type[asyncio.Protocol], requests: int) -> float:
    """CPU µs per request of one keep-alive connection answering `requests` requests."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from bench.raw_asgi import app

    config = Config(app=app, log_level="warning", access_log=False, lifespan="off")
    config.load()
    protocol = protocol_class(  # type: ignore[call-arg]
        config=config, server_state=ServerState(), app_state={}
    )
    transport = _MemoryTransport()
    protocol.connection_made(transport)
    started = time.process_time()
    for _ in range(requests):
        transport.answered.clear()
        protocol.data_received(REQUEST)
        await transport.answered.wait()
    return (time.process_time() - started) / requests * 1e6


def in_process(rounds: int, requests: int) -> tuple[float, float, float]:
    """(baseline µs/request, Eddy µs/request, median paired difference)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from eddy.app.http_protocol import EddyHttpProtocol

    async def measure_all() -> tuple[list[float], list[float]]:
        base, eddy = [], []
        for _ in range(rounds):
            gc.collect()
            base.append(await _in_process_us(HttpToolsProtocol, requests))
            gc.collect()
            eddy.append(await _in_process_us(EddyHttpProtocol, requests))
        return base, eddy

    base, eddy = run_async(measure_all())
    return (
        statistics.median(base),
        statistics.median(eddy),
        statistics.median(e - b for b, e in zip(base, eddy, strict=True)),
    )


def median_round(rounds: list[Round]) -> Round:
    ranked = sorted(rounds, key=lambda r: r.requests_per_s)
    return ranked[len(ranked) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--in-process-rounds", type=int, default=30)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    load = os.getloadavg()
    results: dict[str, list[Round]] = {name: [] for name in PROTOCOLS}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        for _ in range(args.rounds):
            for name, http in PROTOCOLS.items():
                results[name].append(measure(http, args.seconds, args.connections, script))
    base = median_round(results["uvicorn httptools (baseline)"])
    print(
        f"{args.rounds} alternating rounds of {args.seconds:g} s, {args.connections} keep-alive "
        f"connections, load average before {load[0]:.1f}/{load[1]:.1f}; median round shown\n"
    )
    print("| protocol | req/s | ratio | p50 ms | p99 ms | server CPU µs/req | machine busy |")
    print("|---|---|---|---|---|---|---|")
    for name, rounds in results.items():
        r = median_round(rounds)
        print(
            f"| {name} | {r.requests_per_s:,.0f} | {r.requests_per_s / base.requests_per_s:.2f} "
            f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.server_cpu_us_per_request:.1f} "
            f"| {r.machine_busy:.0%} |"
        )
    for name, rounds in results.items():
        each = ", ".join(f"{r.requests_per_s:,.0f}" for r in rounds)
        cpu = statistics.median(r.server_cpu_us_per_request for r in rounds)
        print(f"\n{name}: req/s per round {each}; median CPU {cpu:.1f} µs/request", end="")
    print("\n")
    base_us, eddy_us, extra_us = in_process(args.in_process_rounds, 4000)
    print(
        f"In process, {args.in_process_rounds} paired rounds of 4,000 requests on one "
        "connection (CPU time; median round; the difference is the median of the pairs)\n"
    )
    print("| protocol | CPU µs/request | ratio |")
    print("|---|---|---|")
    print(f"| uvicorn httptools (baseline) | {base_us:.1f} | 1.00 |")
    print(f"| Eddy head limits | {eddy_us:.1f} | {eddy_us / base_us:.2f} |")
    print(f"\nCost of the checks: {extra_us:+.1f} µs per request")


if __name__ == "__main__":
    main()

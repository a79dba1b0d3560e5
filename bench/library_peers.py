"""Would another well-kept library lift Eddy's ingest ceilings? One command, one table:

    .venv/bin/pip install -e '.[bench]'          # picows and granian (benchmark peers only)
    .venv/bin/python -m bench.library_peers      # about 12 minutes; --rounds, --only

1. `publish`: one WebSocket publisher (bench/wspublish.py's client: pre-encoded frames, 1,000
   awaiting their ack, acks checked in order) against the least a publish socket can do (parse
   each frame's JSON, answer an ack, no storage) on websockets' own server, on a raw ASGI app
   on uvicorn, and on picows; and against Eddy's `/publish` (`--sync full`);
2. `http`: single-record POSTs from wrk (32 connections) to the raw ASGI app and to Eddy
   (`--sync full`), each served by uvicorn and by granian;
3. `idle`: 10,000 idle WebSockets (the shared harness's compiled client) on nchan, the Python
   limit (websockets), picows and Eddy: time to connect them all, memory, idle CPU.

Targets alternate within every round, so a slow phase of a noisy machine hits all of them; the
table gives each one's median and its server CPU (% of one core, the server's worker processes
included). Figures compare only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    HOST,
    REPO_ROOT,
    ServerProcess,
    eddy_server,
    free_port,
    http_json,
    percentile,
    pid_cpu_seconds,
    raw_asgi_server,
    spawn_child,
    started,
)
from bench.fanout_peers import PEERS, install
from bench.sections.http_produce import single_bodies
from bench.wspublish import PublishLoadResult, PublishSpec, publish_worker

PUBLISH_BODIES = single_bodies()
PICOWS_IDLE_PORT = 18096


@dataclass
class Figure:
    """One target's measurement in one round."""

    rate: float  # acks/s, requests/s, or (idle) seconds to connect all
    p99_ms: float
    server_cpu_pct: float
    client_cpu_pct: float = float("nan")
    extra: str = ""


def log(message: str) -> None:
    print(f"[library_peers] {message}", file=sys.stderr, flush=True)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (granian serves from a worker process)."""
    total = pid_cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(tree_cpu_seconds(int(child)) for child in children)
    return total


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:.0f} s")


@contextmanager
def library_peer(kind: str, port: int) -> Iterator[int]:
    """A `bench.library_servers` server; yields its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.library_servers", kind, "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def granian_server(target: str, log_dir: Path, data_dir: Path | None = None) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", HOST,
        "--port", str(port), "--workers", "1", "--loop", "uvloop", "--log-level", "warning",
        target,
    ]  # fmt: skip
    # ServerProcess drops EDDY_* variables from its environment: pass the data dir through argv.
    prefix = [] if data_dir is None else ["env", f"EDDY_DATA={data_dir}"]
    return ServerProcess(f"granian-{port}", [*prefix, *argv], port, log_dir / f"granian-{port}.log")


# --- 1. publish -----------------------------------------------------------------------------------
def measure_publish(port: int, path: str, pid: int, seconds: float) -> Figure:
    start_at = time.time() + 1.5
    spec = PublishSpec(port, path, PUBLISH_BODIES, 1000, start_at, 1.0, seconds)
    child = spawn_child(publish_worker, spec)
    try:
        time.sleep(max(0.0, start_at + 1.0 - time.time()))
        cpu_from = tree_cpu_seconds(pid)
        time.sleep(seconds)
        cpu_to = tree_cpu_seconds(pid)
        result: PublishLoadResult = child.receive(seconds + 60)
    finally:
        child.stop()
    latencies = array("q")
    latencies.frombytes(result.latencies_ns)
    errors = f"errors {result.errors}" if result.errors else ""
    return Figure(
        result.acked / seconds,
        percentile(sorted(latencies), 0.99) / 1e6,
        (cpu_to - cpu_from) / seconds * 100,
        result.cpu_seconds / seconds * 100,
        errors,
    )


def run_publish(tmp: Path, seconds: float) -> Callable[[str], Figure]:
    def one(target: str) -> Figure:
        if target == "eddy":
            with started(eddy_server(tmp / f"pub-{time.monotonic_ns()}", tmp, "full")) as eddy:
                http_json(eddy.port, "POST", "/v1/topics", {"name": "publish", "partitions": 1})
                return measure_publish(eddy.port, "/v1/topics/publish/publish", eddy.pid, seconds)
        port = free_port()
        with library_peer(f"ack-{target}", port) as pid:
            return measure_publish(port, "/publish", pid, seconds)

    return one


# --- 2. http --------------------------------------------------------------------------------------
_WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def measure_wrk(server: ServerProcess, path: str, seconds: float, script: Path) -> Figure:
    url = f"http://{HOST}:{server.port}{path}"
    wrk = ["wrk", "-t1", "-c32", "-s", str(script)]
    subprocess.run([*wrk, "-d2s", url], check=True, capture_output=True)  # warm-up
    cpu_from, client_from = tree_cpu_seconds(server.pid), children_cpu_seconds()
    started_at = time.monotonic()
    out = subprocess.run(
        [*wrk, f"-d{seconds:.0f}s", "--latency", url], check=True, capture_output=True, text=True
    ).stdout
    elapsed = time.monotonic() - started_at
    cpu = (tree_cpu_seconds(server.pid) - cpu_from) / elapsed * 100
    client_cpu = (children_cpu_seconds() - client_from) / elapsed * 100
    rate, p99 = _WRK_RATE.search(out), _WRK_P99.search(out)
    if rate is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Figure(
        float(rate.group(1)),
        float(p99.group(1)) * _UNIT_MS[p99.group(2)],
        cpu,
        client_cpu,
        f"non-2xx {non_2xx.group(1)}" if non_2xx else "",
    )


def run_http(tmp: Path, seconds: float) -> Callable[[str], Figure]:
    script = tmp / "post.lua"
    body = PUBLISH_BODIES[0].decode().replace("'", "\\'")
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{body}'\n"
    )
    path = "/v1/topics/produce/records"

    def one(target: str) -> Figure:
        data = tmp / f"http-{time.monotonic_ns()}"
        data.mkdir()
        server = {
            "raw-uvicorn": lambda: raw_asgi_server(tmp),
            "raw-granian": lambda: granian_server("bench.raw_asgi:app", tmp),
            "eddy-uvicorn": lambda: eddy_server(data, tmp, "full"),
            "eddy-granian": lambda: granian_server(
                "bench.library_servers:eddy_granian_app", tmp, data
            ),
        }[target]()
        with started(server):
            if target.startswith("eddy"):
                http_json(server.port, "POST", "/v1/topics", {"name": "produce", "partitions": 1})
            return measure_wrk(server, path, seconds, script)

    return one


# --- 3. idle --------------------------------------------------------------------------------------
def run_idle(harness: Path, out: Path) -> Callable[[str], Figure]:
    env = {**os.environ, "EDDY_CHECKOUT": str(REPO_ROOT), "EDDY_PYTHON": sys.executable}
    pidfile = out / "picows.pid"
    start_picows = (
        f"kill $(cat {pidfile} 2>/dev/null) 2>/dev/null; cd {REPO_ROOT} && "
        f"(ulimit -n $(ulimit -Hn); nohup {sys.executable} -m bench.library_servers idle-picows "
        f"--port {PICOWS_IDLE_PORT} >/dev/null 2>&1 & echo $! > {pidfile}); "
        f"for i in $(seq 200); do (echo > /dev/tcp/127.0.0.1/{PICOWS_IDLE_PORT}) 2>/dev/null "
        "&& break; sleep 0.05; done"
    )
    peers = {
        **PEERS,
        "picows": {
            "adapter": "raw",
            "sub": f"ws://127.0.0.1:{PICOWS_IDLE_PORT}/sub/{{topic}}",
            "port": str(PICOWS_IDLE_PORT),
            "restart": start_picows,
            "stop": f"kill $(cat {pidfile}) 2>/dev/null; rm -f {pidfile}",
        },
    }

    def one(target: str) -> Figure:
        peer = peers[target]
        result = out / f"idle-{target}.json"
        try:
            subprocess.run(
                [
                    ".venv/bin/python", "-m", "loadgen", "idle", "--label", target,
                    "--adapter", peer["adapter"], "--sub-url", peer["sub"],
                    "--server-port", peer["port"], "--before-each", peer["restart"],
                    "--conns", "10000", "--hold", "25", "--runs", "1", "--out", str(result),
                ],
                cwd=harness, env=env, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            subprocess.run(peer["stop"], cwd=harness, env=env, shell=True, check=False)
        run = json.loads(result.read_text())["results"][0]["runs"][0]
        return Figure(
            run["connect_s"],
            float("nan"),
            run["idle_server_cpu_pct"],
            run["idle_client_cpu_pct"],
            f"{run['rss_per_conn_kb']:.1f} KB a connection, {run['open']:,} open",
        )

    return one


# --- the table ------------------------------------------------------------------------------------
SECTIONS = {
    "publish": (["asgi", "websockets", "picows", "eddy"], "acks/s"),
    "http": (["raw-uvicorn", "raw-granian", "eddy-uvicorn", "eddy-granian"], "req/s"),
    "idle": (["nchan", "rawframe", "picows", "eddy"], "s to connect 10,000"),
}


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cell(value: float, digits: int) -> str:
    return "—" if value != value else f"{value:.{digits}f}"  # NaN: not measured here


def table(section: str, figures: dict[str, list[Figure]]) -> str:
    targets, unit = SECTIONS[section]
    first = med([f.rate for f in figures.get(targets[0], [])])
    lines = [
        f"| {section}: target | {unit} (median, all rounds) | ÷ {targets[0]} | p99 ms "
        "| server CPU % | client CPU % | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for target in targets:
        runs = figures.get(target, [])
        rate = med([f.rate for f in runs])
        rates = ", ".join(f"{f.rate:,.2f}" if f.rate < 100 else f"{f.rate:,.0f}" for f in runs)
        lines.append(
            f"| {target} | {rates} | {rate / first:.2f}x "
            f"| {cell(med([f.p99_ms for f in runs]), 2)} "
            f"| {cell(med([f.server_cpu_pct for f in runs]), 1)} "
            f"| {cell(med([f.client_cpu_pct for f in runs]), 1)} "
            f"| {'; '.join(sorted({f.extra for f in runs if f.extra}))} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(SECTIONS), action="append")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="per publish / http phase")
    parser.add_argument("--harness", type=Path, default=Path("/tmp/eddy-bench"))
    args = parser.parse_args()
    for module in ("picows", "granian"):
        try:
            __import__(module)
        except ImportError:
            sys.exit(f"{module} is missing: .venv/bin/pip install -e '.[bench]'")
    sections = args.only or list(SECTIONS)
    load_before = os.getloadavg()
    tables = []
    with tempfile.TemporaryDirectory(prefix="eddy-library-peers-") as tmp_name:
        tmp = Path(tmp_name)
        if "idle" in sections:
            install(args.harness)
        for section in sections:
            measure = {
                "publish": lambda: run_publish(tmp, args.seconds),
                "http": lambda: run_http(tmp, args.seconds),
                "idle": lambda: run_idle(args.harness, tmp),
            }[section]()
            figures: dict[str, list[Figure]] = {}
            for round_no in range(1, args.rounds + 1):
                for target in SECTIONS[section][0]:
                    log(f"{section} round {round_no}: {target}, load {os.getloadavg()[0]:.2f}")
                    figures.setdefault(target, []).append(measure(target))
            tables.append(table(section, figures))
    print(f"load average before: {', '.join(f'{x:.2f}' for x in load_before)}; "
          f"after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")  # fmt: skip
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()

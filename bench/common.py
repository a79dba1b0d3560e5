"""Shared helpers: event loop, ports, CPU accounting, server subprocesses, child processes."""

from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # the benchmark only ever talks to loopback
T = TypeVar("T")

# Children are started with "spawn": a clean interpreter, no inherited event loop or sockets.
MP = multiprocessing.get_context("spawn")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop when installed (what uvicorn uses for Eddy), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)


def raise_open_file_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    times = os.times()
    return times.user + times.system


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def pid_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (all its threads), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs, not idle or waiting on I/O)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / _CLK_TCK


def pid_memory_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB."""
    rss = peak = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, peak


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


# --- plain HTTP to a local server (no proxies, no client library) ------------------------------
def http_json(
    port: int, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")
    finally:
        conn.close()


# --- servers under test --------------------------------------------------------------------------
@dataclass
class ServerProcess:
    """A server started as a subprocess on a free loopback port, with its log in `log_path`."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    cpu_marks: list[float] = field(default_factory=list)

    def start(self, ready_timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDDY_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only the runner
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            try:
                status, _ = http_json(self.port, "GET", "/healthz", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {ready_timeout}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return pid_cpu_seconds(self.pid)

    def memory_mib(self) -> tuple[float, float]:
        return pid_memory_mib(self.pid)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_problems(self) -> list[str]:
        """Log records at WARNING or above and tracebacks, each as one block of lines."""
        return problem_blocks(self.log_text())


@contextmanager
def started(server: ServerProcess) -> Iterator[ServerProcess]:
    """The server, started, and stopped again however the block ends."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


_PROBLEM = re.compile(r"Traceback|\b(ERROR|CRITICAL|WARNING)\b|Exception")
_CHAINED = ("The above exception", "During handling of the above")


def problem_blocks(log: str) -> list[str]:
    """Group a log's problem lines with their traceback (indented frames, the exception line
    that follows them, chained tracebacks)."""
    lines = log.splitlines()
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        if not _PROBLEM.search(lines[i]):
            i += 1
            continue
        block = [lines[i]]
        i += 1
        while i < len(lines) and len(block) < 80:
            line, previous = lines[i], block[-1]
            if (
                not line.strip()
                or line.startswith((" ", "\t", "Traceback", *_CHAINED))
                or previous.startswith((" ", "\t"))  # the exception line after the frames
                or previous.startswith(_CHAINED)
            ):
                block.append(line)
                i += 1
            else:
                break
        blocks.append("\n".join(block).rstrip())
    return blocks


def eddy_server(
    data_dir: Path, log_dir: Path, sync: str, extra_args: Sequence[str] = ()
) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "eddy",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--sync",
        sync,
        "--ws-buffer-bytes",
        str(1024 * 1024),
        *extra_args,
    ]
    return ServerProcess(f"eddy-sync-{sync}", argv, port, log_dir / f"eddy-{sync}-{port}.log")


def raw_asgi_server(log_dir: Path) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.raw_asgi:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    return ServerProcess("raw-asgi", argv, port, log_dir / f"raw-asgi-{port}.log")


def ws_broadcast_server(log_dir: Path) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "bench.ws_broadcast", "--port", str(port)]
    return ServerProcess("ws-broadcast", argv, port, log_dir / f"ws-broadcast-{port}.log")


# --- child processes (load generators) -----------------------------------------------------------
@dataclass
class Child:
    """A spawned child process running `target(conn, *args)`, talking over a pipe."""

    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection

    def request(self, message: Any, timeout: float) -> Any:
        self.conn.send(message)
        return self.receive(timeout)

    def receive(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"child {self.process.pid} did not answer within {timeout:.0f}s")
        result = self.conn.recv()
        if isinstance(result, dict) and "child_error" in result:
            raise RuntimeError(f"child {self.process.pid} failed:\n{result['child_error']}")
        return result

    def stop(self, timeout: float = 10.0) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


def spawn_child(target: Callable[..., None], *args: Any) -> Child:
    parent_end, child_end = MP.Pipe()
    process = MP.Process(target=target, args=(child_end, *args), daemon=True)
    process.start()
    child_end.close()
    return Child(process, parent_end)


def child_main(conn: multiprocessing.connection.Connection, body: Callable[[], Any]) -> None:
    """Run `body` in a child and send its result (or its traceback) to the parent."""
    import traceback

    try:
        result = body()
    except BaseException:
        result = {"child_error": traceback.format_exc()}
    try:
        conn.send(result)
    finally:
        conn.close()


def wait_until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        time.sleep(delay)

"""Real servers for tests: uvicorn on a loopback port (in a thread, or as a subprocess)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings as hypothesis_settings

from eddy.app.factory import create_app
from eddy.app.server import EddyServer, uvicorn_config
from eddy.app.settings import Settings

REPO = Path(__file__).resolve().parent.parent

# Hypothesis' per-example deadline is a timed assertion: on a loaded 2-core machine a first call
# that imports or warms a cache can take longer than 200 ms and fail a correct property. Speed is
# measured in bench/, so the suite's properties run without a deadline.
hypothesis_settings.register_profile("eddy", deadline=None)
hypothesis_settings.load_profile("eddy")


@dataclass
class RunningServer:
    base_url: str
    ws_url: str
    data_dir: Path
    app: Any = None  # the FastAPI app (in-thread servers): for reaching into the running broker

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_in_thread(data_dir: Path, **settings: Any) -> Iterator[RunningServer]:
    """A real uvicorn serving Eddy on a free loopback port, in a background thread."""
    port = free_port()
    config = Settings(host="127.0.0.1", port=port, data_dir=data_dir, **settings)
    app = create_app(config)
    server = EddyServer(uvicorn_config(app, config), app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", data_dir, app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(tmp_path / "data") as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    base_url: str
    ws_url: str
    data_dir: Path
    output: str = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the server, wait for it, and keep what it printed in `self.output`."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.output, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode


def start_server_process(
    data_dir: Path,
    *extra_args: str,
    wait: bool = True,
    env: dict[str, str] | None = None,
    startup_timeout: float = 20,
    port: int | None = None,
) -> ServerProcess:
    """`python -m eddy serve` as a subprocess (for restarts, kills and start-up behaviour); on
    `port` (a restart on the same address, for clients that reconnect by themselves)."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eddy",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *extra_args,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    running = ServerProcess(process, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", data_dir)
    if wait:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {process.communicate()[0]}")
            try:
                if httpx.get(running.base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                running.stop(signal.SIGKILL)
                raise RuntimeError("server process did not become healthy")
            time.sleep(0.05)
    return running


def fetch_all(
    client: httpx.Client, topic: str, partition: int = 0, offset: int = 0
) -> list[dict[str, Any]]:
    """Every record of a partition from `offset` to its end, over REST (gaps are stepped over)."""
    records: list[dict[str, Any]] = []
    while True:
        response = client.get(
            f"/v1/topics/{topic}/partitions/{partition}/records",
            params={"offset": offset, "limit": 1000},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        records += body["records"]
        if body["next_offset"] >= body["high_watermark"]:
            return records
        offset = body["next_offset"]


@contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount_point`, for running out of disk for real (the suite runs as
    root, as CI does)."""
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill_disk(fs: Path) -> Path:
    """Take every free byte of the filesystem; returns the filler to delete."""
    filler = fs / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB filesystem to fill up."""
    with tmpfs(tmp_path / "fs", "8m") as mount_point:
        yield mount_point


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy (instead of sleeping a fixed time)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread left running by a test (a storage thread pool left open, say) would keep the
    interpreter from exiting and hang CI: name it and exit with a failure instead."""
    leftovers = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    for thread in leftovers:
        thread.join(timeout=5)
    still = [t.name for t in leftovers if t.is_alive()]
    if still:
        print(f"\nthreads left running after the tests: {still}", file=sys.stderr, flush=True)
        os._exit(3)


@pytest.fixture(scope="session")
def tansu_bootstrap() -> Iterator[str]:
    """One Tansu broker (in-memory) for the whole run: its bootstrap address. Tests keep apart
    by giving each Eddy server its own --kafka-namespace."""
    from tests.kafka_brokers import tansu

    with tansu() as servers:
        yield servers


@pytest.fixture(scope="session")
def mock_kafka_bootstrap() -> Iterator[str]:
    """librdkafka's mock Kafka cluster (3 brokers) for the whole run: its bootstrap servers."""
    from tests.kafka_brokers import mock_cluster

    with mock_cluster() as servers:
        yield servers

"""The server's main loop (app/server.py): it wakes once a second to renew the Date header, not
ten times as uvicorn's does, and at once when asked to exit, from another thread or a signal."""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from eddy.app.factory import create_app
from eddy.app.server import TICK_SECONDS, EddyServer, uvicorn_config
from eddy.app.settings import Settings
from tests.conftest import free_port, start_server_process


class CountingServer(EddyServer):
    """The real server, counting its main loop's ticks."""

    ticks = 0

    async def on_tick(self, counter: int) -> bool:
        self.ticks += 1
        return await super().on_tick(counter)


def running(server: EddyServer) -> threading.Thread:
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    return thread


def counting_server(data_dir: Path) -> tuple[CountingServer, int]:
    port = free_port()
    settings = Settings(host="127.0.0.1", port=port, data_dir=data_dir)
    app = create_app(settings)
    return CountingServer(uvicorn_config(app, settings), app), port


def test_idle_ticks_once_a_second_and_renews_the_date(tmp_path: Path) -> None:
    server, port = counting_server(tmp_path / "data")
    thread = running(server)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        first = client.get("/v1/topics").headers["date"]
        asked_at, before = time.time(), server.ticks
        time.sleep(3 * TICK_SECONDS + 0.2)
        idle_ticks = server.ticks - before
        second = client.get("/v1/topics").headers["date"]
    # uvicorn's loop would have ticked about 32 times; this one 3 or 4 (a tick may be late)
    assert 2 <= idle_ticks <= 5, idle_ticks
    # the Date header is still renewed: the second one is 3-5 s after the first
    elapsed = (parsedate_to_datetime(second) - parsedate_to_datetime(first)).total_seconds()
    assert 2 <= elapsed <= 5, (first, second, time.time() - asked_at)

    server.should_exit = True
    thread.join(timeout=15)
    assert not thread.is_alive()


def test_an_exit_request_wakes_the_loop(tmp_path: Path) -> None:
    server, _ = counting_server(tmp_path / "data")
    server.tick_seconds = 3600.0  # only the request itself can end the wait in time
    thread = running(server)
    time.sleep(0.2)  # the loop is waiting now
    ticks_at_exit = server.ticks
    server.should_exit = True  # from this thread, not the server's
    thread.join(timeout=15)
    assert not thread.is_alive(), "the exit request did not wake the main loop"
    assert server.ticks == ticks_at_exit + 1  # one tick saw the request, and the loop ended


def test_sigterm_still_stops_the_process(tmp_path: Path) -> None:
    process = start_server_process(tmp_path / "data")
    try:
        with httpx.Client(base_url=process.base_url) as client:
            assert client.get("/v1/topics").status_code == 200
    finally:
        code = process.stop()
    assert code == 0, process.output
    assert "Eddy stopped" in process.output

"""uvicorn's server with one change: on shutdown, the broker hears about it first.

uvicorn stops accepting connections, then waits for open requests and WebSockets to finish
(up to its graceful timeout), and only then runs the lifespan shutdown. Long-polls and live
WebSockets would keep it waiting that whole time; so as soon as shutdown starts, Eddy closes
its WebSockets with 1001 and answers its long-polls, and appends in flight still commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

from eddy.app.http_protocol import HeadLimits, http_protocol
from eddy.app.logs import uvicorn_log_config
from eddy.app.settings import Settings
from eddy.broker import Broker
from eddy.routers.ws.protocol import EddyWebSocketProtocol

log = logging.getLogger("eddy")

WEBSOCKET_CLOSE_WAIT = 1.0  # seconds
# While fan-out passes keep the event loop's thread busy, the storage writer thread waits for
# the GIL at each of its steps (every SQLite call releases and retakes it) for up to the
# interpreter's switch interval, 5 ms by default: a commit took several of those, so producers
# waited for fan-out although its steps are short. Measured at 1,000 subscribers x 50/s:
# produce p99 9x the idle figure at 5 ms, 3x at 0.5 ms, 1.4-2x at 0.2 ms.
GIL_SWITCH_SECONDS = 0.0002
# The cyclic garbage collector's full collections walk the whole heap, which after start-up
# holds hundreds of thousands of objects (FastAPI's routes and models, pydantic's validators,
# the modules) that never become garbage; a 1,000-record batch allocates enough to trigger them
# often, so collections were about half of its CPU. Those objects are frozen (gc.freeze) once
# the server has started: in process (bench.inprocess), 7.2-8.6 us of CPU a record with
# nothing frozen, 4.4-4.7 frozen. Young collections every 10,000 allocations instead of 700
# took it to 4.1, but each one then stops the event loop longer, and fan-out's p99 grew with
# it (1,000 subscribers x 50/s: 49-53 ms against 20-38 ms), so the thresholds stay Python's.
# uvicorn's main loop wakes every 0.1 s to see whether it should exit and, every tenth time, to
# renew the Date header: about 0.2% of a core on an idle server. Eddy's wakes once a second for
# the Date header, and at once when asked to exit (a signal, or `should_exit` set by a caller).
TICK_SECONDS = 1.0


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration Eddy runs with: the one place that chooses protocol classes,
    limits and timeouts (`eddy serve` and the tests' servers both use it)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",  # Eddy logs its own start-up line
        # uvicorn's loggers propagate to the root logger: Eddy's format (app/logs.py) for all.
        "log_config": uvicorn_log_config(),
        # Off: its lines carry query strings (?token=); Eddy's own access log does not.
        "access_log": False,
        "http": http_protocol(
            HeadLimits(settings.max_header_bytes, settings.max_headers, settings.head_timeout)
        ),
        "ws": EddyWebSocketProtocol,  # fast-send extension for pre-built frames (routers/ws)
        "ws_max_size": settings.max_request_bytes,
        "ws_ping_interval": settings.ws_ping_interval,
        "ws_ping_timeout": settings.ws_ping_timeout,
        "timeout_graceful_shutdown": 10,
    }
    return uvicorn.Config(app, **{**options, **overrides})


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before storage opens: a busy port is refused at once with a
    clear message (uvicorn would open storage first, then log the bind error and exit 3).
    Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A restarted server may bind while the old one's connections sit in TIME_WAIT; a port
        # another process listens on is still refused (EADDRINUSE).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EddyServer(uvicorn.Server):
    tick_seconds = TICK_SECONDS

    def __init__(self, config: uvicorn.Config, app: FastAPI, own_process: bool = False) -> None:
        """`own_process`: the server is the process (`eddy serve`), so what exists once it has
        started is frozen out of the garbage collector's sight (see above); not in a test
        process that starts many servers, whose objects would never be freed."""
        self._exit_requested: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        super().__init__(config)
        self._app = app
        self._own_process = own_process
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_SECONDS))

    @property  # uvicorn's is a plain attribute: a property here wakes the main loop
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        """Set by uvicorn's signal handler, or by a caller on another thread (tests)."""
        self._should_exit = value
        loop, event = self._loop, self._exit_requested
        if value and loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
                loop.call_soon_threadsafe(event.set)

    async def main_loop(self) -> None:
        """uvicorn's `main_loop` (`on_tick` each time, which renews the Date header when its
        counter is a multiple of 10 and says whether to exit), woken by an exit request instead
        of polling for one."""
        self._loop = asyncio.get_running_loop()
        self._exit_requested = event = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.tick_seconds)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # storage opens (lifespan), then the socket serves
        if not self.started:
            return
        if self._own_process:  # what exists now lives as long as the process (see above)
            gc.collect()
            gc.freeze()
        settings: Settings = self._app.state.settings
        port = self.servers[0].sockets[0].getsockname()[1]  # the real one, also for --port 0
        url = http_url(settings.host, port)
        storage = (
            f"data dir {settings.data_dir.resolve()}"
            if settings.engine == "sqlite"
            else f"Kafka cluster {settings.kafka_bootstrap_servers}"
        )
        log.info("Eddy listening on %s (%s, docs %s/docs)", url, storage, url)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections from here on
        broker: Broker | None = getattr(self._app.state, "broker", None)
        if broker is not None:  # set by the lifespan once storage is open
            broker.begin_shutdown()
            # Let the sessions send their 1001 before uvicorn closes what is left with 1012.
            await broker.websockets_closed(WEBSOCKET_CLOSE_WAIT)
        await super().shutdown(sockets)  # ends with the lifespan: storage is closed after it
        log.info("Eddy stopped")

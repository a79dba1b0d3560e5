"""A bounded pool of reader threads (reads and file operations, off the event loop).

Read connections are opened lazily and reused; beyond a bound, the least recently used idle
ones are closed, so however many topics exist only a bounded number of files stay open. A
connection moves between the pool's threads but is never used by two at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from eddy.storage.writer import Connect, Database, DatabaseClosed, post, settle, settling_call

T = TypeVar("T")


class ReaderPool:
    """A few threads for reads and file operations. Read connections are opened lazily and
    reused; beyond `max_idle` idle ones, the least recently used are closed."""

    def __init__(self, size: int, connect: Connect, max_idle: int) -> None:
        # a read to run, or (when closing) the future a thread resolves as it ends
        self._tasks: queue.SimpleQueue[Callable[[], None] | _Stop] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._main, name=f"eddy-reader-{i}") for i in range(size)
        ]
        for thread in self._threads:
            thread.start()
        self._connect = connect
        self._max_idle = max_idle
        self._lock = threading.Lock()
        # database -> its idle connections, least recently used first
        self._idle: OrderedDict[Database[Any, Any], list[sqlite3.Connection]] = OrderedDict()
        self._idle_count = 0
        self._closed = False

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run `fn` in a reader thread (file operations: they must not block the loop)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        if self._closed:
            raise DatabaseClosed("the reader pool is closed")

        self._tasks.put(settling_call(loop, fn, done))
        return done

    def _main(self) -> None:
        while not isinstance(task := self._tasks.get(), _Stop):
            task()
        post(task.loop, settle, task.done, None, None)

    def read(
        self, db: Database[Any, Any], fn: Callable[[sqlite3.Connection], T]
    ) -> asyncio.Future[T]:
        """Run `fn` with a read connection to `db`'s file, in a reader thread."""
        return self.run(lambda: self._with_connection(db, fn))

    def _with_connection(self, db: Database[Any, Any], fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if db.closed:
                raise DatabaseClosed(str(db.path))
            idle = self._idle.get(db)
            conn = idle.pop() if idle else None
            if conn is not None:
                self._idle_count -= 1
                if not idle:
                    del self._idle[db]
        if conn is None:
            conn = self._connect(db.path)
        try:
            result = fn(conn)
        except BaseException:
            _close(conn)  # a failed read may leave the connection unusable
            raise
        self._check_in(db, conn)
        return result

    def _check_in(self, db: Database[Any, Any], conn: sqlite3.Connection) -> None:
        closing: list[sqlite3.Connection] = []
        with self._lock:
            if db.closed or self._closed:
                closing.append(conn)
            else:
                self._idle.setdefault(db, []).append(conn)
                self._idle.move_to_end(db)
                self._idle_count += 1
            while self._idle_count > self._max_idle:
                _, conns = self._idle.popitem(last=False)
                self._idle_count -= len(conns)
                closing += conns
        for old in closing:
            _close(old)

    def forget(self, db: Database[Any, Any]) -> None:
        """Close the (closed) database's idle connections; busy ones close when their read
        ends."""
        with self._lock:
            conns = self._idle.pop(db, [])
            self._idle_count -= len(conns)
        for conn in conns:
            _close(conn)

    async def close(self) -> None:
        """Let queued reads finish, close every connection, end the threads."""
        self._closed = True
        loop = asyncio.get_running_loop()
        ended = [_Stop(loop, loop.create_future()) for _ in self._threads]
        for stop in ended:
            self._tasks.put(stop)
        await asyncio.gather(*(stop.done for stop in ended))
        for thread in self._threads:
            thread.join()  # already ended: returns at once
        with self._lock:
            self._closed = True
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
            self._idle_count = 0
        for conn in conns:
            _close(conn)


@dataclass(frozen=True)
class _Stop:
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


def _close(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()

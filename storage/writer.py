"""Exactly one writer per database file, on a bounded pool of threads.

Each database file (a topic's log.db, groups.db) belongs to one `WriterThread`, chosen by a hash
of its path, so there is one writer per file and at most `writers` threads however many files
are open. The event loop hands a `Database` whole jobs; the thread runs everything queued for a
file in one transaction (group commit: whatever queued while the previous commit was syncing
goes into the next one, up to a weight bound), then posts the outcome back to the event loop in
one callback. The database's `Owner` updates memory in that callback, after the commit, and
resolves the waiting futures. Connections are opened lazily and the least recently used ones
closed beyond a bound, so idle files hold no descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("eddy.storage")

T = TypeVar("T")
J = TypeVar("J", bound="Job")
R = TypeVar("R")
Connect = Callable[[Path], sqlite3.Connection]
ObserveCommit = Callable[[float], None]  # seconds a COMMIT took (called in the writer thread)


class DatabaseClosed(Exception):
    """The database was closed (its topic deleted, or the engine closed) before the job ran."""


class Job:
    """A unit of work for a database's writer. `weight` bounds a transaction (records);
    a `standalone` job runs alone and outside any transaction (e.g. a checkpoint)."""

    __slots__ = ("weight",)
    standalone = False

    def __init__(self, weight: int = 1) -> None:
        self.weight = weight


class Owner(Protocol[J, R]):
    """What a database's jobs mean: `run` in the writer thread, the rest on the event loop."""

    def run(self, conn: sqlite3.Connection, jobs: list[J]) -> R:
        """Do the jobs' work; inside BEGIN IMMEDIATE ... COMMIT unless a job is standalone.
        Raising rolls the whole transaction back."""

    def committed(self, jobs: list[J], result: R) -> None:
        """On the event loop, once `run`'s work is durable."""

    def failed(self, jobs: list[J], error: BaseException) -> None:
        """On the event loop: the jobs did not happen (rolled back)."""


class Database(Generic[J, R]):
    """One database file and its queue of jobs; run by its one writer thread."""

    def __init__(
        self,
        path: Path,
        owner: Owner[J, R],
        writers: WriterPool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.path = path
        self.owner = owner
        self.loop = loop
        self.thread = writers.thread_for(path)
        self.queue: deque[J] = deque()  # guarded by self.thread.lock
        self.scheduled = False  # in the thread's ready list (guarded by self.thread.lock)
        self.closed = False

    def submit(self, job: J) -> None:
        """Queue a job (from the event loop). Raises DatabaseClosed after `close`."""
        if self.closed:
            raise DatabaseClosed(str(self.path))
        self.thread.submit(self, job)

    def close(self) -> asyncio.Future[None]:
        """Refuse new jobs, let the queued ones finish, then close the connection; the future
        resolves when the file is no longer open in the writer."""
        self.closed = True
        done: asyncio.Future[None] = self.loop.create_future()

        def close_connection() -> None:
            self.thread.forget(self)
            post(self.loop, settle, done, None, None)

        self.thread.call_after(self, close_connection)
        return done


class WriterThread:
    """Owns some database files: runs their transactions one at a time, round-robin."""

    def __init__(
        self,
        name: str,
        connect: Connect,
        max_connections: int,
        observe_commit: ObserveCommit | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self._observe_commit = observe_commit
        self._wakeup = threading.Condition(self.lock)
        # Databases with queued jobs, and plain calls, in the order they became ready.
        self._ready: deque[Database[Any, Any] | Callable[[], None]] = deque()
        self._connect = connect
        self._max_connections = max_connections
        self._connections: OrderedDict[Database[Any, Any], sqlite3.Connection] = OrderedDict()
        self._stopping = False
        self._stopped: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._thread = threading.Thread(target=self._main, name=name)
        self._thread.start()

    # --- called from the event loop -----------------------------------------------------------
    def submit(self, db: Database[Any, Any], job: Job) -> None:
        with self.lock:
            db.queue.append(job)
            if not db.scheduled:
                db.scheduled = True
                self._ready.append(db)
                self._wakeup.notify()

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` in this thread, in turn with the transactions."""
        with self.lock:
            self._ready.append(fn)
            self._wakeup.notify()

    def call_after(self, db: Database[Any, Any], fn: Callable[[], None]) -> None:
        """Run `fn` in this thread once every job queued for `db` so far has run."""
        self.submit(db, _Marker(fn))

    def run_in(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run `fn` in this thread (in turn with the transactions); a future of its result."""
        done: asyncio.Future[T] = loop.create_future()
        self.call(settling_call(loop, fn, done))
        return done

    def stop(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Finish what is queued, close every connection, end the thread; the future resolves
        when it has ended."""
        done: asyncio.Future[None] = loop.create_future()
        with self.lock:
            if not self._thread.is_alive():
                done.set_result(None)
                return done
            self._stopping = True
            self._stopped = (loop, done)
            self._wakeup.notify()
        return done

    def join(self) -> None:
        self._thread.join()

    # --- the thread ---------------------------------------------------------------------------
    def _main(self) -> None:
        while True:
            with self.lock:
                while not self._ready and not self._stopping:
                    self._wakeup.wait()
                if not self._ready:
                    break
                item = self._ready.popleft()
                jobs = self._take(item) if isinstance(item, Database) else []
            if isinstance(item, Database):
                self._process(item, jobs)
                with self.lock:
                    if item.queue:
                        self._ready.append(item)  # to the back: other files get their turn
                    else:
                        item.scheduled = False
            else:
                try:
                    item()
                except Exception:
                    log.exception("writer call failed")
        for conn in self._connections.values():
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._connections.clear()
        with self.lock:
            if self._stopped is not None:
                post(self._stopped[0], settle, self._stopped[1], None, None)

    @staticmethod
    def _take(db: Database[Any, Any]) -> list[Any]:
        """The next transaction's jobs: all queued ones up to the weight bound, or one
        standalone job."""
        queue = db.queue
        first = queue.popleft()
        jobs = [first]
        if first.standalone:
            return jobs
        weight = first.weight
        while queue and not queue[0].standalone and weight + queue[0].weight <= MAX_WEIGHT:
            job = queue.popleft()
            weight += job.weight
            jobs.append(job)
        return jobs

    def _process(self, db: Database[Any, Any], jobs: list[Any]) -> None:
        if isinstance(jobs[0], _Marker):
            try:
                jobs[0].fn()
            except Exception:
                log.exception("writer call failed")
            return
        try:
            conn = self._connection(db)
            result = self._transaction(conn, db, jobs)
        except BaseException as exc:
            if len(jobs) > 1:
                # One job's failure must not fail the others: run each alone.
                for job in jobs:
                    self._process(db, [job])
                return
            post(db.loop, db.owner.failed, jobs, exc)
            return
        post(db.loop, db.owner.committed, jobs, result)

    def _transaction(
        self, conn: sqlite3.Connection, db: Database[Any, Any], jobs: list[Any]
    ) -> Any:
        if jobs[0].standalone:
            try:
                return db.owner.run(conn, jobs)
            except BaseException:
                self._rollback(db, conn)
                raise
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = db.owner.run(conn, jobs)
            started = time.perf_counter()
            conn.execute("COMMIT")  # with synchronous=FULL, this is where the fsync waits
            if self._observe_commit is not None:
                self._observe_commit(time.perf_counter() - started)
        except BaseException:
            self._rollback(db, conn)
            raise
        return result

    def _rollback(self, db: Database[Any, Any], conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if conn.in_transaction:  # never leave a file inside a transaction: start afresh
            self.forget(db)

    def _connection(self, db: Database[Any, Any]) -> sqlite3.Connection:
        conn = self._connections.get(db)
        if conn is not None:
            self._connections.move_to_end(db)
            return conn
        conn = self._connect(db.path)
        self._connections[db] = conn
        while len(self._connections) > self._max_connections:
            _, idle = self._connections.popitem(last=False)
            with contextlib.suppress(sqlite3.Error):
                idle.close()
        return conn

    def forget(self, db: Database[Any, Any]) -> None:
        """Close the file's connection, if open (in this thread)."""
        conn = self._connections.pop(db, None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


class _Marker(Job):
    """A call queued behind a database's jobs (see `WriterThread.call_after`)."""

    __slots__ = ("fn",)
    standalone = True

    def __init__(self, fn: Callable[[], None]) -> None:
        super().__init__()
        self.fn = fn


MAX_WEIGHT = 10_000  # records per transaction: bounds its size and how long it holds the file


class WriterPool:
    """A fixed set of writer threads; a file always maps to the same one."""

    def __init__(
        self,
        size: int,
        connect: Connect,
        max_connections_per_thread: int,
        observe_commit: ObserveCommit | None = None,
    ) -> None:
        self.threads = [
            WriterThread(f"eddy-writer-{i}", connect, max_connections_per_thread, observe_commit)
            for i in range(size)
        ]

    def thread_for(self, path: Path) -> WriterThread:
        return self.threads[zlib.crc32(str(path).encode()) % len(self.threads)]

    async def stop(self) -> None:
        """Finish every queued job, close every file, end the threads."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(thread.stop(loop) for thread in self.threads))
        for thread in self.threads:
            thread.join()  # already ended: returns at once


def post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """Run fn(*args) on the event loop (from a writer thread)."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        log.debug("event loop closed; dropped a writer outcome")


def settling_call(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], T], done: asyncio.Future[T]
) -> Callable[[], None]:
    """A callable for a worker thread: runs `fn` there and settles `done` on the loop."""

    def call() -> None:
        try:
            result = fn()
        except BaseException as exc:
            post(loop, settle, done, None, exc)
        else:
            post(loop, settle, done, result, None)

    return call


def settle(done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(result)
    else:
        done.set_exception(error)

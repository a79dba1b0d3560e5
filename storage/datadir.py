"""The data dir: one server owns it (flock), and files appear or vanish atomically.

Layout::

    eddy.lock                 held (flock) by the one server that owns this data dir
    groups.db                 consumer groups' committed offsets
    topics/<topic>/log.db     the topic's database (plus SQLite's -wal/-shm files)
    tmp/                      topics being created or deleted (emptied at start-up)

A topic is built in tmp/ and renamed into topics/, and removed by renaming it into tmp/ first,
so a crash never leaves half a topic in topics/. Everything but `lock` blocks: run it in a
storage thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes the files under `root` take on disk, bytes free for unprivileged use on its
    filesystem). Walks the tree: run it in a thread."""
    used = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed meanwhile
                used += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    fs = os.statvfs(root)
    return used, fs.f_bavail * fs.f_frsize


class DataDirLocked(Exception):
    """Another process owns the data dir."""


class DataDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.topics = self.root / "topics"
        self.tmp = self.root / "tmp"
        self.groups_db = self.root / "groups.db"
        self._lock_fd: int | None = None

    # --- ownership ------------------------------------------------------------------------------
    @staticmethod
    def _lock(root: Path) -> int:
        """flock the data dir's lock file; returns its descriptor (closing it unlocks)."""
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / "eddy.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"data dir {root.resolve()} is in use by another Eddy server "
                f"(pid {holder}); refusing to start"
            ) from None
        return fd

    @classmethod
    def ensure_free(cls, root: Path) -> None:
        """Raise `DataDirLocked` if another server owns `root` (a check before start-up)."""
        os.close(cls._lock(root))

    @property
    def owned(self) -> bool:
        return self._lock_fd is not None

    def acquire(self) -> None:
        """Own the dir (raises `DataDirLocked`), then clear what a crash left in tmp/."""
        fd = self._lock(self.root)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        self.topics.mkdir(exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(exist_ok=True)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # --- files ----------------------------------------------------------------------------------
    def topic_db(self, name: str) -> Path:
        return self.topics / name / "log.db"

    def topic_dbs(self) -> list[Path]:
        return sorted(self.topics.glob("*/log.db"))

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh dir in tmp/; removed if the block fails (nothing is left behind)."""
        staging = self.tmp / f"create-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def publish(self, staging: Path, name: str, durable: bool) -> None:
        """Rename a staged topic dir into topics/ (atomic); `durable`: fsync the directory,
        so the topic survives a power loss once this returns."""
        staging.rename(self.topics / name)
        if durable:
            fd = os.open(self.topics, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def remove(self, path: Path) -> None:
        """Move aside (atomic) then delete, so a crash never leaves half a topic in topics/."""
        doomed = self.tmp / f"delete-{uuid.uuid4().hex}"
        path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def probe(self) -> None:
        """Raise OSError unless a file can be written in the data dir now."""
        probe = self.tmp / f"probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
        finally:
            probe.unlink(missing_ok=True)

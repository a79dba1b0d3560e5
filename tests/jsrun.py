"""Running the JavaScript client's Node test scripts (tests/js/) as real processes: each prints
one JSON object per line (an event), read here in a thread and waited for, never slept for."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from typing import Any

import pytest

from tests.conftest import REPO, wait_until

NODE = shutil.which("node")
SCRIPTS = REPO / "tests" / "js"


def require_node() -> str:
    """node and the ws package are required, not optional (CI installs both)."""
    if NODE is None:
        pytest.fail("node is not installed (Node.js 20 is expected on the base image)")
    if not (REPO / "node_modules" / "ws").is_dir():
        pytest.fail("the ws package is missing: run `bash .ci/install-node-tools.sh`")
    return NODE


class NodeScript:
    """One `node tests/js/<name>.mjs '<json args>'` process and the events it printed."""

    def __init__(self, name: str, **args: Any) -> None:
        node = require_node()
        self.process = subprocess.Popen(
            [node, str(SCRIPTS / f"{name}.mjs"), json.dumps(args)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr = ""
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                event = json.loads(line)
                with self._lock:
                    self.events.append(event)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            self.stderr = self.process.stderr.read()

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["event"] == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until at least `count` events of `kind` were printed (or the script ended)."""

        def reached() -> bool:
            if len(self.of(kind)) >= count:
                return True
            if self.process.poll() is not None:
                self._join()
                if len(self.of(kind)) >= count:
                    return True
                raise AssertionError(
                    f"script ended ({self.process.returncode}) before {count} '{kind}': "
                    f"{self.events[-5:]} {self.stderr}"
                )
            return False

        wait_until(reached, timeout=timeout)
        return self.of(kind)

    def finish(self, timeout: float = 30) -> int:
        """Wait for the script to exit by itself; its exit code."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._join()
            raise AssertionError(f"script did not finish: {self.events[-5:]}") from None
        self._join()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._join()

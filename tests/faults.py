"""Shared pieces of the fault-injection suite (tests/test_fault_*.py).

Each fault test runs a few trials in the normal suite (CI) and the rest only with `-m fault`;
EDDY_FAULT_TRIALS sets how many trials a fault test runs in all (default 10).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

FAULT_TRIALS = int(os.environ.get("EDDY_FAULT_TRIALS", "10"))
# Seconds a server process may take to start: generous, because fault trials run while the
# machine is loaded (by the trial's own clients, and by whatever else CI runs).
STARTUP = 60.0


def trials(in_ci: int) -> list[Any]:
    """Trial numbers 0..FAULT_TRIALS-1: the first `in_ci` always run, the others are `fault`."""
    total = max(FAULT_TRIALS, in_ci)
    return [
        pytest.param(i, id=f"trial{i}", marks=() if i < in_ci else pytest.mark.fault)
        for i in range(total)
    ]


def open_fds(pid: int) -> int:
    """Descriptors the process holds (its sockets among them)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    """Resident memory of the process, from /proc (Linux, as CI)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")

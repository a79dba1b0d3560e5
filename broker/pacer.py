"""One timer for every subscription that has records held back: those paced by `max_rate=`
waiting for their next slot, and `on_slow=conflate` ones waiting for their connection to drain.

No task and no timer per subscriber (nor per record): the hub's pacer ticks every `TICK` seconds
while it has members and calls each one's `pace(now)`; a member that has nothing left to wait
for answers False and leaves until it is added again. Live records that may go out at once are
written by the fan-out pass as usual; the pacer only handles what had to wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("eddy.pacer")

TICK = 0.05  # seconds between looks: a paced record waits at most about this long for its slot


class Paced(Protocol):
    def pace(self, now: float) -> bool:
        """Send what may go out at `now` (loop time); False: nothing left to wait for."""

    def pace_failed(self) -> None:
        """`pace` raised: end the session (one broken session must not stop the others)."""


class Pacer:
    def __init__(self, tick: float = TICK) -> None:
        self._tick = tick
        self._members: dict[Paced, None] = {}  # insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: Paced) -> None:
        """Look after `member` from the next tick on (again, if it was already)."""
        self._members[member] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._on_tick)

    def discard(self, member: Paced) -> None:
        self._members.pop(member, None)

    def _on_tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for member in list(self._members):
            try:
                waiting = member.pace(now)
            except Exception:
                log.exception("paced delivery failed")
                waiting = False
                member.pace_failed()
            if not waiting:
                self._members.pop(member, None)
        self._timer = loop.call_later(self._tick, self._on_tick) if self._members else None

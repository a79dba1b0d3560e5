"""WebSocket keepalive for every connection of one server: one timer, not two per connection.

uvicorn pings each connection from its own timer and arms a second one per ping for the pong
deadline; at 10,000 idle phones that was most of the server's idle CPU. Here one sweep per event
loop keeps a timing wheel of when each connection next needs a look:

- a connection the peer has sent anything to within the ping interval needs no ping (a frame,
  a pong, a message: the peer is alive), so only quiet connections are pinged, and an active one
  is looked at about once per interval;
- a quiet one gets the same pre-built ping frame (no framing, no random payload: any pong or any
  data after the ping proves the peer alive), and if nothing arrives within the timeout it is
  failed with 1011, as uvicorn does.

Looks happen up to one tick early, so a vanished peer is dropped at most interval + timeout
after it last sent something (the contract's bound for group members), and a pong is waited for
at least timeout - tick. A tick that finds many connections due handles them in bounded steps.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

PING_FRAME = b"\x89\x04eddy"  # FIN + ping opcode, unmasked, 4-byte payload
MAX_TICK = 0.25  # seconds between looks at the wheel
STEP = 2000  # connections looked at per event-loop step


class Member(Protocol):
    """A connection under keepalive (EddyWebSocketProtocol)."""

    keepalive: KeepaliveSweep | None
    heard_at: float  # loop time the peer last sent anything
    ping_at: float | None  # loop time of the ping not answered yet

    def send_ping_frame(self) -> bool:
        """Write PING_FRAME; False if the connection is closing (nothing to keep alive)."""

    def keepalive_timeout(self) -> None:
        """No answer to the ping: fail the connection."""


class KeepaliveSweep:
    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, timeout: float) -> None:
        self._loop = loop
        self.interval = interval
        self.timeout = timeout
        self.tick = min(MAX_TICK, interval / 4, timeout / 4)
        self._wheel: dict[int, list[Member]] = {}
        self._slot = int(loop.time() / self.tick)  # the next slot to look at
        self._due: list[Member] = []
        self._timer: asyncio.TimerHandle | None = None
        self.members = 0

    def add(self, member: Member) -> None:
        member.keepalive = self
        member.heard_at = now = self._loop.time()
        member.ping_at = None
        self.members += 1
        self._at(now + self.interval - self.tick, member)
        if self._timer is None and not self._due:
            self._timer = self._loop.call_later(self.tick, self._on_tick)

    def remove(self, member: Member) -> None:
        """Stop looking after `member` (its entry in the wheel is dropped when its slot comes)."""
        if member.keepalive is self:
            member.keepalive = None
            self.members -= 1

    def _at(self, when: float, member: Member) -> None:
        slot = max(int(when / self.tick), self._slot)
        entries = self._wheel.get(slot)
        if entries is None:
            self._wheel[slot] = [member]
        else:
            entries.append(member)

    def _on_tick(self) -> None:
        self._timer = None
        last = int(self._loop.time() / self.tick)
        wheel, due = self._wheel, self._due
        while self._slot <= last:
            entries = wheel.pop(self._slot, None)
            self._slot += 1
            if entries:
                due.extend(entries)
        self._step()

    def _step(self) -> None:
        due = self._due
        batch = due[-STEP:]
        del due[-STEP:]
        now = self._loop.time()
        for member in batch:
            if member.keepalive is self:
                self._look(member, now)
        if due:
            self._loop.call_soon(self._step)
        elif self.members or self._wheel:
            self._timer = self._loop.call_later(self.tick, self._on_tick)
        else:
            _SWEEPS.pop((self._loop, self.interval, self.timeout), None)

    def _look(self, member: Member, now: float) -> None:
        early = self.tick
        ping_at = member.ping_at
        if ping_at is not None:
            if member.heard_at < ping_at:  # nothing since the ping
                if now >= ping_at + self.timeout - early:
                    self.remove(member)
                    member.keepalive_timeout()
                else:
                    self._at(ping_at + self.timeout - early, member)
                return
            member.ping_at = None  # answered
        quiet_until = member.heard_at + self.interval - early
        if now < quiet_until:
            self._at(quiet_until, member)
        elif member.send_ping_frame():
            member.ping_at = now
            self._at(now + self.timeout - early, member)
        else:
            self.remove(member)


_SWEEPS: dict[tuple[asyncio.AbstractEventLoop, float, float], KeepaliveSweep] = {}


def sweep_for(loop: asyncio.AbstractEventLoop, interval: float, timeout: float) -> KeepaliveSweep:
    """The sweep of this loop (one per server; it goes away with its last connection)."""
    key = (loop, interval, timeout)
    sweep = _SWEEPS.get(key)
    if sweep is None:
        sweep = _SWEEPS[key] = KeepaliveSweep(loop, interval, timeout)
    return sweep

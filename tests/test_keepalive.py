"""The server-wide keepalive sweep (routers/ws/keepalive.py) over stand-in connections on a real
event loop: quiet peers are pinged and dropped when they do not answer, answering or talking
peers are kept, and talking peers are not pinged at all."""

from __future__ import annotations

import asyncio

from eddy.routers.ws.keepalive import KeepaliveSweep, sweep_for


class Peer:
    def __init__(self, loop: asyncio.AbstractEventLoop, answers: bool) -> None:
        self.loop = loop
        self.answers = answers
        self.keepalive: KeepaliveSweep | None = None
        self.heard_at = 0.0
        self.ping_at: float | None = None
        self.pings = 0
        self.failed = False

    def send_ping_frame(self) -> bool:
        self.pings += 1
        if self.answers:  # the pong comes back on a later loop step
            self.loop.call_soon(self.hear)
        return True

    def hear(self) -> None:
        self.heard_at = self.loop.time()

    def keepalive_timeout(self) -> None:
        self.failed = True


async def _run() -> tuple[Peer, Peer, Peer, KeepaliveSweep]:
    loop = asyncio.get_running_loop()
    sweep = sweep_for(loop, 0.1, 0.1)
    silent, answering, talking = Peer(loop, False), Peer(loop, True), Peer(loop, False)
    for peer in (silent, answering, talking):
        sweep.add(peer)
    while not silent.failed:
        talking.hear()
        await asyncio.sleep(0.01)
    while answering.pings < 3:  # the answering peer keeps being pinged and kept
        talking.hear()
        await asyncio.sleep(0.01)
    return silent, answering, talking, sweep


def test_sweep_drops_silent_peers_and_keeps_live_ones() -> None:
    silent, answering, talking, sweep = asyncio.run(_run())
    assert silent.pings == 1 and silent.failed and silent.keepalive is None
    assert not answering.failed and answering.keepalive is sweep
    assert talking.pings == 0 and not talking.failed
    assert sweep.members == 2

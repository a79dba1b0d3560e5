"""Streaming connection slots: WebSockets and SSE streams share --max-websockets, and shutdown
waits for the last one to close."""

from __future__ import annotations

import asyncio
import contextlib


class ConnectionSlots:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.open = 0
        self._none_open = asyncio.Event()
        self._none_open.set()

    def take(self) -> bool:
        """Take a slot; False when all are taken."""
        if self.open >= self._limit:
            return False
        self.open += 1
        self._none_open.clear()
        return True

    def release(self) -> None:
        self.open -= 1
        if self.open == 0:
            self._none_open.set()

    async def all_released(self, seconds: float) -> None:
        """Wait (at most `seconds`) until no slot is taken."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_open.wait(), seconds)

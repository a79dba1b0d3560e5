"""What the examples share: which WebSocket closes are worth a reconnect, the backoff between
attempts, and ending with the server's message when reconnecting cannot help.

- Permanent (4400 bad parameters, 4401 unauthorized, 4403 forbidden, 4404 topic not found or
  deleted): the server sent an `error` frame just before the close; the example prints its
  code and message and exits with status 1. Reconnecting would fail the same way (and, for a
  deleted topic, could re-create it through auto-create).
- Anything else (1001/1012 server restarting, 1006 connection lost, 1011, 1013 too many
  connections, 4408 too slow, refused connections): wait (full-jitter exponential backoff),
  reconnect and resume by offsets, or at the group's committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
from collections.abc import Coroutine
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

PERMANENT_CLOSE_CODES = frozenset({4400, 4401, 4403, 4404})
TRANSIENT_ERRORS = (OSError, TimeoutError, websockets.InvalidHandshake)

# The server, e.g. ws://127.0.0.1:8080 (EDDY_URL; http:// works too).
BASE_URL = os.environ.get("EDDY_URL", "ws://127.0.0.1:8080").replace("http", "ws", 1)


class PermanentError(Exception):
    """The server refused for good: its error code and message."""

    def __init__(self, close_code: int, error: dict[str, Any] | None, reason: str) -> None:
        self.close_code = close_code
        self.code = str(error.get("code")) if error else f"close_{close_code}"
        self.message = str(error.get("message")) if error else reason
        super().__init__(f"{self.code}: {self.message} (WebSocket close {close_code})")


class Backoff:
    """Full jitter: a random delay in [0, min(most, first * 2^attempt)), so that many clients
    that lost the server at once do not come back at once."""

    def __init__(self, first: float = 0.25, most: float = 30.0) -> None:
        self.first = first
        self.most = most
        self.attempts = 0

    def reset(self) -> None:
        self.attempts = 0

    async def wait(self) -> None:
        delay = random.uniform(0, min(self.most, self.first * 2**self.attempts))
        self.attempts = min(self.attempts + 1, 30)
        await asyncio.sleep(delay)


def check_close(code: int | None, reason: str, error: dict[str, Any] | None) -> str:
    """How a connection ended: raises PermanentError if reconnecting cannot help, else returns
    a description for the log. `error` is the last error frame the server sent on it."""
    code = 1006 if code is None else code
    if code in PERMANENT_CLOSE_CODES:
        raise PermanentError(code, error, reason)
    return f"closed {code}{f' ({reason})' if reason else ''}"


def closed_exception(exc: websockets.ConnectionClosed, error: dict[str, Any] | None) -> str:
    """`check_close` for a ConnectionClosed raised while sending or receiving."""
    received = exc.rcvd
    if received is None:  # no close frame: the connection was lost
        return check_close(None, "", error)
    return check_close(received.code, received.reason, error)


async def unread_error(ws: ClientConnection) -> dict[str, Any] | None:
    """The connection-level error frame among what a closed connection received and nobody
    read yet (None if there is none)."""
    error = None
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == "error" and "id" not in message:
                error = message
    return error


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run an example; a permanent error ends it with the server's message and exit status 1."""
    try:
        asyncio.run(main)
    except PermanentError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)

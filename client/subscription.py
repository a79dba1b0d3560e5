"""`Subscription`: a topic followed over a WebSocket that reconnects by itself.

Records come out of `async for record in subscription` (or `await get()`), in order. A
transient close (1001/1012 server restarting, a lost network, 4408 too slow, ...) reconnects
after a full-jitter backoff and resumes with `offsets=`, the next offset of every partition
after the last record received, so nothing is lost or repeated. In group mode the resume point
is the group's committed offsets instead: what was delivered and not committed comes again
(at-least-once). A permanent close (4400/4401/4403/4404) ends the iteration with the server's
error (a `ClientError` subclass), after the records received before it.

One task reads the WebSocket into a bounded buffer: when `max_buffer` records wait unread it
stops reading (the server's slow-consumer rules then apply), except while a commit waits for
its answer (which comes after the records sent before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from eddy.client.connection import Backoff, close_error, dumps
from eddy.client.errors import ClientError, Closed, ConnectionLost, RequestRejected, server_error
from eddy.client.records import Record

if TYPE_CHECKING:
    from eddy.client.rest import AsyncClient

DisconnectHook = Callable[[ClientError, float], None]
AssignmentHook = Callable[[dict[int, int]], None]


@dataclass
class _Start:
    """The positions a connection starts at (its `subscribed` or `assignment` frame), queued
    in order with the records so that `positions` moves as the caller reads."""

    offsets: dict[int, int]


@dataclass
class _Pending:
    future: asyncio.Future[dict[int, int]]
    offsets: dict[int, int]


class Subscription:
    """Made by `AsyncClient.subscribe`. `on_disconnect(error, delay)` is called after each
    transient close (reconnecting in `delay` s); `on_assignment(offsets)` in group mode after
    every rebalance, with the owned partitions and where they start."""

    def __init__(
        self,
        client: AsyncClient,
        topic: str,
        params: dict[str, str],
        offsets: dict[int, int],
        group: str | None,
        *,
        retry_first_connect: bool = True,
        max_buffer: int = 1000,
    ) -> None:
        self.client = client
        self.topic = topic
        self.group = group
        self.on_disconnect: DisconnectHook | None = None
        self.on_assignment: AssignmentHook | None = None
        self._params = params
        self._retry_first_connect = retry_first_connect
        self._max_buffer = max_buffer
        self._received = dict(offsets)  # next offset per partition after what was received
        self._delivered = dict(offsets)  # ... after what the caller read
        self._assigned: set[int] = set()  # group mode
        self._handled: dict[int, int] = {}  # group mode: next offset after what was read
        self._committed: dict[int, int] = {}  # group mode: what the group has, as far as known
        self._queue: deque[Record | _Start] = deque()
        self._pending: deque[_Pending] = deque()
        self._arrived = asyncio.Event()  # something was queued, or the subscription ended
        self._room = asyncio.Event()  # the reader may go on
        self._live = asyncio.Event()
        self._ended = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error: dict[str, Any] | None = None
        self._error: ClientError | None = None
        self._closed = False
        self._backoff = Backoff(client.min_delay, client.max_delay)
        self.state = "idle"  # connecting | live | reconnecting | stopped | failed

    # --- the caller's side --------------------------------------------------------------------
    async def __aenter__(self) -> Subscription:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Record:
        record = await self.get()
        if record is None:
            raise StopAsyncIteration
        return record

    def start(self) -> None:
        """Open the WebSocket (iteration does this by itself)."""
        if self._task is None and not self._ended.is_set():
            self.state = "connecting"
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def get(self) -> Record | None:
        """The next record (None after `close()`); raises the server's error once a permanent
        one ended the subscription. Cancelling it (`asyncio.timeout`) loses nothing."""
        self.start()
        while True:
            while self._queue:
                item = self._queue.popleft()
                if len(self._queue) < self._max_buffer:
                    self._room.set()
                if isinstance(item, _Start):
                    self._delivered.update(item.offsets)
                    continue
                if self.group is not None:
                    if item.partition not in self._assigned:
                        continue  # revoked meanwhile: its new owner reads it
                    self._handled[item.partition] = item.offset + 1
                self._delivered[item.partition] = item.offset + 1
                return item
            if self._ended.is_set():
                if self._error is not None:
                    raise self._error
                return None
            self._arrived.clear()
            await self._arrived.wait()

    async def wait_live(self) -> None:
        """Until the server has confirmed the subscription (its first frame): every record
        produced after this returns is delivered. Raises if the subscription ended instead."""
        self.start()
        live = asyncio.ensure_future(self._live.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({live, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            live.cancel()
            ended.cancel()
        if self._ended.is_set():
            raise self._error or Closed("closed", "the subscription was closed")

    @property
    def positions(self) -> dict[int, int]:
        """The next offset per partition after the records read so far (not group mode): a
        later `subscribe(offsets=...)` with these continues exactly here."""
        return dict(sorted(self._delivered.items()))

    @property
    def assignment(self) -> list[int]:
        """Group mode: the partitions this member owns now."""
        return sorted(self._assigned)

    @property
    def error(self) -> ClientError | None:
        """The permanent error that ended the subscription, if one did."""
        return self._error

    async def commit(self, offsets: dict[int, int] | None = None) -> dict[int, int]:
        """Group mode: commit the next offset after the records read so far, per partition
        owned now (or the given `offsets`). Returns what the server committed once it is on
        disk; raises the server's error (`not_assigned`: lost in a rebalance) or
        ConnectionLost when not connected."""
        if self.group is None:
            raise RequestRejected("invalid_request", "commit() needs group mode (group=...)")
        ws = self._ws
        if ws is None or not self._live.is_set():
            raise ConnectionLost("disconnected", "not connected: nothing committed")
        if offsets is None:
            offsets = {
                p: o
                for p, o in self._handled.items()
                if p in self._assigned and o != self._committed.get(p)
            }
        if not offsets:
            return {}
        pending = _Pending(asyncio.get_running_loop().create_future(), dict(offsets))
        self._pending.append(pending)
        self._room.set()  # the answer comes after records already sent: read on
        try:
            await ws.send(
                dumps({"type": "commit", "offsets": {str(p): o for p, o in offsets.items()}})
            )
        except ConnectionClosed:
            with contextlib.suppress(ValueError):
                self._pending.remove(pending)
            raise ConnectionLost(
                "disconnected", "the connection dropped: nothing committed"
            ) from None
        return await pending.future

    async def close(self) -> None:
        """Stop for good (no reconnect); records not read yet are dropped."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        ws = self._ws  # taken first: the reading task forgets it when it is cancelled
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if ws is not None:
            await ws.close()
        self._finish(None, "stopped")

    # --- the reading task ---------------------------------------------------------------------
    async def _run(self) -> None:
        connected_once = False
        try:
            while not self._closed:
                params = dict(self._params)
                if self.group is None and self._received:
                    params["offsets"] = ",".join(
                        f"{p}:{o}" for p, o in sorted(self._received.items())
                    )
                try:
                    ws = await self.client._websocket(self.topic, "ws", params)
                except ClientError as refused:
                    if refused.permanent or not (connected_once or self._retry_first_connect):
                        self._finish(refused, "failed")
                        return
                    await self._pause(refused)
                    continue
                connected_once = True
                ended = await self._read(ws)
                if ended.permanent:
                    self._finish(ended, "failed")
                    return
                await self._pause(ended)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must end the iteration, not hang it
            self._finish(ClientError("client_error", f"subscription failed: {exc!r}"), "failed")

    async def _read(self, ws: ClientConnection) -> ClientError:
        """Read one connection until it ends; returns why it ended."""
        self._ws = ws
        self._last_error = None
        try:
            async for message in ws:
                try:
                    frame = json.loads(message)
                except ValueError:
                    continue  # not JSON: not ours to understand
                if isinstance(frame, dict):
                    self._on_frame(frame)
                while len(self._queue) >= self._max_buffer and not self._pending:
                    self._room.clear()
                    await self._room.wait()
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            self._live.clear()
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(
                    ConnectionLost(
                        "disconnected", "the connection dropped before the commit was answered"
                    )
                )
        self._pending.clear()
        if self.group is not None:
            # The group's committed offsets are the resume point: what this connection
            # delivered and nobody read is delivered again, so it is not handed out now.
            self._queue = deque(item for item in self._queue if isinstance(item, _Start))
            self._assigned.clear()
            self._handled.clear()
            self._committed.clear()
        return close_error(ws, self._last_error)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "record":
            record = Record.from_json(frame)
            if self.group is None:
                if record.offset < self._received.get(record.partition, -1):
                    return  # seen already
                self._received[record.partition] = record.offset + 1
            elif record.partition not in self._assigned:
                return
            self._queue.append(record)
            self._arrived.set()
        elif kind == "subscribed":
            starts = _offsets(frame)
            self._received.update(starts)
            self._queue.append(_Start(starts))
            self._went_live()
        elif kind == "assignment":
            self._on_assignment(_offsets(frame))
            self._went_live()
        elif kind == "committed":
            offsets = {int(p): int(o) for p, o in (frame.get("offsets") or {}).items()}
            self._committed.update(offsets)
            if self._pending:
                pending = self._pending.popleft()
                if not pending.future.done():
                    pending.future.set_result(offsets)
        elif kind == "error":
            if self._pending:  # the server answers commits in order: an error then is one's
                pending = self._pending.popleft()
                if not pending.future.done():
                    pending.future.set_exception(server_error(frame))
            else:
                self._last_error = frame  # about the connection: its close follows

    def _went_live(self) -> None:
        self._backoff.reset()
        self.state = "live"
        self._live.set()
        self._arrived.set()

    def _on_assignment(self, starts: dict[int, int]) -> None:
        for p in list(self._assigned):
            if p not in starts:
                self._assigned.discard(p)
                self._handled.pop(p, None)
                self._committed.pop(p, None)
        for p, offset in starts.items():
            if p not in self._assigned:
                # Where the member starts is the group's committed offset (or `from`).
                self._assigned.add(p)
                self._handled[p] = offset
                self._committed[p] = offset
        self._queue = deque(
            item
            for item in self._queue
            if isinstance(item, _Start) or item.partition in self._assigned
        )
        if self.on_assignment is not None:
            self.on_assignment(dict(sorted(starts.items())))

    async def _pause(self, error: ClientError) -> None:
        delay = self._backoff.next_delay()
        self.state = "reconnecting"
        if self.on_disconnect is not None:
            self.on_disconnect(error, delay)
        await asyncio.sleep(delay)

    def _finish(self, error: ClientError | None, state: str) -> None:
        if self._ended.is_set():
            return
        self._error = error
        self.state = state
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(
                    error or Closed("closed", "the subscription was closed")
                )
        self._pending.clear()
        self._ended.set()
        self._arrived.set()
        self._room.set()


def _offsets(frame: dict[str, Any]) -> dict[int, int]:
    """{partition: offset} of a `subscribed` or `assignment` frame."""
    out: dict[int, int] = {}
    for p, info in (frame.get("partitions") or {}).items():
        if isinstance(info, dict) and isinstance(info.get("offset"), int):
            out[int(p)] = info["offset"]
    return out

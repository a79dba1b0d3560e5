"""`Publisher`: records published over one WebSocket, each with its own ack future.

Idempotent by default: the WebSocket carries `?producer_id=` and every record a `sequence`.
After a reconnect the records not yet answered are sent again, in order, with the sequences
they had; the server, which dedupes by sequence, answers one it stored already with its
original ack, so each future settles once and no record is stored twice. A refused record
(say `record_too_large`) does not use up its sequence: the records sent after it are refused
as `out_of_order_sequence` with the sequence the server expects, renumbered from there and
sent again. Without a producer id (`idempotent=False`), a record in flight when the
connection drops fails with ConnectionLost: it may or may not be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from eddy.client.connection import Backoff, close_error, dumps
from eddy.client.errors import ClientError, Closed, ConnectionLost, server_error
from eddy.client.records import Ack

if TYPE_CHECKING:
    from eddy.client.rest import AsyncClient

RENUMBER_LIMIT = 3  # renumberings of one record before its out_of_order_sequence is final


@dataclass(eq=False)
class _Entry:
    id: int
    record: dict[str, Any]
    sequence: int | None
    future: asyncio.Future[Ack]
    renumbered: int = 0


@dataclass
class _Connection:
    ws: ClientConnection
    wire: deque[tuple[_Entry, int | None]] = field(default_factory=deque)  # sent, unanswered


class Publisher:
    """Made by `AsyncClient.publisher`. `send(record)` returns a future of the record's Ack;
    `await publish(record)` waits for it. `on_disconnect(error, delay)` is called after each
    transient close."""

    def __init__(
        self,
        client: AsyncClient,
        topic: str,
        *,
        producer_id: str | None,
        idempotent: bool,
        sequence: int,
        max_in_flight: int,
    ) -> None:
        self.client = client
        self.topic = topic
        if producer_id is None and idempotent:
            producer_id = f"py-{uuid.uuid4().hex}"
        self.producer_id = producer_id
        self.next_sequence = sequence  # the sequence the next new record gets
        self.max_in_flight = max_in_flight
        self.on_disconnect: Callable[[ClientError, float], None] | None = None
        self.state = "idle"
        self._entries: list[_Entry] = []  # unanswered records, oldest first
        self._sent = 0  # entries[:_sent] were sent on the current connection
        self._resyncing = False
        self._ids = 0
        self._connection: _Connection | None = None
        self._more = asyncio.Event()  # something to send, or room to send it
        self._task: asyncio.Task[None] | None = None
        self._last_error: dict[str, Any] | None = None
        self._error: ClientError | None = None
        self._stopped = False
        self._ended = asyncio.Event()
        self._backoff = Backoff(client.min_delay, client.max_delay)

    async def __aenter__(self) -> Publisher:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            await self.flush()
        await self.close()

    def start(self) -> None:
        if self._task is None and not self._stopped:
            self.state = "connecting"
            self._task = asyncio.get_running_loop().create_task(self._run())

    def send(self, record: Mapping[str, Any]) -> asyncio.Future[Ack]:
        """Queue one record (`{"key", "value" | "value_base64", "headers", "partition",
        "timestamp"}`); the future resolves with its Ack once it is stored, or fails with the
        server's error for it (or the publisher's, if it stopped)."""
        self.start()
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        if self._stopped:
            future.set_exception(self._error or Closed("closed", "the publisher is closed"))
            return future
        fields = {k: v for k, v in record.items() if k not in ("id", "sequence")}
        self._ids += 1
        sequence = None
        if self.producer_id is not None:
            sequence = self.next_sequence
            self.next_sequence += 1
        self._entries.append(_Entry(self._ids, fields, sequence, future))
        self._more.set()
        return future

    async def publish(self, record: Mapping[str, Any]) -> Ack:
        """Send one record and wait for its Ack."""
        return await self.send(record)

    @property
    def pending(self) -> int:
        """Records queued or sent and not yet answered."""
        return len(self._entries)

    @property
    def error(self) -> ClientError | None:
        return self._error

    async def flush(self) -> None:
        """Until every record sent so far is answered (acked or refused), or the publisher
        stopped."""
        futures = [e.future for e in self._entries]
        if futures:
            await asyncio.wait(futures)

    async def close(self) -> None:
        """Stop: records not answered yet fail with Closed."""
        if self._stopped:
            return
        connection = self._connection
        self._finish(None, "stopped")
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if connection is not None:
            await connection.ws.close()

    # --- the connection task ------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while not self._stopped:
                params = {"producer_id": self.producer_id} if self.producer_id else {}
                try:
                    ws = await self.client._websocket(self.topic, "publish", params)
                except ClientError as refused:
                    if refused.permanent:
                        self._finish(refused, "failed")
                        return
                    await self._pause(refused)
                    continue
                ended = await self._serve(ws)
                if ended.permanent:
                    self._finish(ended, "failed")
                    return
                await self._pause(ended)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must fail the futures, not leave them hanging
            self._finish(ClientError("client_error", f"publisher failed: {exc!r}"), "failed")

    async def _serve(self, ws: ClientConnection) -> ClientError:
        connection = _Connection(ws)
        self._connection = connection
        self._sent = 0
        self._resyncing = False
        self._last_error = None
        self.state = "live"
        writer = asyncio.get_running_loop().create_task(self._write(connection))
        try:
            async for message in ws:
                try:
                    frame = json.loads(message)
                except ValueError:
                    continue
                if isinstance(frame, dict):
                    self._on_frame(connection, frame)
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer
            self._connection = None
        error = close_error(ws, self._last_error)
        if self.producer_id is None and not error.permanent:
            # Sent but unanswered: it may or may not be stored, and resending could store it
            # twice.
            for entry, _ in connection.wire:
                self._remove(entry)
                _fail(
                    entry,
                    ConnectionLost(
                        "disconnected",
                        "the connection dropped before the ack: the record may or may not be "
                        "stored (an idempotent publisher resends safely)",
                        close_code=error.close_code,
                    ),
                )
        self._sent = 0
        return error

    async def _write(self, connection: _Connection) -> None:
        """Send what the window allows, in order (the answers come in the same order)."""
        while True:
            while (
                not self._resyncing
                and self._sent < len(self._entries)
                and len(connection.wire) < self.max_in_flight
            ):
                entry = self._entries[self._sent]
                frame = {**entry.record, "id": entry.id}
                if entry.sequence is not None:
                    frame["sequence"] = entry.sequence
                connection.wire.append((entry, entry.sequence))
                self._sent += 1
                await connection.ws.send(dumps(frame))
            self._more.clear()
            await self._more.wait()

    def _on_frame(self, connection: _Connection, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "error" and "id" not in frame:
            self._last_error = frame  # about the connection: its close follows
            return
        if (kind != "ack" and kind != "error") or not connection.wire:
            return
        entry, sent_as = connection.wire.popleft()
        stale = sent_as != entry.sequence  # renumbered since it was sent
        if kind == "ack":
            self._backoff.reset()
            self._remove(entry)
            if not entry.future.done():
                entry.future.set_result(Ack.from_json(frame))
        elif frame.get("code") == "out_of_order_sequence" and entry.sequence is not None:
            expected = (frame.get("details") or {}).get("expected")
            if stale:
                pass  # an old send of a renumbered record: it is sent again
            elif isinstance(expected, int) and entry.renumbered < RENUMBER_LIMIT:
                self._renumber_from(entry, expected)
            else:
                self._remove(entry)
                _fail(entry, server_error(frame))
        else:
            self._remove(entry)
            _fail(entry, server_error(frame))
        if self._resyncing and not connection.wire:
            # Every send made before the renumbering is answered (none was stored): send all
            # of them again, with their new numbers.
            self._resyncing = False
            self._sent = 0
        self._more.set()

    def _renumber_from(self, entry: _Entry, expected: int) -> None:
        """Number `entry` and every record after it from `expected` on; nothing more is sent
        until what is on the wire (with the old numbers) is answered."""
        assert entry.sequence is not None
        delta = expected - entry.sequence
        for later in self._entries[self._entries.index(entry) :]:
            if later.sequence is not None:
                later.sequence += delta
        self.next_sequence += delta
        entry.renumbered += 1
        self._resyncing = True

    def _remove(self, entry: _Entry) -> None:
        with contextlib.suppress(ValueError):
            index = self._entries.index(entry)
            del self._entries[index]
            if index < self._sent:
                self._sent -= 1

    async def _pause(self, error: ClientError) -> None:
        delay = self._backoff.next_delay()
        self.state = "reconnecting"
        if self.on_disconnect is not None:
            self.on_disconnect(error, delay)
        await asyncio.sleep(delay)

    def _finish(self, error: ClientError | None, state: str) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._error = error
        self.state = state
        reason = error or Closed("closed", "the publisher was closed before the ack")
        for entry in self._entries:
            _fail(entry, reason)
        self._entries.clear()
        self._ended.set()
        self._more.set()


def _fail(entry: _Entry, error: ClientError) -> None:
    if not entry.future.done():
        entry.future.set_exception(error)

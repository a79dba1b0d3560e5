"""WebSocket publishing: records in, acks out, in the order the records came.

The reader queues each record with the producer as soon as it arrives (so records from one
connection commit in order and many in flight share a group commit); the answerer awaits them in
arrival order and sends each ack or error. A bounded queue between the two gives backpressure:
when it is full the reader stops reading the socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from broker.codec import check_text, parse_json, validation_error
from broker.drafts import RecordDraft, draft_from_record
from broker.events import Acked, End, Event, Refused
from models.errors import EddyError, InvalidRequest
from models.frames import PublishFrame
from storage import AppendedRecord, ProducerSequence


class AnswerSink(Protocol):
    """The transport's side: sends one answer (waits while the peer does not read)."""

    async def answer(self, event: Event) -> None: ...


Submit = Callable[
    [Sequence[RecordDraft], ProducerSequence | None], asyncio.Future[list[AppendedRecord]]
]


class PublishSession:
    def __init__(
        self,
        topic: str,
        submit: Submit,
        sink: AnswerSink,
        max_in_flight: int,
        producer_id: str | None,
    ) -> None:
        self.topic = topic
        self._producer_id = producer_id
        self._submit = submit
        self._sink = sink
        self._answers: asyncio.Queue[tuple[Any, asyncio.Future[list[AppendedRecord]] | EddyError]]
        self._answers = asyncio.Queue(maxsize=max_in_flight)
        self._done: asyncio.Future[End] = asyncio.get_running_loop().create_future()

    def finish(self, end: End) -> None:
        """End the session; `run` returns `end` (None: the client is gone)."""
        if not self._done.done():
            self._done.set_result(end)

    async def run(self, incoming: AsyncIterator[str | bytes]) -> End:
        tasks = [
            asyncio.create_task(self._read_loop(incoming)),
            asyncio.create_task(self._answer_loop()),
        ]
        try:
            return await asyncio.shield(self._done)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_loop(self, incoming: AsyncIterator[str | bytes]) -> None:
        async for frame in incoming:
            await self._answers.put(self._accept(frame))
        await self._answers.join()  # the client closed: finish answering what it sent
        self.finish(None)

    def _accept(
        self, frame: str | bytes
    ) -> tuple[Any, asyncio.Future[list[AppendedRecord]] | EddyError]:
        record_id: Any = None
        try:
            if isinstance(frame, bytes):
                raise InvalidRequest("send each record as a JSON text frame")
            data = parse_json(frame)
            if not isinstance(data, dict):
                raise InvalidRequest("each frame must be a JSON object (one record)")
            record_id = data.get("id")
            if not isinstance(record_id, str | int) or isinstance(record_id, bool):
                record_id = None
            elif isinstance(record_id, str):
                check_text(record_id, "id")
            try:
                record = PublishFrame.model_validate(data)
            except ValidationError as exc:
                raise validation_error(exc) from None
            return record_id, self._submit([draft_from_record(record)], self._producer(record))
        except EddyError as exc:
            return record_id, exc

    def _producer(self, record: PublishFrame) -> ProducerSequence | None:
        if self._producer_id is None:
            if record.sequence is not None:
                raise InvalidRequest("a sequence needs ?producer_id= on the publish URL")
            return None
        if record.sequence is None:
            raise InvalidRequest("with ?producer_id=, every record needs a sequence")
        return ProducerSequence(self._producer_id, record.sequence)

    async def _answer_loop(self) -> None:
        try:
            await self._answer_all()
        except asyncio.CancelledError:
            raise
        except Exception:  # the connection broke while sending
            self.finish(None)

    async def _answer_all(self) -> None:
        while True:
            record_id, outcome = await self._answers.get()
            try:
                if isinstance(outcome, EddyError):
                    raise outcome
                answer: Event = Acked(record_id, (await outcome)[0])
            except EddyError as exc:
                answer = Refused(exc, {"id": record_id})
            await self._sink.answer(answer)
            self._answers.task_done()

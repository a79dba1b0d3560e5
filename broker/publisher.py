"""WebSocket publishing: records in, acks out, in the order the records came.

Each record is a produce request of its own (its own ack or error), but records that arrived
together are handled together: the reader takes every frame already received (up to the in-flight
cap), parses each, and hands the records to the producer in one call, which queues them as one
batch with one future (they would share the group commit anyway). The answerer waits for the
oldest unanswered record's commit and sends the answers of every record that is settled by then in
one go. At most `max_in_flight` records are read and not yet answered: while the cap is reached the
reader stops reading the socket (backpressure).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from eddy.broker.codec import check_text, load_json, validation_error
from eddy.broker.drafts import RecordDraft, draft_from_record, frame_draft, plain_drafts
from eddy.broker.events import Acked, End, Event, Refused
from eddy.broker.producer import Producer
from eddy.models.errors import EddyError, InvalidRequest
from eddy.models.frames import PublishFrame
from eddy.models.log import AppendedRecord, ProducerSequence, TopicMeta
from eddy.models.records import MAX_INT64


class FrameSource(Protocol):
    """The transport's side: the client's frames."""

    async def receive(self, limit: int) -> list[str | bytes]:
        """1 to `limit` frames: all that have arrived, up to `limit` (waits for the first);
        [] once the client is gone. What is not taken stays unread."""
        ...


class AnswerSink(Protocol):
    """The transport's side: sends answers, in order, at once (waits while the peer does not
    read)."""

    async def answer(self, events: Sequence[Event]) -> None: ...


# A submitted record's outcome: where it lands (the commit's future and its index in the result)
# or why it was refused.
Outcome = tuple[asyncio.Future[list[AppendedRecord]], int] | EddyError
Submit = Callable[[Sequence[tuple[RecordDraft, ProducerSequence | None]]], list[Outcome]]


def submitter(
    producer: Producer,
    target: Callable[[], tuple[TopicMeta, Mapping[str, Any]]],
    admit: Callable[[], None],
    retry_window: int,
) -> Submit:
    """Submit records as requests of their own, in order: `target` gives the topic and its
    config (or raises), `admit` is each record's rate-limit check (raises). A run of records
    without a producer sequence goes to the producer in one call; an idempotent record is one
    request with its own sequence."""

    def submit(items: Sequence[tuple[RecordDraft, ProducerSequence | None]]) -> list[Outcome]:
        try:
            meta, config = target()
        except EddyError as exc:
            return [exc] * len(items)
        outcomes: list[Outcome] = []
        run: list[RecordDraft] = []

        def flush() -> None:
            if not run:
                return
            future, placed = producer.submit_each(meta, run, config)
            for index in placed:
                if isinstance(index, EddyError):
                    outcomes.append(index)
                else:
                    assert future is not None  # a placed record has a commit
                    outcomes.append((future, index))
            run.clear()

        for draft, sequence in items:
            try:
                admit()
            except EddyError as exc:
                flush()
                outcomes.append(exc)
                continue
            if sequence is None:
                run.append(draft)
                continue
            flush()
            try:
                outcomes.append((producer.submit(meta, [draft], config, sequence, retry_window), 0))
            except EddyError as exc:
                outcomes.append(exc)
        flush()
        return outcomes

    return submit


_FRAME_FIELDS = frozenset(PublishFrame.model_fields)


def _is_plain_id(value: Any) -> bool:
    return value is None or type(value) is str or type(value) is int


def _is_plain_sequence(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value <= MAX_INT64)


class PublishSession:
    def __init__(
        self,
        topic: str,
        submit: Submit,
        sink: AnswerSink,
        max_in_flight: int,
        producer_id: str | None,
        on_refused: Callable[[EddyError], None] | None = None,
    ) -> None:
        self.topic = topic
        self._on_refused = on_refused  # told of each record answered with an error
        self._producer_id = producer_id
        self._submit = submit
        self._sink = sink
        self._max_in_flight = max_in_flight
        self._pending: deque[tuple[Any, Outcome]] = deque()  # (id, outcome), oldest first
        self._unanswered = 0  # records read and not yet answered
        self._answered = asyncio.Event()  # some were answered (room for the reader)
        self._arrived = asyncio.Event()  # records were read (work for the answerer)
        self._done: asyncio.Future[End] = asyncio.get_running_loop().create_future()

    def finish(self, end: End) -> None:
        """End the session; `run` returns `end` (None: the client is gone)."""
        if not self._done.done():
            self._done.set_result(end)

    async def run(self, incoming: FrameSource) -> End:
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

    async def _read_loop(self, incoming: FrameSource) -> None:
        while True:
            room = self._max_in_flight - self._unanswered
            if room <= 0:  # the cap is reached: the socket is not read until answers go out
                await self._wait_answered()
                continue
            frames = await incoming.receive(room)
            if not frames:
                break
            self._take(frames)
        while self._unanswered:  # the client closed: finish answering what it sent
            await self._wait_answered()
        self.finish(None)

    async def _wait_answered(self) -> None:
        self._answered.clear()
        await self._answered.wait()

    def _take(self, frames: list[str | bytes]) -> None:
        accepted = [self._accept(frame) for frame in frames]
        items = [parsed for _, parsed in accepted if not isinstance(parsed, EddyError)]
        outcomes = iter(self._submit(items) if items else ())
        pending = self._pending
        for record_id, parsed in accepted:
            pending.append((record_id, parsed if isinstance(parsed, EddyError) else next(outcomes)))
        self._unanswered += len(frames)
        self._arrived.set()

    def _accept(
        self, frame: str | bytes
    ) -> tuple[Any, tuple[RecordDraft, ProducerSequence | None] | EddyError]:
        record_id: Any = None
        if type(frame) is str and (plain := frame_draft(frame)) is not None:
            record_id, draft, sequence = plain  # decoded and checked by msgspec in one pass
            try:
                return record_id, (draft, self._producer(sequence))
            except EddyError as exc:
                return record_id, exc
        try:
            if isinstance(frame, bytes):
                raise InvalidRequest("send each record as a JSON text frame")
            data, text_is_valid = load_json(frame)
            if not isinstance(data, dict):
                raise InvalidRequest("each frame must be a JSON object (one record)")
            record_id = data.get("id")
            if not isinstance(record_id, str | int) or isinstance(record_id, bool):
                record_id = None
            elif isinstance(record_id, str):
                check_text(record_id, "id")
            return record_id, self._draft(data, text_is_valid)
        except EddyError as exc:
            return record_id, exc

    def _draft(
        self, data: dict[str, Any], text_is_valid: bool
    ) -> tuple[RecordDraft, ProducerSequence | None]:
        """The record of a frame. A plain one (see `plain_drafts`; its id and sequence of exactly
        the model's types) skips the model and gets the draft the model would give."""
        sequence = data.get("sequence")
        plain = None
        if _is_plain_id(data.get("id")) and _is_plain_sequence(sequence):
            plain = plain_drafts([data], text_is_valid, _FRAME_FIELDS)
        if plain is not None:
            draft = plain[0]
        else:
            try:
                record = PublishFrame.model_validate(data)
            except ValidationError as exc:
                raise validation_error(exc) from None
            draft, sequence = draft_from_record(record), record.sequence
        return draft, self._producer(sequence)

    def _producer(self, sequence: int | None) -> ProducerSequence | None:
        if self._producer_id is None:
            if sequence is not None:
                raise InvalidRequest("a sequence needs ?producer_id= on the publish URL")
            return None
        if sequence is None:
            raise InvalidRequest("with ?producer_id=, every record needs a sequence")
        return ProducerSequence(self._producer_id, sequence)

    async def _answer_loop(self) -> None:
        try:
            await self._answer_all()
        except asyncio.CancelledError:
            raise
        except Exception:  # the connection broke while sending
            self.finish(None)

    async def _answer_all(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            oldest = pending[0][1]
            if not isinstance(oldest, EddyError) and not oldest[0].done():
                await asyncio.wait((oldest[0],))  # (a closing session does not cancel it)
            answers = self._settled()
            await self._sink.answer(answers)
            self._unanswered -= len(answers)
            self._answered.set()

    def _settled(self) -> list[Event]:
        """The answers of the oldest unanswered records whose outcome is known, in order."""
        pending = self._pending
        answers: list[Event] = []
        while pending:
            record_id, outcome = pending[0]
            if isinstance(outcome, EddyError):
                answers.append(Refused(outcome, {"id": record_id}))
                if self._on_refused is not None:
                    self._on_refused(outcome)
            else:
                future, index = outcome
                if not future.done():
                    break
                error = future.exception()
                if error is None:
                    answers.append(Acked(record_id, future.result()[index]))
                elif isinstance(error, EddyError):
                    answers.append(Refused(error, {"id": record_id}))
                    if self._on_refused is not None:
                        self._on_refused(error)
                else:
                    raise error
            pending.popleft()
        return answers

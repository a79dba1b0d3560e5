"""In-memory fan-out: after each commit the storage engine tells the hub (a `LogListener`), which
encodes each record's frame once and queues the same string on every interested subscriber.
Long-polling fetches wait here too. Nothing here touches storage or sockets."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from broker.codec import record_frame
from models.errors import TopicNotFound
from storage import StoredRecord

if TYPE_CHECKING:
    from broker.subscriber import Subscriber


class TopicSession(Protocol):
    """An open WebSocket on a topic (subscriber or publisher) that the hub can end."""

    topic: str

    def finish(self, close_code: int | None) -> None: ...


class FanoutHub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self._publishers: dict[str, set[TopicSession]] = defaultdict(set)
        self._waiters: dict[tuple[str, int], list[asyncio.Future[None]]] = defaultdict(list)
        self.closing = False  # the server is shutting down: long-polls stop waiting

    def register(self, subscriber: Subscriber) -> None:
        self._subscribers[subscriber.topic].add(subscriber)

    def unregister(self, subscriber: Subscriber) -> None:
        subs = self._subscribers.get(subscriber.topic)
        if subs is not None:
            subs.discard(subscriber)
            if not subs:
                del self._subscribers[subscriber.topic]

    def register_publisher(self, session: TopicSession) -> None:
        self._publishers[session.topic].add(session)

    def unregister_publisher(self, session: TopicSession) -> None:
        sessions = self._publishers.get(session.topic)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._publishers[session.topic]

    # --- LogListener: the engine tells the hub what the log did --------------------------------
    def on_partitions_added(self, topic: str, partitions: int) -> None:
        for subscriber in list(self._subscribers.get(topic, ())):
            subscriber.partitions_added(partitions)

    def on_topic_deleted(self, topic: str) -> None:
        self.close_topic(topic, TopicNotFound.ws_close_code)

    def on_commit(self, topic: str, records: Sequence[StoredRecord]) -> None:
        """Right after a commit, with the committed records in offset order per partition."""
        subscribers = self._subscribers.get(topic)
        if subscribers:
            frames = [(r.partition, r.offset, r.key, record_frame(topic, r)) for r in records]
            for subscriber in list(subscribers):
                subscriber.offer_live(frames)
        for partition in {r.partition for r in records}:
            self._wake((topic, partition))

    def _wake(self, key: tuple[str, int]) -> None:
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for_data(self, topic: str, partition: int, seconds: float) -> None:
        """Return when the partition gets a commit (or is deleted), or after `seconds`."""
        if self.closing:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = (topic, partition)
        self._waiters[key].append(waiter)
        try:
            await asyncio.wait_for(waiter, seconds)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(key)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]

    def close_topic(self, topic: str, close_code: int) -> None:
        """The topic is gone: end its subscribers and wake its long-polls."""
        sessions: list[TopicSession] = [*self._subscribers.pop(topic, ())]
        sessions += self._publishers.pop(topic, ())
        for session in sessions:
            session.finish(close_code)
        for key in [k for k in self._waiters if k[0] == topic]:
            self._wake(key)

    def close_all(self, close_code: int) -> None:
        """Server shutdown: end every open WebSocket and long-poll."""
        self.closing = True
        for topic in {*self._subscribers, *self._publishers}:
            self.close_topic(topic, close_code)
        for key in list(self._waiters):
            self._wake(key)

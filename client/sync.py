"""`Client`: the blocking face of `AsyncClient`, for scripts and the `eddy` command line.

It runs an `AsyncClient` on an event loop in a background thread and waits for each call, so
both faces behave the same (the same reconnects, resumes and errors). Iterating a
`SyncSubscription` blocks for the next record; a `SyncPublisher`'s `send` returns a
`concurrent.futures.Future` of the Ack.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

from eddy.client.errors import ClientError
from eddy.client.publisher import Publisher
from eddy.client.records import Ack, FetchResult, Record
from eddy.client.rest import DEFAULT_URL, AsyncClient, Start
from eddy.client.subscription import Subscription

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread; `run` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="eddy-client", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            # Ctrl-C (or a timeout) here: the call on the loop is cancelled too.
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class Client:
    """The blocking client: `Client(url, token=...)`, used as a context manager (or `close()`)."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._loop = _LoopThread()
        self._async = self._loop.run(_make(url, options))
        self.url = self._async.url

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self._async.aclose())
        self._loop.stop()

    def request(
        self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        return self._loop.run(self._async.request(method, path, body, params))

    def create_topic(
        self, name: str, partitions: int | None = None, config: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._loop.run(self._async.create_topic(name, partitions, config))

    def list_topics(self) -> list[dict[str, Any]]:
        return self._loop.run(self._async.list_topics())

    def describe_topic(self, name: str) -> dict[str, Any]:
        return self._loop.run(self._async.describe_topic(name))

    def alter_topic(
        self, name: str, partitions: int | None = None, config: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._loop.run(self._async.alter_topic(name, partitions, config))

    def delete_topic(self, name: str) -> None:
        self._loop.run(self._async.delete_topic(name))

    def produce(
        self,
        topic: str,
        records: Iterable[Mapping[str, Any]],
        *,
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> list[Ack]:
        return self._loop.run(
            self._async.produce(topic, list(records), producer_id=producer_id, sequence=sequence)
        )

    def fetch(
        self,
        topic: str,
        partition: int,
        offset: int | Start = "earliest",
        *,
        limit: int | None = None,
        max_bytes: int | None = None,
        timeout_ms: int | None = None,
    ) -> FetchResult:
        return self._loop.run(
            self._async.fetch(
                topic, partition, offset, limit=limit, max_bytes=max_bytes, timeout_ms=timeout_ms
            )
        )

    def offset_for_time(self, topic: str, partition: int, timestamp: int) -> int | None:
        return self._loop.run(self._async.offset_for_time(topic, partition, timestamp))

    def list_groups(self) -> list[dict[str, Any]]:
        return self._loop.run(self._async.list_groups())

    def describe_group(self, group: str) -> dict[str, Any]:
        return self._loop.run(self._async.describe_group(group))

    def commit_group(self, group: str, topic: str, offsets: Mapping[int, int]) -> dict[str, Any]:
        return self._loop.run(self._async.commit_group(group, topic, offsets))

    def reset_group(self, group: str, topic: str, to: Start | int) -> dict[str, Any]:
        return self._loop.run(self._async.reset_group(group, topic, to))

    def delete_group(self, group: str) -> None:
        self._loop.run(self._async.delete_group(group))

    def subscribe(self, topic: str, **options: Any) -> SyncSubscription:
        """`AsyncClient.subscribe`'s options; iterate the result for records."""
        return SyncSubscription(self._loop, self._async.subscribe(topic, **options))

    def publisher(self, topic: str, **options: Any) -> SyncPublisher:
        """`AsyncClient.publisher`'s options."""
        return SyncPublisher(self._loop, self._loop.run(_publisher(self._async, topic, options)))


async def _make(url: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(url, **options)  # created on the loop that will use it


async def _publisher(client: AsyncClient, topic: str, options: dict[str, Any]) -> Publisher:
    publisher = client.publisher(topic, **options)
    publisher.start()
    return publisher


async def _get(subscription: Subscription, seconds: float | None) -> Record | None:
    if seconds is None:
        return await subscription.get()
    try:
        async with asyncio.timeout(seconds):
            return await subscription.get()
    except TimeoutError:
        return None


class SyncSubscription:
    """A blocking `Subscription` (its `on_disconnect` and `on_assignment` hooks run on the
    client's loop thread)."""

    def __init__(self, loop: _LoopThread, subscription: Subscription) -> None:
        self._loop = loop
        self.subscription = subscription

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Record]:
        while (record := self.get()) is not None:
            yield record

    def get(self, timeout: float | None = None) -> Record | None:
        """The next record; None after close() or when `timeout` (s) passes first."""
        return self._loop.run(_get(self.subscription, timeout))

    def wait_live(self, timeout: float | None = None) -> None:
        self._loop.run(self.subscription.wait_live(), timeout)

    def commit(
        self, offsets: dict[int, int] | None = None, timeout: float | None = None
    ) -> dict[int, int]:
        return self._loop.run(self.subscription.commit(offsets), timeout)

    @property
    def positions(self) -> dict[int, int]:
        return self.subscription.positions

    @property
    def assignment(self) -> list[int]:
        return self.subscription.assignment

    @property
    def error(self) -> ClientError | None:
        return self.subscription.error

    def close(self) -> None:
        self._loop.run(self.subscription.close())


class SyncPublisher:
    """A blocking `Publisher`: `send` returns a concurrent future, `publish` waits for it."""

    def __init__(self, loop: _LoopThread, publisher: Publisher) -> None:
        self._loop = loop
        self.publisher = publisher

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.flush()
        self.close()

    def send(self, record: Mapping[str, Any]) -> concurrent.futures.Future[Ack]:
        return asyncio.run_coroutine_threadsafe(self.publisher.publish(record), self._loop.loop)

    def publish(self, record: Mapping[str, Any], timeout: float | None = None) -> Ack:
        return self._loop.run(self.publisher.publish(record), timeout)

    def flush(self) -> None:
        self._loop.run(self.publisher.flush())

    @property
    def pending(self) -> int:
        return self.publisher.pending

    def close(self) -> None:
        self._loop.run(self.publisher.close())

"""eddy.client against real servers: REST and typed errors, subscriptions that resume exactly
across a server restart and a cut connection, group commits, and an idempotent publisher whose
resends after a cut store nothing twice."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from eddy.client import (
    Ack,
    AsyncClient,
    Backoff,
    Client,
    ClientError,
    Conflict,
    ConnectionLost,
    Forbidden,
    NotFound,
    OffsetOutOfRange,
    OutOfOrderSequence,
    RateLimited,
    Record,
    RequestRejected,
    Subscription,
    Unauthorized,
    Unavailable,
)
from eddy.client.errors import server_error
from tests.conftest import REPO, free_port, serve_in_thread, start_server_process, wait_until
from tests.relay import Relay, relay_to


async def until(predicate: Callable[[], Any]) -> Any:
    """Poll `predicate` on the event loop until it is truthy (at most 20 s)."""
    async with asyncio.timeout(20):
        while True:
            if result := predicate():
                return result
            await asyncio.sleep(0.02)


async def take(subscription: Subscription, count: int) -> list[Record]:
    records = []
    async for record in subscription:
        records.append(record)
        if len(records) == count:
            break
    return records


@pytest.fixture
async def eddy(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    with serve_in_thread(tmp_path / "data", auto_create_topics=False) as server:
        async with AsyncClient(server.base_url, max_delay=1) as client:
            yield client


async def test_rest_admin_produce_fetch_and_typed_errors(eddy: AsyncClient) -> None:
    topic = await eddy.create_topic("prices", partitions=2, config={"retention.ms": 60_000})
    assert topic["partitions"] == 2 and topic["config"]["retention.ms"] == 60_000
    assert [t["name"] for t in await eddy.list_topics()] == ["prices"]
    acks = await eddy.produce(
        "prices", [{"key": "AAPL", "value": n, "partition": 1} for n in range(3)]
    )
    assert acks == [Ack(1, n, acks[n].timestamp) for n in range(3)]
    page = await eddy.fetch("prices", 1, 1, limit=10)
    assert [(r.offset, r.key, r.value) for r in page.records] == [(1, "AAPL", 1), (2, "AAPL", 2)]
    assert (page.next_offset, page.high_watermark) == (3, 3)
    assert await eddy.offset_for_time("prices", 1, acks[0].timestamp) == 0
    assert len((await eddy.alter_topic("prices", partitions=3))["partitions"]) == 3

    with pytest.raises(NotFound) as missing:
        await eddy.describe_topic("nope")
    assert missing.value.code == "topic_not_found" and missing.value.status == 404
    assert missing.value.message == "topic 'nope' does not exist"
    assert missing.value.details == {"topic": "nope"}
    assert missing.value.request_id  # the server's X-Request-ID, to quote in a bug report
    assert str(missing.value) == "topic 'nope' does not exist (topic_not_found, HTTP 404)"
    with pytest.raises(Conflict) as exists:
        await eddy.create_topic("prices")
    assert exists.value.code == "topic_exists"
    with pytest.raises(RequestRejected) as invalid:
        await eddy.create_topic("bad name")
    assert invalid.value.code == "invalid_request" and invalid.value.status == 422
    with pytest.raises(OffsetOutOfRange) as beyond:
        await eddy.fetch("prices", 1, 99)
    assert beyond.value.details["high_watermark"] == 3
    for error in (missing.value, exists.value, invalid.value, beyond.value):
        assert isinstance(error, ClientError) and error.permanent

    await eddy.delete_topic("prices")
    assert await eddy.list_topics() == []


def test_the_client_loads_none_of_the_server() -> None:
    """An application that only talks to Eddy imports no web framework, engine or broker."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, eddy.client; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    server_side = ("fastapi", "starlette", "uvicorn", "aiokafka", "eddy.app", "eddy.broker")
    assert not [m for m in loaded if m.startswith(server_side)]


@pytest.mark.parametrize(
    ("body", "status", "close_code", "kind", "permanent"),
    [
        ({"error": {"code": "invalid_request", "message": "m"}}, 422, None, RequestRejected, True),
        ({"type": "error", "code": "offset_out_of_range"}, None, 4400, OffsetOutOfRange, True),
        ({"type": "error", "code": "record_too_large"}, None, None, RequestRejected, True),
        ({"error": {"code": "topic_not_found", "message": "m"}}, 404, None, NotFound, True),
        ({"type": "error", "code": "group_not_found"}, None, None, NotFound, True),
        ({"type": "error", "code": "not_assigned"}, None, None, Conflict, True),
        ({"type": "error", "code": "out_of_order_sequence"}, None, None, OutOfOrderSequence, True),
        ({"error": {"code": "unauthorized", "message": "m"}}, 401, None, Unauthorized, True),
        ({"type": "error", "code": "forbidden"}, None, 4403, Forbidden, True),
        ({"error": {"code": "rate_limited", "message": "m"}}, 429, None, RateLimited, False),
        ({"error": {"code": "unavailable", "message": "m"}}, 503, None, Unavailable, False),
        ({"error": {"code": "request_timeout", "message": "m"}}, 408, None, Unavailable, False),
        ("<html>bad gateway</html>", 502, None, Unavailable, False),
        (None, None, 4404, NotFound, True),
    ],
)
def test_error_families(
    body: Any, status: int | None, close_code: int | None, kind: type, permanent: bool
) -> None:
    error = server_error(body, status=status, close_code=close_code, fallback="why")
    assert type(error) is kind and error.permanent is permanent
    assert isinstance(error, ClientError) and (error.status, error.close_code) == (
        status,
        close_code,
    )


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    backoff = Backoff(first=0.25, most=4.0)
    delays = [backoff.next_delay() for _ in range(12)]
    caps = [min(4.0, 0.25 * 2**n) for n in range(12)]
    assert all(0 <= d < cap for d, cap in zip(delays, caps, strict=True))
    backoff.reset()  # after a connection that delivered: the small window again
    assert backoff.next_delay() < 0.25
    spread = {round(Backoff(first=1, most=1).next_delay(), 3) for _ in range(50)}
    assert len(spread) > 10  # random over the whole window, not a fixed step


async def test_unreachable_server_is_connection_lost() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url) as eddy:
        with pytest.raises(ConnectionLost) as refused:
            await eddy.list_topics()
        assert f"cannot connect to {url}: connection refused" in str(refused.value)
        assert not refused.value.permanent
        subscription = eddy.subscribe("t", retry_first_connect=False)
        with pytest.raises(ConnectionLost):
            await subscription.get()


async def test_subscribe_keys_partitions_since_and_positions(eddy: AsyncClient) -> None:
    await eddy.create_topic("ticks", partitions=2)
    acks = await eddy.produce(
        "ticks",
        [{"key": k, "value": n, "partition": n % 2} for n, k in enumerate("ABABCA")],
    )
    async with eddy.subscribe("ticks", start="earliest", keys=["A"]) as only_a:
        records = await take(only_a, 3)
    assert [(r.key, r.value) for r in records] == [("A", 0), ("A", 2), ("A", 5)]
    async with eddy.subscribe("ticks", start="earliest", partitions=[1]) as odd:
        records = await take(odd, 3)
        assert [r.value for r in records] == [1, 3, 5]
        assert odd.positions == {1: 3}  # a later subscribe(offsets=...) continues here
    async with eddy.subscribe("ticks", since=acks[4].timestamp) as recent:
        records = await take(recent, 1)
    assert records[0].timestamp >= acks[4].timestamp
    async with eddy.subscribe("ticks", offsets={0: 2, 1: 3}) as resumed:
        await resumed.wait_live()
        await eddy.produce("ticks", [{"key": "Z", "value": "new", "partition": 1}])
        records = await take(resumed, 2)
    assert sorted((r.partition, r.offset, r.value) for r in records) == [(0, 2, 4), (1, 3, "new")]


async def test_max_rate_conflates_per_key_and_says_how_many(eddy: AsyncClient) -> None:
    await eddy.create_topic("quotes", partitions=1)
    async with eddy.subscribe("quotes", max_rate=2, on_slow="conflate") as slow:
        await slow.wait_live()
        await eddy.produce("quotes", [{"key": "A", "value": n} for n in range(40)])
        records: list[Record] = []
        while not records or records[-1].value != 39:
            record = await slow.get()
            assert record is not None
            records.append(record)
    assert len(records) < 40  # the newest value of the key, not every one
    assert sum(1 + r.conflated for r in records) == 40  # what was dropped is counted
    assert [r.offset for r in records] == sorted(r.offset for r in records)


async def test_permanent_errors_end_the_subscription_with_the_servers_message(
    eddy: AsyncClient,
) -> None:
    with pytest.raises(NotFound) as missing:
        await eddy.subscribe("missing").get()
    assert missing.value.code == "topic_not_found" and missing.value.close_code == 4404
    assert "'missing'" in missing.value.message
    with pytest.raises(RequestRejected) as bad:
        await eddy.subscribe("bad name").get()
    assert bad.value.code == "invalid_request" and bad.value.close_code == 4400
    await eddy.create_topic("t", partitions=1)
    with pytest.raises(OffsetOutOfRange) as beyond:
        await eddy.subscribe("t", offsets={0: 5}).get()
    assert beyond.value.close_code == 4400

    # A deleted topic: the records received before are read, then the server's error.
    subscription = eddy.subscribe("t", start="earliest")
    await subscription.wait_live()
    await eddy.produce("t", [{"value": 1}])
    assert (await subscription.get()) is not None
    await eddy.delete_topic("t")
    with pytest.raises(NotFound):
        await subscription.get()
    assert subscription.state == "failed" and isinstance(subscription.error, NotFound)


async def test_credentials_errors_are_typed(tmp_path: Path) -> None:
    def sha(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    auth = tmp_path / "auth.toml"
    auth.write_text(
        f'[[principals]]\nname = "w"\nkey_sha256 = "{sha("key-w")}"\nwrite = ["t"]\nadmin = ["*"]\n'
    )
    with serve_in_thread(tmp_path / "data", auth_file=auth) as server:
        async with AsyncClient(server.base_url, token="key-w") as writer:
            await writer.create_topic("t")
            with pytest.raises(Forbidden) as denied:
                await writer.subscribe("t").get()
            assert denied.value.code == "forbidden"
            assert denied.value.close_code == 4403 or denied.value.status == 403
        async with AsyncClient(server.base_url, token="wrong") as stranger:
            with pytest.raises(Unauthorized):
                await stranger.list_topics()
            with pytest.raises(Unauthorized):
                await stranger.subscribe("t").get()
            publisher = stranger.publisher("t")
            with pytest.raises(Unauthorized):
                await publisher.publish({"value": 1})
            await publisher.close()


async def test_subscriber_resumes_exactly_across_a_server_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    server = start_server_process(data, port=port)
    try:
        async with AsyncClient(server.base_url, max_delay=0.5) as eddy:
            await eddy.create_topic("prices", partitions=3)
            subscription = eddy.subscribe("prices")
            disconnects: list[ClientError] = []
            subscription.on_disconnect = lambda error, delay: disconnects.append(error)
            await subscription.wait_live()
            await eddy.produce("prices", [{"key": f"k{n}", "value": n} for n in range(30)])
            first = await take(subscription, 30)
            # Stopped and started again on the same port: the subscription reconnects by
            # itself with offsets= and misses nothing produced while it was away.
            await asyncio.to_thread(server.stop, signal.SIGTERM)
            await until(lambda: disconnects)
            server = await asyncio.to_thread(start_server_process, data, port=port)
            await eddy.produce("prices", [{"key": f"k{n}", "value": n} for n in range(30, 60)])
            second = await take(subscription, 30)
            await subscription.close()
    finally:
        server.stop()
    seen = first + second
    assert sorted(r.value for r in seen) == list(range(60))  # nothing lost
    assert len({(r.partition, r.offset) for r in seen}) == 60  # nothing repeated
    assert not any(e.permanent for e in disconnects)


async def test_subscriber_resumes_exactly_across_a_cut_connection(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data") as server, relay_to(_port(server.base_url)) as relay:
        async with (
            AsyncClient(server.base_url) as rest,
            AsyncClient(relay.url, max_delay=0.2) as eddy,
        ):
            await rest.create_topic("feed", partitions=2)
            subscription = eddy.subscribe("feed", start="earliest")
            cuts: list[ClientError] = []
            subscription.on_disconnect = lambda error, delay: cuts.append(error)
            received: list[Record] = []
            for wave in range(3):
                base = wave * 50
                await rest.produce("feed", [{"value": base + n} for n in range(25)])
                received += await take(subscription, 25)
                # The next records reach the relay and are lost there; then the connection
                # breaks. The subscription must get exactly those again after reconnecting.
                relay.hold_replies()
                dropped = relay.dropped_bytes
                await rest.produce("feed", [{"value": base + n} for n in range(25, 50)])
                await until(partial(_more_than, relay, dropped))
                relay.cut()
                received += await take(subscription, 25)
            await subscription.close()
    assert len(cuts) == 3 and all(isinstance(e, ConnectionLost) for e in cuts)
    assert sorted(r.value for r in received) == list(range(150))
    assert len({(r.partition, r.offset) for r in received}) == 150
    for partition in (0, 1):
        offsets = [r.offset for r in received if r.partition == partition]
        assert offsets == sorted(offsets)  # in order within each partition


async def test_a_subscriber_closed_4408_as_too_slow_resumes_without_loss(tmp_path: Path) -> None:
    """A subscriber that stops reading (its buffer holds one record) is closed 4408 once the
    server's unsent data passes the limit; that is transient: once read again, it resumes by
    offset and gets every record once (a replay goes at the reader's pace)."""
    with serve_in_thread(tmp_path / "data", ws_buffer_bytes=64 * 1024) as server:
        async with (
            AsyncClient(server.base_url, max_delay=0.2) as eddy,
            httpx.AsyncClient(base_url=server.base_url) as rest,
        ):
            await eddy.create_topic("bulk", partitions=1)
            subscription = eddy.subscribe("bulk", max_buffer=1)
            closes: list[ClientError] = []
            subscription.on_disconnect = lambda error, delay: closes.append(error)
            await subscription.wait_live()
            total = 0
            closed = False
            while not closed:  # batches until the server gives up on the stalled reader
                batch = [{"value": {"n": total + n, "blob": "x" * 2000}} for n in range(20)]
                await eddy.produce("bulk", batch)
                total += 20
                metrics = (await rest.get("/metrics")).text
                closed = "eddy_slow_consumer_closes_total 1.0" in metrics
            # What was queued before the close still arrives; after it the subscription
            # reconnects with offsets= and gets what was produced meanwhile.
            await eddy.produce("bulk", [{"value": {"n": total + n}} for n in range(20)])
            total += 20
            records = await take(subscription, total)
            await subscription.close()
    assert [r.value["n"] for r in records] == list(range(total))  # each once, in order
    assert [e.close_code for e in closes] == [4408]
    assert isinstance(closes[0], Unavailable) and not closes[0].permanent


async def test_group_members_commit_and_the_next_one_resumes(eddy: AsyncClient) -> None:
    await eddy.create_topic("orders", partitions=2)
    await eddy.produce("orders", [{"value": n, "partition": n % 2} for n in range(10)])
    member = eddy.subscribe("orders", group="billing", start="earliest")
    assignments: list[dict[int, int]] = []
    member.on_assignment = assignments.append
    handled = await take(member, 6)
    committed = await member.commit()
    per_partition: dict[int, int] = {}
    for record in handled:
        per_partition[record.partition] = record.offset + 1
    assert committed == per_partition
    assert member.assignment == [0, 1] and assignments[0] == {0: 0, 1: 0}
    assert await member.commit() == {}  # nothing new to commit
    with pytest.raises(NotFound) as refused:
        await member.commit({7: 1})  # the topic has no partition 7
    assert refused.value.code == "partition_not_found"
    await member.close()

    group = await eddy.describe_group("billing")
    assert group["members"] == []
    committed_by_rest = {o["partition"]: o["committed_offset"] for o in group["offsets"]}
    assert committed_by_rest == per_partition
    # The next member starts at the committed offsets: the 4 unhandled records come, not more.
    async with eddy.subscribe("orders", group="billing") as successor:
        rest = await take(successor, 4)
    assert sorted(r.value for r in rest) == sorted(set(range(10)) - {r.value for r in handled})

    with pytest.raises(RequestRejected):
        await eddy.subscribe("orders").commit()


async def test_idempotent_publisher_across_lost_acks_and_a_cut_stores_each_record_once(
    tmp_path: Path,
) -> None:
    total = 300
    with serve_in_thread(tmp_path / "data") as server, relay_to(_port(server.base_url)) as relay:
        async with (
            AsyncClient(server.base_url) as rest,
            AsyncClient(relay.url, max_delay=0.2) as eddy,
        ):
            await rest.create_topic("feed", partitions=1)
            publisher = eddy.publisher("feed", producer_id="feed-1")
            cuts: list[ClientError] = []
            publisher.on_disconnect = lambda error, delay: cuts.append(error)
            futures = [publisher.send({"value": n}) for n in range(100)]
            await asyncio.wait(futures)
            relay.hold_replies()
            # Stored on the server, unknown to the client: their acks are dropped on the way.
            futures += [publisher.send({"value": n}) for n in range(100, 200)]
            await until(lambda: relay.dropped_bytes > 0)
            stored = (await rest.describe_topic("feed"))["partitions"][0]["high_watermark"]
            relay.cut()
            futures += [publisher.send({"value": n}) for n in range(200, total)]
            acks = await asyncio.gather(*futures)
            await publisher.close()
            page = await rest.fetch("feed", 0, 0, limit=1000)
    assert cuts and stored > 100  # some stored records' acks were lost, and sent again
    assert [r.value for r in page.records] == list(range(total))  # once each, in order
    assert [a.offset for a in acks] == list(range(total))  # each future: its original ack
    assert publisher.next_sequence == total


async def test_idempotent_publisher_across_a_server_kill_stores_each_record_once(
    tmp_path: Path,
) -> None:
    """SIGKILL in the middle of a stream (records may be stored whose acks never left, others
    in flight are lost). After the restart the publisher sends what is not acknowledged with
    its sequences; the server, which kept the producer's sequences with the records, stores
    each record once."""
    data = tmp_path / "data"
    port = free_port()
    server = start_server_process(data, port=port)
    total = 400
    try:
        async with AsyncClient(server.base_url, max_delay=0.5) as eddy:
            await eddy.create_topic("orders", partitions=2)
            publisher = eddy.publisher("orders", producer_id="till-7")
            cuts: list[ClientError] = []
            publisher.on_disconnect = lambda error, delay: cuts.append(error)
            futures = [publisher.send({"key": f"c{n % 5}", "value": n}) for n in range(200)]
            await asyncio.wait(futures[:50])
            await asyncio.to_thread(server.stop, signal.SIGKILL)
            futures += [publisher.send({"key": f"c{n % 5}", "value": n}) for n in range(200, total)]
            await until(lambda: cuts)
            server = await asyncio.to_thread(start_server_process, data, port=port)
            acks = await asyncio.gather(*futures)
            await publisher.close()
            stored = [
                record
                for partition in (0, 1)
                for record in (await eddy.fetch("orders", partition, 0, limit=1000)).records
            ]
    finally:
        server.stop()
    assert sorted(r.value for r in stored) == list(range(total))  # once each
    assert len({(a.partition, a.offset) for a in acks}) == total  # each future, its own ack
    for value, ack in enumerate(acks):
        (record,) = [r for r in stored if (r.partition, r.offset) == (ack.partition, ack.offset)]
        assert record.value == value


async def test_a_refused_record_fails_only_its_future_and_the_rest_are_renumbered(
    eddy: AsyncClient,
) -> None:
    await eddy.create_topic("plain", partitions=1)
    async with eddy.publisher("plain") as publisher:
        futures = [
            publisher.send({"value": n, "headers": {"h": 1} if n == 13 else {}}) for n in range(40)
        ]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    refused = outcomes[13]
    assert isinstance(refused, RequestRejected) and refused.code == "invalid_request"
    acks = [o for o in outcomes if isinstance(o, Ack)]
    assert [a.offset for a in acks] == list(range(39))
    page = await eddy.fetch("plain", 0, 0)
    assert [r.value for r in page.records] == [n for n in range(40) if n != 13]
    assert publisher.next_sequence == 39  # the refused record used up no sequence


async def test_publisher_without_producer_id_reports_permanent_errors(eddy: AsyncClient) -> None:
    publisher = eddy.publisher("missing", idempotent=False)
    with pytest.raises(NotFound) as missing:
        await publisher.publish({"value": 1})
    assert missing.value.close_code == 4404 or missing.value.status == 404
    assert publisher.state == "failed"
    with pytest.raises(NotFound):
        await publisher.publish({"value": 2})  # stopped: the same error


def test_the_blocking_client(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data") as server, Client(server.base_url) as eddy:
        eddy.create_topic("sync", partitions=1)
        with eddy.publisher("sync") as publisher:
            futures = [publisher.send({"key": "k", "value": n}) for n in range(5)]
            assert publisher.publish({"value": 5}).offset == 5
        assert [f.result().offset for f in futures] == list(range(5))
        with eddy.subscribe("sync", start="earliest", group="g") as subscription:
            values = [subscription.get(timeout=10) for _ in range(6)]
            assert [v.value for v in values if v is not None] == list(range(6))
            assert subscription.commit() == {0: 6}
            assert subscription.get(timeout=0.05) is None  # nothing more: the timeout passes
        offsets = eddy.describe_group("g")["offsets"]
        assert [(o["partition"], o["committed_offset"]) for o in offsets] == [(0, 6)]
        assert [a.offset for a in eddy.produce("sync", [{"value": 6}])] == [6]
        with pytest.raises(NotFound):
            eddy.describe_topic("nope")


def test_the_docs_subscriber_runs(tmp_path: Path) -> None:
    """The 10-line subscriber of docs/clients.md, as written, against a real server."""
    page = (REPO / "docs" / "clients.md").read_text()
    code = page.split("## Python: `eddy.client`")[1].split("```python\n")[1].split("```")[0]
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    with serve_in_thread(tmp_path / "data") as server, server.client() as rest:
        script = tmp_path / "subscriber.py"
        script.write_text(code.replace("http://127.0.0.1:8080", server.base_url))
        process = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_until(lambda: _subscribers(rest) >= 1, timeout=20)
            for n, key in enumerate(["AAPL", "GOOG", "MSFT"]):
                body = {"key": key, "value": n, "partition": 0}
                assert rest.post("/v1/topics/prices/records", json=body).status_code == 200
            assert process.stdout is not None
            lines = [process.stdout.readline().strip() for _ in range(2)]
        finally:
            process.terminate()
            process.communicate(timeout=10)
    assert lines == ["0 0 AAPL 0", "0 2 MSFT 2"]


def _subscribers(rest: httpx.Client) -> int:
    """Open subscribe WebSockets, from the server's gauge."""
    match = re.search(
        r'eddy_websockets_open\{endpoint="subscribe"\} (\d+)', rest.get("/metrics").text
    )
    return int(float(match.group(1))) if match else 0


def _more_than(relay: Relay, dropped: int) -> bool:
    return relay.dropped_bytes > dropped


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])

"""The Kafka protocol listener: an asyncio server on the app's event loop, one task per
connection; answers go out in request order, as Kafka's clients expect (see `_run`).

Every answer is the response of the request's own API and version. A request Eddy cannot answer
in kind (an API or version it does not speak, bytes that do not decode) closes the connection
once the answers before it are out, as Apache Kafka does; the one exception is Kafka's own:
ApiVersions of a version Eddy does not speak is answered in v0 with UNSUPPORTED_VERSION and the
supported versions, which is how clients negotiate. Tagged fields a version's schema lacks are
skipped (`tagged.py`), so a newer client's additions do not make a request undecodable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from kio.schema.errors import ErrorCode

from eddy.broker import Broker
from eddy.routers.kafka import admin, data, idempotence, sasl
from eddy.routers.kafka.batch_cache import BatchCache
from eddy.routers.kafka.groups import KafkaGroups
from eddy.routers.kafka.limits import (
    BUSY,
    READING,
    WAITING,
    ConnectionGate,
    Deadlines,
    ListenerLimits,
    ListenerMetrics,
    Watch,
)
from eddy.routers.kafka.messages import (
    API_VERSIONS,
    PRODUCE,
    SUPPORTED,
    Request,
    encode_response,
    peek_client_id,
    peek_header,
    read_request,
    supported,
)
from eddy.routers.kafka.session import Advertised, Session

log = logging.getLogger("eddy.kafka")

Handler = Callable[[Session, Request], Awaitable[dict[str, Any] | None]]
NODE_ID = 1
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# Requests a connection may have read and not yet answered (Kafka's clients send up to 5).
MAX_IN_FLIGHT = 16
# A refused request is logged once per (API, version, client id) in this many seconds.
REFUSAL_LOG_INTERVAL = 600.0
REFUSAL_LOG_KEYS = 1024


def handlers(groups: KafkaGroups) -> dict[int, Handler]:
    """One listener's handler per API key; the group APIs are its own coordinator's. Produce (0)
    is not here: it is queued as it arrives (`_start_produce`)."""
    return {
        1: data.fetch,
        2: data.list_offsets,
        3: admin.metadata,
        8: groups.offset_commit,
        9: groups.offset_fetch,
        10: admin.find_coordinator,
        11: groups.join,
        12: groups.heartbeat,
        13: groups.leave,
        14: groups.sync,
        15: groups.describe_groups,
        16: groups.list_groups,
        17: sasl.handshake,
        18: admin.api_versions,
        19: admin.create_topics,
        20: admin.delete_topics,
        22: idempotence.init_producer_id,
        32: admin.describe_configs,
        33: admin.alter_configs,
        36: sasl.authenticate,
        37: admin.create_partitions,
        42: groups.delete_groups,
        44: admin.incremental_alter_configs,
    }


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as [::1]:9092) -> (host, port). Raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class KafkaListener:
    def __init__(
        self,
        broker: Broker,
        host: str,
        port: int,
        limits: ListenerLimits,
        advertise: tuple[str, int] | None = None,
        group_initial_delay: float = 3.0,
    ) -> None:
        self._broker = broker
        self._host = host
        self._port = port
        self._limits = limits
        self._metrics = ListenerMetrics(broker.metrics_registry)
        self._gate = ConnectionGate(limits, self._metrics)
        self._deadlines = Deadlines(limits, self._metrics)
        self._advertise = advertise
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.groups = KafkaGroups(broker, group_initial_delay)
        self._handlers = handlers(self.groups)
        # Produced batches, for fetches (shared by connections); only where Eddy's own log
        # holds the records (a Kafka cluster behind --engine kafka stores batches its own way).
        self.batches = BatchCache() if broker.embedded_log else None
        self._refusals_logged: dict[tuple[int, int, str | None], float] = {}
        self.advertised = Advertised(NODE_ID, host, port)

    @property
    def port(self) -> int:
        return self.advertised.port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, reuse_address=True
        )
        port = self._server.sockets[0].getsockname()[1]
        host = socket.getfqdn() if self._host in WILDCARD_HOSTS else self._host
        if self._advertise is not None:
            host, port = self._advertise
        self.advertised = Advertised(NODE_ID, host, port)
        self.groups.start()
        self._deadlines.start()
        if self._broker.access_enabled and self._host not in LOOPBACK_HOSTS:
            log.warning(
                "Kafka listener on %s: SASL/PLAIN sends API keys unencrypted; keep it on "
                "loopback or put a TLS-terminating proxy in front",
                self._host,
            )
        log.info(
            "Kafka protocol listener on %s:%d (advertised as %s:%d)",
            self._host,
            self._server.sockets[0].getsockname()[1],
            host,
            port,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self.groups.stop()
        await self._deadlines.stop()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "-"
        if not self._gate.admit(address):
            writer.transport.abort()  # at accept: nothing was read, nothing is owed
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        session = Session(
            broker=self._broker,
            advertised=self.advertised,
            principal=self._broker.anonymous(),
            client=f"{peer[0]}:{peer[1]}" if peer else "-",
            batches=self.batches,
        )
        try:
            await self._run(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug must not take the listener down; the client reconnects
            log.exception("Kafka connection from %s failed", session.client)
        finally:
            self._connections.discard(task)
            self._gate.release(address)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _run(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read requests and queue their answers in order. Produce requests are queued for
        commit as they arrive and answered when committed, so a client's several produce
        requests in flight share group commits; any other request waits until every answer
        before it is out, then runs while the next requests are read."""
        answers: asyncio.Queue[asyncio.Task[bytes | None]] = asyncio.Queue(MAX_IN_FLIGHT)
        sender = asyncio.create_task(self._send_answers(answers, writer))
        started: set[asyncio.Task[bytes | None]] = set()
        watch = self._deadlines.watch(writer.transport, started)
        try:
            while not sender.done():
                frame = await self._read_frame(session, reader, watch)
                if frame is None:
                    return
                try:
                    request = self._decode(frame)
                except Refused as refused:
                    await answers.join()  # the answers before it go out first
                    self._log_refusal(session, refused)
                    return  # as Apache Kafka does: no answer that is not the API's response
                if isinstance(request, bytes):  # already answered (ApiVersions negotiation)
                    answer = _ready(request)
                elif request.api_key == PRODUCE:
                    answer = await self._start_produce(session, request)
                else:
                    await answers.join()
                    answer = self._answer(session, request)
                task = asyncio.create_task(answer)
                started.add(task)
                task.add_done_callback(started.discard)
                await answers.put(task)
            await sender  # its error, if it failed
        finally:
            # The client is gone (or the server stops): nobody reads what is still pending.
            # Commits under way are not cancelled by this (the engine finishes them).
            self._deadlines.forget(watch)
            for pending in (*started, sender):
                pending.cancel()
            await asyncio.gather(*started, sender, return_exceptions=True)

    async def _read_frame(
        self, session: Session, reader: asyncio.StreamReader, watch: Watch
    ) -> bytes | None:
        """The next request's bytes, or None when it is longer than
        --kafka-listener-max-request-bytes. Meanwhile the connection's deadlines run (closed by
        the sweep: idle for --kafka-listener-idle-timeout, nothing being answered; the rest of
        the request not there within --kafka-listener-request-timeout of its first byte)."""
        loop = asyncio.get_running_loop()
        watch.phase, watch.since = WAITING, loop.time()
        first = await reader.readexactly(1)
        watch.phase, watch.since = READING, loop.time()
        size = int.from_bytes(first + await reader.readexactly(3), "big", signed=True)
        limits = self._limits
        if size < 0 or size > limits.max_request_bytes:
            self._metrics.closed.labels("request_too_large").inc()
            log.warning("Kafka request of %d bytes from %s refused", size, session.client)
            return None  # the stream cannot be resynchronised past an unread frame
        frame = await reader.readexactly(size)
        watch.phase = BUSY
        return frame

    async def _send_answers(
        self, answers: asyncio.Queue[asyncio.Task[bytes | None]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            task = await answers.get()
            try:
                response = await task
                if response is not None:
                    writer.write(response)
                    await writer.drain()
            finally:
                answers.task_done()

    async def _start_produce(
        self, session: Session, request: Request
    ) -> Coroutine[Any, Any, bytes | None]:
        """Queue a Produce's batches now; the answer's coroutine waits for their commit."""
        self._check_credentials(session, request)
        finish = await data.submit_produce(session, request)

        async def answer() -> bytes | None:
            body = await finish()
            if body is None:
                return None
            return encode_response(request.api_key, request.version, request.correlation_id, body)

        return answer()

    def _check_credentials(self, session: Session, request: Request) -> None:
        session.client_id = request.client_id or ""
        if not self._broker.still_valid(session.principal):  # expired JWT, or a key revoked
            session.principal = self._broker.anonymous()

    def _decode(self, frame: bytes) -> Request | bytes:
        """The request, or the answer to an ApiVersions of a version Eddy does not speak.
        Raises Refused for a request that cannot be answered in its own API's schema."""
        try:
            api_key, version, correlation_id = peek_header(frame)
        except ValueError:
            raise Refused(frame, "shorter than a request header") from None
        if not supported(api_key, version):
            if api_key == API_VERSIONS:
                body = admin.api_versions_body(ErrorCode.unsupported_version)
                return encode_response(API_VERSIONS, 0, correlation_id, body)
            raise Refused(frame, "an API or version Eddy does not speak")
        try:
            return read_request(frame)
        except Exception as error:  # kio raises several kinds on bytes that do not decode
            raise Refused(frame, f"does not decode ({type(error).__name__}: {error})") from None

    def _log_refusal(self, session: Session, refused: Refused) -> None:
        key = (refused.api_key, refused.version, refused.client_id)
        now = time.monotonic()
        last = self._refusals_logged.get(key)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            return
        if len(self._refusals_logged) >= REFUSAL_LOG_KEYS:
            self._refusals_logged.clear()
        self._refusals_logged[key] = now
        name = SUPPORTED.get(refused.api_key, ("unknown API",))[0]
        log.warning(
            "Kafka request %s (key %d) v%d from %s (client id %r): %s; connection closed",
            name,
            refused.api_key,
            refused.version,
            session.client,
            refused.client_id,
            refused.reason,
        )

    async def _answer(self, session: Session, request: Request) -> bytes | None:
        handler = self._handlers[request.api_key]  # every supported API but Produce has one
        self._check_credentials(session, request)
        body = await handler(session, request)
        if body is None:
            return None
        return encode_response(request.api_key, request.version, request.correlation_id, body)


class Refused(Exception):
    """A request the listener cannot answer in its own API's schema."""

    def __init__(self, frame: bytes, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.api_key = int.from_bytes(frame[0:2], "big", signed=True) if len(frame) >= 2 else -1
        self.version = int.from_bytes(frame[2:4], "big", signed=True) if len(frame) >= 4 else -1
        self.client_id = peek_client_id(frame)


async def _ready(answer: bytes) -> bytes | None:
    return answer

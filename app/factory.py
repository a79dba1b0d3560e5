"""The app factory: `create_app(settings)` wires storage, broker, routers and error handling.

Run it with `eddy serve` (see app/cli.py) or `uvicorn --factory eddy.app.factory:create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import Receive, Scope, Send

from eddy.app import lean
from eddy.app.errors import close_unmatched_websocket, install_error_handlers
from eddy.app.head import HeadAsGet
from eddy.app.http_encoding import GzipGetResponses, RequestDecoding
from eddy.app.openapi import build_openapi, install_asyncapi, operation_id
from eddy.app.request_log import RequestTelemetry
from eddy.app.resources import static_dir
from eddy.app.settings import Settings, settings_for
from eddy.broker import Broker, BrokerConfig
from eddy.broker.access import AccessPolicy, load_access_policy
from eddy.routers import groups, ops, records, sse, topics, ws
from eddy.routers.kafka import KafkaListener, parse_address
from eddy.routers.kafka.limits import ListenerLimits
from eddy.storage import Engine, SQLiteEngine
from eddy.storage.kafka_client import KafkaSettings, parse_client_config

log = logging.getLogger("eddy")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DESCRIPTION = """Eddy is a Kafka-style streaming broker: topics with partitions, keyed records with
offsets, consumers that resume by offset. Publish with `curl`, subscribe with a WebSocket
(`/v1/topics/{topic}/ws`) or Server-Sent Events (`/v1/topics/{topic}/events`): those are
described in the [AsyncAPI document](/asyncapi) ([YAML](/asyncapi.yaml)).

**Errors** have one shape, `{"error": {"code", "message", "details"}}`; each operation lists
its statuses with an example per code. Any request can also get 400 `malformed_request`,
408 `request_timeout` or 431 `headers_too_large` from the HTTP layer for a broken request head,
and 405 `method_not_allowed` (with `Allow`) for a method the path does not serve. Every GET
operation also answers HEAD (the same status and headers, no body).

**Access control** is off unless the server runs with `--auth-file`: then send
`Authorization: Bearer <API key or JWT>` (Authorize, above); requests without credentials get
the auth file's anonymous permissions.

**Compression**: responses of 1 KiB or more are gzip-compressed for clients that send
`Accept-Encoding: gzip`; request bodies may be sent with `Content-Encoding: gzip` or `deflate`
(decoded size limited like a plain body: 413 `payload_too_large`; other codings: 415)."""


def broker_config(settings: Settings) -> BrokerConfig:
    return settings_for(
        BrokerConfig,
        settings,
        topic_defaults={
            "retention.ms": settings.default_retention_ms,
            "retention.bytes": settings.default_retention_bytes,
            "cleanup.policy": "delete",
            "max.message.bytes": settings.default_max_message_bytes,
            "delete.retention.ms": 86_400_000,
        },
    )


def make_engine(settings: Settings) -> Engine:
    """The storage engine the settings ask for (`Settings` has checked that they fit)."""
    if settings.engine == "sqlite":
        return SQLiteEngine(settings.data_dir, settings.sync)
    from eddy.storage.kafka import KafkaEngine  # aiokafka is loaded only when used

    return KafkaEngine(
        settings_for(
            KafkaSettings,
            settings,
            prefix="kafka_",
            extra=parse_client_config(settings.kafka_config),
        )
    )


def access_policy(settings: Settings) -> AccessPolicy:
    """The auth file's policy, or "everyone may do everything" without one (local use)."""
    if settings.auth_file is None:
        if settings.host not in LOOPBACK_HOSTS:
            log.warning(
                "ACCESS CONTROL IS OFF and Eddy listens on %s: anyone who can reach this port "
                "can read, write and delete every topic. Use --auth-file (see the README).",
                settings.host,
            )
        return AccessPolicy()
    return load_access_policy(settings.auth_file)


class StaticOnlyOverHttp(StaticFiles):
    """The console's files; a WebSocket under /static is closed like any unmatched one
    (StaticFiles itself fails on one)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await close_unmatched_websocket(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Raises AuthFileError if the auth file cannot be used."""
    settings = settings or Settings()
    access = access_policy(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        broker = Broker(
            make_engine(settings),
            broker_config(settings),
            access,
            settings.auth_file,
        )
        await broker.start()
        kafka: KafkaListener | None = None
        if settings.kafka_listener is not None:
            kafka_host, kafka_port = parse_address(settings.kafka_listener)
            advertised = settings.kafka_advertised_listener
            kafka = KafkaListener(
                broker,
                kafka_host,
                kafka_port,
                ListenerLimits(
                    idle_timeout=settings.kafka_listener_idle_timeout,
                    request_timeout=settings.kafka_listener_request_timeout,
                    max_connections=settings.kafka_listener_max_connections,
                    max_connections_per_ip=settings.kafka_listener_max_connections_per_ip,
                    max_request_bytes=settings.kafka_listener_max_request_bytes,
                ),
                parse_address(advertised) if advertised else None,
                group_initial_delay=settings.kafka_group_initial_rebalance_delay,
            )
            try:
                await kafka.start()
            except BaseException:
                await broker.stop()
                raise
        app.state.broker = broker  # for EddyServer's early shutdown hook
        app.state.kafka = kafka
        try:
            yield {"broker": broker}
        finally:
            if kafka is not None:
                await kafka.stop()
            await broker.stop()

    # FastAPIOffline serves Swagger UI and ReDoc from the package instead of a CDN, so /docs works
    # on machines without internet access.
    app = FastAPIOffline(
        title="Eddy",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # Eddy has its own metrics; FastAPI's OpenTelemetry hooks cost ~8 us on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings  # for EddyServer's start-up line
    install_error_handlers(app)
    app.include_router(topics.router)
    app.include_router(records.router)
    app.router.routes.insert(0, records.produce_route)  # the lean produce route, matched first
    app.include_router(ws.router)
    app.include_router(sse.router)
    app.include_router(groups.router)
    app.include_router(ops.router)
    static = static_dir()
    app.mount("/static", StaticOnlyOverHttp(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(static / "index.html")

    install_asyncapi(app)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    if settings.origins:
        # Tokens travel in the Authorization header, never in cookies, so credentials mode is
        # off: even "*" cannot be combined with the browser's ambient credentials.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.origins),
            allow_credentials=False,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    # Request bodies are decoded inside the response compression, so a 413 or 415 for a
    # compressed body is an ordinary (small, uncompressed) error response.
    app.add_middleware(RequestDecoding, max_body_bytes=settings.max_request_bytes)
    app.add_middleware(GzipGetResponses)
    app.add_middleware(ws.WebSocketFastPath)
    app.add_middleware(HeadAsGet)
    # Added last, so the outermost: request ids, request metrics and the access log cover the
    # WebSocket fast path and the lean produce route too.
    app.add_middleware(RequestTelemetry, access_log=settings.access_log)
    lean.install(app, settings.access_log, cors=bool(settings.origins))
    return app

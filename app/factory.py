"""The app factory: `create_app(settings)` wires storage, broker, routers and error handling.

Run it with `eddy serve` (see app/cli.py) or `uvicorn --factory app.factory:create_app`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import close_unmatched_websocket, install_error_handlers
from app.openapi import build_openapi, operation_id
from app.settings import Settings
from broker import Broker, BrokerConfig
from broker.access import AccessPolicy, load_access_policy
from routers import groups, ops, records, topics, ws
from routers.kafka import KafkaListener, parse_address
from storage import SQLiteEngine

log = logging.getLogger("eddy")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DESCRIPTION = """Eddy is a Kafka-style streaming broker: topics with partitions, keyed records with
offsets, consumers that resume by offset. Publish with `curl`, subscribe with a WebSocket
(`/v1/topics/{topic}/ws`, described in `openapi/asyncapi.yaml`)."""


def broker_config(settings: Settings) -> BrokerConfig:
    return BrokerConfig(
        default_partitions=settings.default_partitions,
        topic_defaults={
            "retention.ms": settings.default_retention_ms,
            "retention.bytes": settings.default_retention_bytes,
            "cleanup.policy": "delete",
            "max.message.bytes": settings.default_max_message_bytes,
            "delete.retention.ms": 86_400_000,
        },
        retention_check_interval=settings.retention_check_interval,
        auto_create_topics=settings.auto_create_topics,
        ws_buffer_bytes=settings.ws_buffer_bytes,
        max_websockets=settings.max_websockets,
        max_request_bytes=settings.max_request_bytes,
        auto_commit_interval=settings.auto_commit_interval,
        produce_rate_limit=settings.produce_rate_limit,
        produce_rate_burst=settings.produce_rate_burst,
        produce_queue_timeout=settings.produce_queue_timeout,
        auth_recheck_interval=settings.auth_recheck_interval,
        allowed_origins=settings.origins,
        max_topics=settings.max_topics,
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


class RequestMetrics:
    """Records each HTTP request's latency by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            broker: Broker | None = scope.get("state", {}).get("broker")
            if broker is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                broker.metrics.observe_request(
                    scope["method"], route, status, time.perf_counter() - started
                )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Raises AuthFileError if the auth file cannot be used."""
    settings = settings or Settings()
    access = access_policy(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        broker = Broker(
            SQLiteEngine(settings.data_dir, settings.sync),
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
                settings.max_request_bytes,
                parse_address(advertised) if advertised else None,
            )
            try:
                await kafka.start()
            except BaseException:
                await broker.stop()
                raise
        url = f"http://{settings.host}:{settings.port}"
        log.info(
            "Eddy listening on %s (data dir %s, docs %s/docs)",
            url,
            settings.data_dir.resolve(),
            url,
        )
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
    install_error_handlers(app)
    app.include_router(topics.router)
    app.include_router(records.router)
    app.router.routes.insert(0, records.produce_route)  # the lean produce route, matched first
    app.include_router(ws.router)
    app.include_router(groups.router)
    app.include_router(ops.router)
    app.mount("/static", StaticOnlyOverHttp(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(RequestMetrics)
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
    app.add_middleware(ws.WebSocketFastPath)  # added last: the outermost of them
    return app

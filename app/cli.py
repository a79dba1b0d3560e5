"""The `eddy` command (also `python -m app`)."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from app.factory import create_app
from app.server import EddyServer, uvicorn_config
from app.settings import Settings
from broker.access import AuthFileError
from storage import DataDirLocked, SQLiteEngine

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Eddy streaming broker")


def _settings(**flags: Any) -> Settings:
    """Flags given on the command line win; the rest come from EDDY_* variables or defaults."""
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            typer.echo(
                f"eddy: invalid setting {'.'.join(map(str, err['loc']))}: {err['msg']}", err=True
            )
        raise typer.Exit(2) from None


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address [env EDDY_HOST; 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env EDDY_PORT; 8080]")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [env EDDY_DATA_DIR; ./eddy-data]")
    ] = None,
    default_partitions: Annotated[
        int | None, typer.Option(help="Partitions of new topics [env EDDY_DEFAULT_PARTITIONS; 1]")
    ] = None,
    auto_create_topics: Annotated[
        bool | None,
        typer.Option(
            "--auto-create-topics/--no-auto-create-topics",
            help="Create topics on first produce/subscribe [env EDDY_AUTO_CREATE_TOPICS; on]",
            show_default=False,
        ),
    ] = None,
    default_retention_ms: Annotated[
        int | None,
        typer.Option(help="retention.ms default [env EDDY_DEFAULT_RETENTION_MS; 7 days]"),
    ] = None,
    default_retention_bytes: Annotated[
        int | None,
        typer.Option(help="retention.bytes default [env EDDY_DEFAULT_RETENTION_BYTES; -1]"),
    ] = None,
    default_max_message_bytes: Annotated[
        int | None,
        typer.Option(help="max.message.bytes default [env EDDY_DEFAULT_MAX_MESSAGE_BYTES; 1 MiB]"),
    ] = None,
    retention_check_interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between cleaner passes [env EDDY_RETENTION_CHECK_INTERVAL; 300]"
        ),
    ] = None,
    sync: Annotated[
        str | None, typer.Option(help="full (fsync per commit) or normal [env EDDY_SYNC; full]")
    ] = None,
    max_websockets: Annotated[
        int | None,
        typer.Option(help="Open WebSockets allowed at once [env EDDY_MAX_WEBSOCKETS; 10000]"),
    ] = None,
    ws_buffer_bytes: Annotated[
        int | None,
        typer.Option(help="Live subscriber buffer before close 4408 [env EDDY_WS_BUFFER_BYTES]"),
    ] = None,
    max_request_bytes: Annotated[
        int | None,
        typer.Option(help="Largest request body / WebSocket frame [env EDDY_MAX_REQUEST_BYTES]"),
    ] = None,
    max_header_bytes: Annotated[
        int | None,
        typer.Option(help="Largest request head, else 431 [env EDDY_MAX_HEADER_BYTES; 64 KiB]"),
    ] = None,
    max_headers: Annotated[
        int | None,
        typer.Option(help="Most headers per request, else 431 [env EDDY_MAX_HEADERS; 100]"),
    ] = None,
    head_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to send a request head, else 408 [env EDDY_HEAD_TIMEOUT; 10]"),
    ] = None,
    max_topics: Annotated[
        int | None,
        typer.Option(help="Most topics, also for auto-create [env EDDY_MAX_TOPICS; 10000]"),
    ] = None,
    ws_ping_interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds a silent WebSocket peer waits for a ping (default 20) "
            "[env EDDY_WS_PING_INTERVAL]"
        ),
    ] = None,
    ws_ping_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for a pong (default 10) [env EDDY_WS_PING_TIMEOUT]"),
    ] = None,
    auto_commit_interval: Annotated[
        float | None,
        typer.Option(help="Seconds between auto-commits [env EDDY_AUTO_COMMIT_INTERVAL; 1]"),
    ] = None,
    auth_file: Annotated[
        Path | None, typer.Option(help="Auth file: turns access control on [env EDDY_AUTH_FILE]")
    ] = None,
    auth_recheck_interval: Annotated[
        float | None,
        typer.Option(help="Seconds between auth re-checks [env EDDY_AUTH_RECHECK_INTERVAL; 5]"),
    ] = None,
    cors_origins: Annotated[
        str | None,
        typer.Option(help="Allowed browser origins, comma-separated [env EDDY_CORS_ORIGINS]"),
    ] = None,
    produce_rate_limit: Annotated[
        float | None,
        typer.Option(help="Produce requests/s per principal [env EDDY_PRODUCE_RATE_LIMIT; 0]"),
    ] = None,
    produce_rate_burst: Annotated[
        float | None,
        typer.Option(help="Burst of the produce limit [env EDDY_PRODUCE_RATE_BURST]"),
    ] = None,
    produce_queue_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a produce waits for room in a full write queue, then 503 "
            "[env EDDY_PRODUCE_QUEUE_TIMEOUT; 5]"
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning, error [env EDDY_LOG_LEVEL; info]")
    ] = None,
    kafka_listener: Annotated[
        str | None,
        typer.Option(help="HOST:PORT for Kafka clients (wire protocol) [env EDDY_KAFKA_LISTENER]"),
    ] = None,
    kafka_advertised_listener: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT Kafka clients are told to use [env EDDY_KAFKA_ADVERTISED_LISTENER]"
        ),
    ] = None,
) -> None:
    """Run the broker."""
    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        default_partitions=default_partitions,
        auto_create_topics=auto_create_topics,
        default_retention_ms=default_retention_ms,
        default_retention_bytes=default_retention_bytes,
        default_max_message_bytes=default_max_message_bytes,
        retention_check_interval=retention_check_interval,
        sync=sync,
        max_websockets=max_websockets,
        ws_buffer_bytes=ws_buffer_bytes,
        max_request_bytes=max_request_bytes,
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        head_timeout=head_timeout,
        max_topics=max_topics,
        ws_ping_interval=ws_ping_interval,
        ws_ping_timeout=ws_ping_timeout,
        auto_commit_interval=auto_commit_interval,
        auth_file=auth_file,
        auth_recheck_interval=auth_recheck_interval,
        cors_origins=cors_origins,
        produce_rate_limit=produce_rate_limit,
        produce_rate_burst=produce_rate_burst,
        kafka_listener=kafka_listener,
        kafka_advertised_listener=kafka_advertised_listener,
        produce_queue_timeout=produce_queue_timeout,
        log_level=log_level,
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:  # fail fast with a clear message instead of a start-up traceback
        SQLiteEngine.ensure_data_dir_free(settings.data_dir)
    except DataDirLocked as exc:
        typer.echo(f"eddy: {exc}", err=True)
        raise typer.Exit(1) from None
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal; exiting 0 tells a
    # supervisor (systemd, Docker, Kubernetes) that this was a clean, requested stop.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        app = create_app(settings)
    except AuthFileError as exc:
        typer.echo(f"eddy: {exc}", err=True)
        raise typer.Exit(1) from None
    config = uvicorn_config(app, settings)
    EddyServer(config, app).run()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@cli.command("export-openapi")
def export_openapi(
    out: Annotated[Path, typer.Option(help="Where to write the spec")] = Path(
        "openapi/openapi.json"
    ),
) -> None:
    """Write the OpenAPI document the server serves (CI checks the checked-in copy equals it)."""
    spec = create_app(Settings()).openapi()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    typer.echo(f"wrote {out}")


def main() -> None:
    cli(sys.argv[1:])

"""Server settings: every field is a CLI flag of `eddy serve` (generated from it by
app/serve_options.py: its description is the flag's help) and an EDDY_* environment variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eddy.broker.topic_rules import INT_MAX, LONG_MAX


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDDY_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on (0: any free port)")
    data_dir: Path = Field(Path("./eddy-data"), description="Where topic databases live")
    default_partitions: int = Field(1, ge=1, le=1024, description="Partitions of new topics")
    auto_create_topics: bool = Field(
        True, description="Create unknown topics on produce or subscribe"
    )
    default_retention_ms: int = Field(
        604_800_000,
        ge=-1,
        le=LONG_MAX,
        description="retention.ms of topics that do not set it (-1: forever)",
    )
    default_retention_bytes: int = Field(
        -1,
        ge=-1,
        le=LONG_MAX,
        description="retention.bytes per partition of topics that do not set it",
    )
    default_max_message_bytes: int = Field(
        1_048_576, ge=1, le=INT_MAX, description="max.message.bytes of topics that do not set it"
    )
    retention_check_interval: float = Field(
        300.0, gt=0, description="Seconds between retention/compaction passes"
    )
    sync: Literal["full", "normal"] = Field(
        "full",
        description="full: an ack waits for fsync (survives power loss); "
        "normal: an ack waits for the commit only (survives a process crash)",
    )
    max_websockets: int = Field(
        10_000,
        ge=1,
        description="Open WebSockets and SSE streams allowed at once (more WebSockets are "
        "closed with 1013, SSE requests get 503)",
    )
    ws_buffer_bytes: int = Field(
        1_048_576, ge=1024, description="Unsent data a live subscriber may have before 4408"
    )
    max_request_bytes: int = Field(
        16 * 1_048_576, ge=1024, description="Largest HTTP request body or WebSocket frame"
    )
    max_header_bytes: int = Field(
        65_536, ge=1024, description="Largest HTTP request head (request line and headers; 431)"
    )
    max_headers: int = Field(100, ge=8, description="Most headers an HTTP request may have (431)")
    head_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has to send a whole request head (then 408)"
    )
    max_topics: int = Field(
        10_000, ge=1, description="Most topics that may exist (more are refused, also auto-create)"
    )
    ws_ping_interval: float = Field(
        20.0,
        gt=0,
        description="Seconds a WebSocket peer may stay silent before it is pinged (detects "
        "vanished clients within interval + timeout)",
    )
    ws_ping_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a pong")
    auto_commit_interval: float = Field(
        1.0, gt=0, description="Seconds between commits for auto_commit=true group members"
    )
    auth_file: Path | None = Field(
        None, description="TOML file of principals and permissions; turns access control on"
    )
    auth_recheck_interval: float = Field(
        5.0, gt=0, description="Seconds between checks of the auth file and open sockets' tokens"
    )
    sse_keepalive_interval: float = Field(
        15.0, gt=0, description="Seconds between keep-alive comments on Server-Sent Events streams"
    )
    sse_send_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds an SSE client may take nothing before its stream is ended",
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated browser origins allowed for REST (CORS) and WebSockets "
        "('*': any origin, for both)",
    )
    produce_rate_limit: float = Field(
        0.0, ge=0, description="Produce requests per second per principal (0: no limit)"
    )
    produce_queue_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a produce waits for room in a topic's full write queue before "
        "503 unavailable with Retry-After",
    )
    produce_rate_burst: float = Field(
        0.0, ge=0, description="Burst size of the produce rate limit (0: one second's worth)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per event; json: one JSON object per line"
    )
    access_log: bool = Field(
        False,
        description="Log one line per HTTP request and WebSocket upgrade (method, path without "
        "query, status, duration, request id, principal)",
    )
    # --- the Kafka engine (--engine kafka) ---
    engine: Literal["sqlite", "kafka"] = Field(
        "sqlite", description="sqlite: the embedded engine (--data-dir); kafka: a Kafka cluster"
    )
    kafka_bootstrap_servers: str = Field(
        "", description="host:port[,host:port...] of the Kafka cluster (--engine kafka)"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How to connect to the Kafka cluster"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: str | None = Field(None, description="SASL password")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client certificate's key")
    kafka_config: list[str] = Field(
        default_factory=list,
        description="Extra aiokafka client settings as name=value (e.g. request_timeout_ms=30000)",
    )
    kafka_idempotence: bool = Field(
        True,
        description="Kafka's idempotent producer (InitProducerId); turn off for brokers without "
        "it (Tansu's memory storage)",
    )
    kafka_replication_factor: int = Field(
        1, ge=1, le=32767, description="Replication factor of topics Eddy creates (3 in production)"
    )
    kafka_namespace: str = Field(
        "",
        pattern=r"^[a-zA-Z0-9._-]*$",
        description="Prefix of the Kafka topic and group names Eddy uses and shows",
    )
    kafka_fetch_max_wait_ms: int = Field(
        500,
        ge=1,
        le=30_000,
        description="Most ms a tailing fetch waits on the broker (Kafka answers at once when "
        "records arrive; brokers that wait it out, like Tansu, need a few ms)",
    )
    kafka_group_session_timeout_ms: int = Field(
        10_000,
        ge=500,
        le=300_000,
        description="Kafka group session timeout of each server's group consumers: a server "
        "that stops heartbeating loses its share of a group's partitions after this long",
    )
    kafka_produce_timeout: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Seconds a produce waits for the Kafka cluster's acknowledgement: then 503 "
        "unavailable (nothing was sent) or 503 outcome_unknown (sent, unacknowledged: a retry "
        "may store it twice), both with Retry-After",
    )
    kafka_refresh_interval: float = Field(
        2.0, gt=0, description="Seconds between refreshes of topics, offsets and groups from Kafka"
    )
    kafka_listener: str | None = Field(
        None,
        pattern=r"^(\[[0-9a-fA-F:.]+\]|[^:\s]*):[0-9]{1,5}$",
        description="HOST:PORT where the embedded broker also speaks Kafka's wire protocol "
        "(port 0: any free port)",
    )
    kafka_advertised_listener: str | None = Field(
        None,
        pattern=r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+):[0-9]{1,5}$",
        description="HOST:PORT Kafka clients are told to connect to (behind NAT, a proxy or a "
        "container); default: the listener's own address",
    )

    kafka_listener_idle_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a Kafka listener connection may stay idle (no request arriving or "
        "being answered) before it is closed (Kafka's connections.max.idle.ms)",
    )
    kafka_listener_request_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds the rest of a Kafka request may take to arrive once its first byte "
        "has (then the connection is closed)",
    )
    kafka_listener_max_connections: int = Field(
        10_000,
        ge=1,
        description="Open Kafka listener connections allowed; more are closed at accept "
        "(Kafka's max.connections)",
    )
    kafka_listener_max_connections_per_ip: int = Field(
        1_000,
        ge=1,
        description="Open Kafka listener connections allowed from one client address; more are "
        "closed at accept (Kafka's max.connections.per.ip)",
    )
    kafka_listener_max_request_bytes: int = Field(
        100 * 1_048_576,
        ge=1024,
        le=2**31 - 1,
        description="Largest Kafka request (Kafka's socket.request.max.bytes); a longer one "
        "closes the connection",
    )
    kafka_group_initial_rebalance_delay: float = Field(
        3.0,
        ge=0,
        le=300,
        description="Seconds the first rebalance of an empty Kafka-protocol group waits for "
        "more members, each new one extending it up to the rebalance timeout (Kafka's "
        "group.initial.rebalance.delay.ms)",
    )

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @model_validator(mode="after")
    def _rules_between_fields(self) -> Settings:
        """The rules that involve several settings (each field's own are on the field)."""
        if self.engine == "kafka":
            if not self.kafka_bootstrap_servers:
                raise ValueError("--engine kafka needs --kafka-bootstrap-servers")
            if self.kafka_listener:
                raise ValueError(
                    "--kafka-listener serves the embedded engine; with --engine kafka, Kafka "
                    "clients connect to the cluster itself"
                )
        if self.kafka_config:
            from eddy.storage.kafka_client import parse_client_config  # loads aiokafka

            parse_client_config(self.kafka_config)  # raises ValueError for a pair without '='
        return self


T = TypeVar("T")


def settings_for(target: type[T], settings: Settings, prefix: str = "", **derived: Any) -> T:
    """A `target` dataclass with each field taken from the setting of the same name (after
    `prefix`), or from `derived` for the few that are computed from settings. The dataclass
    has no defaults of its own: a field that neither names is an error here."""
    assert dataclasses.is_dataclass(target)
    values = {
        f.name: derived[f.name] if f.name in derived else getattr(settings, prefix + f.name)
        for f in dataclasses.fields(target)
    }
    return target(**values)

"""Server settings: every field is a CLI flag of `eddy serve` and an EDDY_* environment variable."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.topic_rules import INT_MAX, LONG_MAX


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
        10_000, ge=1, description="Open WebSockets allowed at once (more are closed with 1013)"
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
    cors_origins: str = Field(
        "", description="Comma-separated browser origins allowed for REST (CORS) and WebSockets"
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
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
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

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

"""What the broker is configured with: built from the server's `Settings` by field name (see
`app/settings.py`, `settings_for`), so every default lives there, once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Records a publishing connection may have waiting for their acks. When it is reached the
# server stops reading that socket (backpressure); keep it large, because while it is not read
# the client's pongs are not either and --ws-ping-timeout would end the connection.
PUBLISH_MAX_IN_FLIGHT = 10_000


@dataclass(frozen=True)
class BrokerConfig:
    default_partitions: int
    auto_create_topics: bool
    topic_defaults: Mapping[str, Any]  # each topic config's value where a topic sets none
    retention_check_interval: float  # seconds between cleaner passes
    ws_buffer_bytes: int
    max_websockets: int
    auto_commit_interval: float  # seconds between commits of auto_commit members
    max_request_bytes: int  # HTTP bodies and WebSocket frames
    produce_queue_timeout: float  # seconds a produce waits for room in a full write queue
    produce_rate_limit: float  # produce requests/s per principal (0: no limit)
    produce_rate_burst: float  # bucket size (0: one second's worth)
    auth_recheck_interval: float  # how often open WebSockets re-check their credentials
    sse_keepalive_interval: float  # seconds between keep-alive comments on SSE streams
    sse_send_timeout: float  # an SSE client that takes nothing for this long is dropped
    origins: tuple[str, ...]  # browser origins allowed besides the server's own
    max_topics: int  # topics that may exist; each costs files (and memory) on the server

"""What the streaming services tell a client, as domain types: the transports (WebSocket today,
SSE next) turn them into their own frames and close codes."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eddy.broker.positions import StartPosition
from eddy.models.errors import EddyError
from eddy.models.log import AppendedRecord


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Delivery starts at these positions (the first message of a plain subscription)."""

    positions: Mapping[int, StartPosition]


@dataclass(frozen=True, slots=True)
class Assigned:
    """A consumer group member's partitions after a rebalance, with their positions."""

    generation: int
    member_id: str
    positions: Mapping[int, StartPosition]


@dataclass(frozen=True, slots=True)
class Committed:
    offsets: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class Refused:
    """A client message that was not accepted; the connection stays open. `extra` goes along
    (the publish frame's `id`)."""

    error: EddyError
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Acked:
    """A published record is committed."""

    id: Any
    appended: AppendedRecord


Event = Subscribed | Assigned | Committed | Refused | Acked


class SessionEnd(enum.Enum):
    """Why the server ends a session (besides an `EddyError`, which says it itself)."""

    TOO_SLOW = "too_slow"  # its unsent data passed the limit
    SHUTDOWN = "shutdown"  # the server is stopping


# How a session ended: the server's reason, or None when the client went away.
End = EddyError | SessionEnd | None

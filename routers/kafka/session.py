"""What a handler knows about the connection it answers: the broker, who the client is, and
the address clients are told to connect to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eddy.broker import Broker, Principal

if TYPE_CHECKING:
    from eddy.routers.kafka.batch_cache import BatchCache


@dataclass(frozen=True, slots=True)
class Advertised:
    """The one broker of Eddy's cluster, as Metadata and FindCoordinator describe it."""

    node_id: int
    host: str
    port: int


@dataclass
class Session:
    broker: Broker
    advertised: Advertised
    principal: Principal
    client: str  # peer address, for logs and group descriptions
    client_id: str = ""
    sasl_mechanism: str | None = None  # set by SaslHandshake
    batches: BatchCache | None = None  # the listener's produced batches, for fetches

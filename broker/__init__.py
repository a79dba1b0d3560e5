"""The broker's services: topics, producer (group commit), fetcher, fan-out hub, subscriptions.

Pure logic lives in `partitioner`, `positions` and `topic_rules`; everything else talks to
storage only through `storage.Engine`.

This package's names are what the transports (routers/) may use: the `Broker` facade and the
vocabulary its services speak (principals and actions, session events, subscription positions,
the record frame encoding, the rules a transport applies to its own input). The transports
import nothing from the modules below it (pyproject.toml's import contracts check that), so
what is the broker's own stays behind this list.
"""

from eddy.broker.access import Action, Principal
from eddy.broker.broker import Broker, BrokerConfig
from eddy.broker.codec import is_json_text, record_frame_bytes, safe_json
from eddy.broker.drafts import RecordDraft, drafts_from_body
from eddy.broker.events import (
    Acked,
    Assigned,
    Committed,
    End,
    Event,
    Refused,
    SessionEnd,
    Subscribed,
)
from eddy.broker.idempotence import check_record_sequence
from eddy.broker.metrics import Transport
from eddy.broker.positions import StartPosition, SubscribeParams
from eddy.broker.reads import OffsetQuery
from eddy.broker.subscriber import Subscriber
from eddy.broker.tail import Encoder
from eddy.broker.topic_rules import is_compacted, validate_config, validate_group_name

__all__ = [
    "Acked",
    "Action",
    "Assigned",
    "Broker",
    "BrokerConfig",
    "Committed",
    "Encoder",
    "End",
    "Event",
    "OffsetQuery",
    "Principal",
    "RecordDraft",
    "Refused",
    "SessionEnd",
    "StartPosition",
    "SubscribeParams",
    "Subscribed",
    "Subscriber",
    "Transport",
    "check_record_sequence",
    "drafts_from_body",
    "is_compacted",
    "is_json_text",
    "record_frame_bytes",
    "safe_json",
    "validate_config",
    "validate_group_name",
]

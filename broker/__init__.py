"""The broker's services: topics, producer (group commit), fetcher, fan-out hub, subscriptions.

Pure logic lives in `partitioner`, `positions` and `topic_rules`; everything else talks to
storage only through `storage.Engine`.
"""

from eddy.broker.broker import Broker, BrokerConfig
from eddy.broker.drafts import RecordDraft, drafts_from_body

__all__ = ["Broker", "BrokerConfig", "RecordDraft", "drafts_from_body"]

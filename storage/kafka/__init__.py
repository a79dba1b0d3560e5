"""The Kafka engine (`--engine kafka`): Eddy's `Engine` over an existing Kafka cluster.

One module per job, each a class built on base.py's and on the parts it uses, composed in engine.py:

- base.py: the clients, Eddy's names for Kafka's, this server's picture of the topics
- followers.py: live fan-out, one consumer tailing each followed topic
- produce.py: `append`, the per-topic send queues, Kafka's errors as Eddy's
- reads.py: reads and offset lookups through a pool of group-less consumers
- groups.py: this server's seats in Kafka consumer groups, committed offsets
- topics.py: topic admin, and the periodic refresh of the picture from the cluster
- engine.py: `KafkaEngine`, the parts put together, opening and closing the clients
"""

from eddy.storage.kafka.engine import KafkaEngine

__all__ = ["KafkaEngine"]

"""Idempotent Kafka producers: producer ids, and their batches' sequences as Eddy's producer
sequences, so the engine remembers them durably in the same commit as the records.

Kafka numbers an idempotent producer's records per (producer id, epoch, partition); Eddy keeps
producer sequences per topic and producer name, so the name carries the id, epoch and
partition, and the batch's base sequence is the sequence (`check_record_sequence` is Kafka's
rule over them). Producer ids are random 62-bit numbers: unique across restarts, so a new
producer never inherits a remembered one's sequences.
"""

from __future__ import annotations

import secrets
from typing import Any

from kio.schema.errors import ErrorCode

from eddy.models.log import ProducerSequence
from eddy.routers.kafka.messages import Request
from eddy.routers.kafka.records import ProducedBatch
from eddy.routers.kafka.session import Session

MAX_EPOCH = 32_767


def producer_sequence(batch: ProducedBatch, partition: int) -> ProducerSequence | None:
    if batch.producer_id < 0:
        return None
    name = f"kafka-{batch.producer_id}-{batch.producer_epoch}-{partition}"
    return ProducerSequence(name, batch.base_sequence)


async def init_producer_id(session: Session, request: Request) -> dict[str, Any]:
    body = request.body
    if body.transactional_id is not None:
        return {
            "error_code": ErrorCode.transactional_id_authorization_failed,
            "producer_id": -1,
            "producer_epoch": -1,
        }
    producer_id = int(getattr(body, "producer_id", -1))
    epoch = int(getattr(body, "producer_epoch", -1))
    if producer_id >= 0 and 0 <= epoch < MAX_EPOCH:  # KIP-360: the same producer, next epoch
        return {
            "error_code": ErrorCode.none,
            "producer_id": producer_id,
            "producer_epoch": epoch + 1,
        }
    return {"error_code": ErrorCode.none, "producer_id": secrets.randbits(62), "producer_epoch": 0}

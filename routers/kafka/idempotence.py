"""Idempotent Kafka producers: their (producer id, epoch, partition, base sequence)."""

from __future__ import annotations

from routers.kafka.records import ProducedBatch
from storage import ProducerSequence


def producer_sequence(batch: ProducedBatch, partition: int) -> ProducerSequence | None:
    if batch.producer_id < 0:
        return None
    return None

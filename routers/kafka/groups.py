"""Kafka-protocol consumer groups (filled in with the coordinator)."""

from __future__ import annotations

from broker import Broker


class KafkaGroups:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

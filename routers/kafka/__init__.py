"""Kafka's wire protocol as a transport of the embedded broker (`--kafka-listener`)."""

from eddy.routers.kafka.listener import KafkaListener, parse_address

__all__ = ["KafkaListener", "parse_address"]

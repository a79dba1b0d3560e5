"""The runner's settings: which sections run, and each measurement's size and length (smaller
with --quick)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

SECTIONS = ("produce", "batch", "wspublish", "fanout", "retention", "compression")


@dataclass(frozen=True)
class Config:
    quick: bool
    sections: tuple[str, ...]
    produce_seconds: float
    warmup_seconds: float
    produce_connections: int
    produce_processes: int
    batch_seconds: float
    batch_connections: int
    batch_size: int
    publish_window: int  # WebSocket publish: records sent and not yet acked, at most
    fanout_subscribers: int
    fanout_processes: int
    fanout_rates: tuple[float, ...]
    fanout_seconds: float
    drain_timeout: float
    sync_modes: tuple[str, ...]
    ws_client: str
    repeats: int
    backlog_records: int
    backlog_fill_budget: float  # seconds the backlog fill may take at most
    retention_rate: float  # single-record produce requests/s to `live`
    retention_connections: int
    retention_seconds: float  # each of the two measured windows
    reclaim_wait: float  # after the retention window, how long to wait for the space reclaim
    compression_rate: float  # records/s of the compression section's publisher


def make_config(args: argparse.Namespace) -> Config:
    quick = bool(args.quick)
    subscribers = args.subscribers or (200 if quick else 1000)
    processes = args.subscriber_processes or (2 if quick else 4)
    return Config(
        quick=quick,
        sections=tuple(args.only or SECTIONS),
        produce_seconds=1.5 if quick else 5.0,
        warmup_seconds=0.5 if quick else 1.0,
        produce_connections=32,
        produce_processes=args.client_processes,
        batch_seconds=1.5 if quick else 6.0,
        batch_connections=4,
        batch_size=1000,
        publish_window=1000,
        fanout_subscribers=subscribers,
        fanout_processes=min(processes, subscribers),
        fanout_rates=tuple(float(r) for r in args.rates.split(","))
        if args.rates
        else (50.0, 200.0),
        fanout_seconds=args.fanout_seconds or (2.5 if quick else 10.0),
        drain_timeout=8.0 if quick else 15.0,  # also the publisher's wait for missing acks
        sync_modes=("full",) if quick else ("full", "normal"),
        ws_client=args.ws_client,
        repeats=args.repeat or (1 if quick else 2),
        backlog_records=args.backlog or (100_000 if quick else 500_000),
        backlog_fill_budget=12.0 if quick else 45.0,
        retention_rate=200.0,
        retention_connections=4,
        retention_seconds=4.0 if quick else 10.0,
        reclaim_wait=8.0 if quick else 30.0,
        compression_rate=args.compression_rate or (10.0 if quick else 20.0),
    )

"""Consumer-group commit soak: auto-committing members while records flow, then a SIGKILL.

    .venv/bin/python -m bench.commits                 # 20 members, 2,000 records/s, 30 s
    .venv/bin/python -m bench.commits --seconds 5     # a quick look

Eddy (`--sync full`, `--auto-commit-interval 0.1`) with one 20-partition topic; 20 WebSocket
members of one group with `auto_commit=true`; a REST producer sending batches of 100 records at
the target rate. Afterwards it waits until the group has committed everything it was sent,
reads the committed offsets (`GET /v1/groups/g`: the server's memory, which only changes after
a commit is durable), kills the server with SIGKILL, restarts it and reads them again: they
must be equal, and the server log must show no failed commit.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import signal
import tempfile
import threading
import time
from pathlib import Path

from websockets.asyncio.client import connect

from bench.common import HOST, eddy_server, http_json, raise_open_file_limit

BATCH = 100  # records per produce request (one connection; an fsync per commit)


def produce(port: int, rate: float, seconds: float, sent: list[int], errors: list[str]) -> None:
    """Open-loop batches of BATCH records at `rate` records/s over one keep-alive connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    interval = BATCH / rate
    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) < start + seconds:
        due = start + n * interval
        if due > now:
            time.sleep(due - now)
        records = [{"value": {"n": sent[0] + i}} for i in range(BATCH)]
        conn.request(
            "POST",
            "/v1/topics/soak/records",
            body=json.dumps({"records": records}),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
        if response.status == 200:
            sent[0] += BATCH
        else:
            errors.append(f"{response.status} {body[:200]!r}")
        n += 1
    conn.close()


async def member(url: str, received: list[int], stop: asyncio.Event, joined: asyncio.Event) -> None:
    async with connect(url, max_size=None) as ws:
        while not stop.is_set():
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
            except TimeoutError:
                continue
            if frame["type"] == "record":
                received[0] += 1
            elif frame["type"] == "assignment":
                joined.set()


def group_offsets(port: int) -> dict[int, int | None]:
    status, body = http_json(port, "GET", "/v1/groups/g")
    if status != 200:
        return {}
    return {o["partition"]: o["committed_offset"] for o in body["offsets"]}


def wait_caught_up(port: int, ends: dict[int, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while group_offsets(port) != ends and time.monotonic() < deadline:
        time.sleep(0.1)


def high_watermarks(port: int) -> dict[int, int]:
    _, body = http_json(port, "GET", "/v1/topics/soak")
    return {p["partition"]: p["high_watermark"] for p in body["partitions"]}


async def soak(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str]]:
    data = tmp / "data"
    extra = ["--auto-commit-interval", str(args.interval)]
    server = eddy_server(data, tmp, "full", extra)
    server.start()
    rows: list[tuple[str, str]] = []
    try:
        status, body = http_json(
            server.port, "POST", "/v1/topics", {"name": "soak", "partitions": args.partitions}
        )
        assert status == 201, body
        url = f"ws://{HOST}:{server.port}/v1/topics/soak/ws?group=g&auto_commit=true&from=earliest"
        stop = asyncio.Event()
        received = [0]
        joins = [asyncio.Event() for _ in range(args.members)]
        members = [asyncio.create_task(member(url, received, stop, j)) for j in joins]
        await asyncio.wait_for(asyncio.gather(*(j.wait() for j in joins)), 30)
        sent, errors = [0], list[str]()
        cpu_before = server.cpu_seconds()
        started = time.monotonic()
        producer = threading.Thread(
            target=produce, args=(server.port, args.rate, args.seconds, sent, errors)
        )
        producer.start()
        await asyncio.to_thread(producer.join)
        elapsed = time.monotonic() - started
        cpu = server.cpu_seconds() - cpu_before
        ends = high_watermarks(server.port)
        await asyncio.to_thread(wait_caught_up, server.port, ends, 60)
        caught_up = time.monotonic() - started - elapsed
        acknowledged = group_offsets(server.port)
        stop.set()
        await asyncio.gather(*members, return_exceptions=True)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        log = server.log_text()
        failed = sum(1 for line in log.splitlines() if "auto-commit" in line and "failed" in line)
        restarted = eddy_server(data, tmp, "full", extra)
        restarted.start()
        try:
            after = group_offsets(restarted.port)
        finally:
            restarted.stop()
        same = sum(1 for p, o in acknowledged.items() if after.get(p) == o)
        rows += [
            ("Members / partitions", f"{args.members} / {args.partitions}"),
            ("Auto-commit interval", f"{args.interval:g} s"),
            (
                "Records produced (acked)",
                f"{sent[0]:,} in {elapsed:.1f} s = {sent[0] / elapsed:,.0f} rec/s "
                f"(target {args.rate:,.0f}); produce errors: {len(errors)}",
            ),
            ("Records delivered to members", f"{received[0]:,}"),
            (
                "Group caught up with the log",
                "yes" if acknowledged == ends else f"NO after {caught_up:.1f} s",
            ),
            ("Failed commits in the server log", f"**{failed}** (target 0)"),
            (
                "Committed offsets after SIGKILL + restart = last acknowledged",
                f"**{same} / {len(acknowledged)}** partitions",
            ),
            ("Server CPU during the flow", f"{cpu / elapsed:.2f} cores"),
        ]
        if errors:
            rows.append(("First produce error", errors[0]))
    finally:
        server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2000.0, help="records/s")
    parser.add_argument("--interval", type=float, default=0.1, help="auto-commit seconds")
    args = parser.parse_args(argv)
    raise_open_file_limit()
    with tempfile.TemporaryDirectory(prefix="eddy-bench-commits-") as tmp:
        rows = asyncio.run(soak(args, Path(tmp)))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print("\n| Consumer-group commit soak | Result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nLoad average before the end of the run: {' '.join(load)} (2 CPUs).")
    ok = all(
        not (name.startswith("Failed") and not value.startswith("**0**")) for name, value in rows
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

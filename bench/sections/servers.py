"""The servers a section measures: started and stopped around its measurements, with what they
logged at WARNING or above (and an unclean exit) reported as problems."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from bench.common import HOST, ServerProcess, http_json
from bench.sections.report import Report


@contextmanager
def running(server: ServerProcess, report: Report) -> Iterator[ServerProcess]:
    print(f"  starting {server.name} on {HOST}:{server.port}", flush=True)
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
        if code not in (0, None, -signal.SIGTERM):  # uvicorn re-raises SIGTERM after shutdown
            report.problem(f"{server.name} exited with code {code} on SIGTERM")
        blocks = server.log_problems()
        if blocks:
            first = blocks[0].splitlines()
            summary = first[0] if len(first) == 1 else f"{first[0]} ... {first[-1]}"
            report.problem(
                f"{server.name} logged {len(blocks)} warning(s)/error(s); first: {summary[:300]}"
            )
            report.details.append(
                f"Log excerpt of {server.name}:\n\n```\n" + "\n".join(blocks[:5]) + "\n```"
            )


def create_topic(server: ServerProcess, name: str, partitions: int = 1) -> None:
    status, body = http_json(
        server.port, "POST", "/v1/topics", {"name": name, "partitions": partitions}
    )
    if status != 201:
        raise RuntimeError(f"creating topic {name} failed: {status} {body}")

"""The consumer-group worker of docs/groups.md, run twice as real processes: kill one
mid-stream, lose nothing."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO, serve_in_thread, wait_until


def test_two_workers_one_killed_mid_stream_no_order_lost(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "data", ws_ping_interval=0.5, ws_ping_timeout=1.0) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        client.post("/v1/topics", json={"name": "orders", "partitions": 4})
        workers = [
            subprocess.Popen(
                [sys.executable, str(REPO / "examples" / "order_worker.py"), server.ws_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]

        def members() -> int:
            r = client.get("/v1/groups/emailer")
            return len(r.json()["members"]) if r.status_code == 200 else 0

        wait_until(lambda: members() == 2, timeout=20)
        total = 300
        for order in range(total):
            response = client.post(
                "/v1/topics/orders/records",
                json={"key": f"customer-{order % 17}", "value": {"id": order}},
            )
            assert response.status_code == 200
            if order == total // 2:
                workers[0].send_signal(signal.SIGKILL)  # crash: no close frame, no goodbye
            time.sleep(0.005)

        def all_committed() -> bool:
            offsets = client.get("/v1/groups/emailer").json()["offsets"]
            return all((o["committed_offset"] or 0) == o["high_watermark"] for o in offsets)

        wait_until(all_committed, timeout=30)
        assert members() == 1  # the killed one was detected and removed
        workers[1].send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=10)[0] for w in workers]
    handled = [int(n) for out in outputs for n in re.findall(r"email sent for order (\d+)", out)]
    assert set(handled) == set(range(total))
    survivor_assignments = re.findall(r"assigned partitions (.*)", outputs[1])
    assert survivor_assignments[-1] == "['0', '1', '2', '3']"  # it took over everything

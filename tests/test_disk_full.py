"""A full disk: producers get 503 `unavailable`, nothing is corrupted, and the broker recovers
when space returns. Runs on a small tmpfs (the test suite runs as root, as CI does)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import serve_in_thread


def test_full_disk_gives_503_without_corruption_and_recovers(small_fs: Path) -> None:
    data = small_fs / "data"
    acked: list[tuple[int, int]] = []  # (offset, value)
    with serve_in_thread(data) as server, server.client() as client:
        assert client.post("/v1/topics", json={"name": "t"}).status_code == 201
        filler = small_fs / "filler"
        filler.write_bytes(b"\0" * (5 * 1024 * 1024))  # leave the broker ~3 MiB
        value = "v" * 20_000
        refused = None
        for i in range(1000):
            response = client.post("/v1/topics/t/records", json={"value": {"i": i, "pad": value}})
            if response.status_code != 200:
                refused = response
                break
            acked.append((response.json()["offsets"][0]["offset"], i))
        assert refused is not None, "the disk never filled up"
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "unavailable"
        assert client.get("/readyz").status_code in (200, 503)
        assert client.get("/healthz").status_code == 200

        filler.unlink()  # space comes back
        response = client.post("/v1/topics/t/records", json={"value": {"i": "after"}})
        assert response.status_code == 200, response.text
        assert response.json()["offsets"][0]["offset"] == len(acked)  # no hole, no reuse
        assert client.get("/readyz").status_code == 200

        fetched = []
        offset = 0
        while True:
            body = client.get(
                "/v1/topics/t/partitions/0/records", params={"offset": offset, "limit": 50}
            ).json()
            if not body["records"]:
                break
            fetched += [(r["offset"], r["value"]["i"]) for r in body["records"]]
            offset = body["next_offset"]
        assert fetched == [*acked, (len(acked), "after")]
    with sqlite3.connect(data / "topics" / "t" / "log.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with serve_in_thread(data) as server, server.client() as client:  # and it restarts cleanly
        info = client.get("/v1/topics/t").json()["partitions"][0]
        assert info["high_watermark"] == len(acked) + 1

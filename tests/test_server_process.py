"""The real `python -m eddy serve` process: start-up line, data-dir lock, restarts, kills."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.conftest import REPO, start_server_process


def test_startup_line_and_restart_persistence(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server_process(data)
    try:
        with httpx.Client(base_url=server.base_url) as c:
            c.post("/v1/topics", json={"name": "prices", "partitions": 3})
            c.post(
                "/v1/topics/prices/records",
                json={"records": [{"key": f"k{i}", "value": {"i": i}} for i in range(30)]},
            )
            with connect(f"{server.ws_url}/v1/topics/prices/publish") as ws:
                ws.send(json.dumps({"id": "x", "key": "ws", "value": "via websocket"}))
                ack = json.loads(ws.recv(timeout=10))
            before = c.get("/v1/topics/prices").json()
    finally:
        assert server.stop(signal.SIGTERM) == 0
    startup = [line for line in server.output.splitlines() if "Eddy listening on" in line]
    assert len(startup) == 1
    assert server.base_url in startup[0] and str(data.resolve()) in startup[0]
    assert f"{server.base_url}/docs" in startup[0]

    server = start_server_process(data)
    try:
        with httpx.Client(base_url=server.base_url) as c:
            assert c.get("/v1/topics/prices").json() == before
            values = []
            for p in range(3):
                body = c.get(
                    f"/v1/topics/prices/partitions/{p}/records", params={"offset": 0}
                ).json()
                values += [r["value"] for r in body["records"]]
            assert sorted(v["i"] for v in values if isinstance(v, dict)) == list(range(30))
            assert "via websocket" in values
            # offsets continue where they stopped
            after = c.post("/v1/topics/prices/records", json={"key": "ws", "value": 1}).json()[
                "offsets"
            ][0]
            assert after["partition"] == ack["partition"] and after["offset"] == ack["offset"] + 1
    finally:
        server.stop()


def test_acknowledged_records_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server_process(data)
    acked = []
    with httpx.Client(base_url=server.base_url) as c:
        for i in range(50):
            acked.append(c.post("/v1/topics/k/records", json={"value": i}).json()["offsets"][0])
    server.stop(signal.SIGKILL)
    server = start_server_process(data)
    try:
        with httpx.Client(base_url=server.base_url) as c:
            body = c.get("/v1/topics/k/partitions/0/records", params={"offset": 0}).json()
            assert [(r["offset"], r["value"]) for r in body["records"]] == [
                (a["offset"], i) for i, a in enumerate(acked)
            ]
    finally:
        server.stop()


def test_second_server_on_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server_process(data)
    try:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "eddy",
                "serve",
                "--port",
                "0",  # never a port another process could take meanwhile: the lock is the subject
                "--data-dir",
                str(data),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "in use by another Eddy server" in second.stderr
        assert f"pid {server.process.pid}" in second.stderr
        # the first one is unharmed
        assert httpx.get(server.base_url + "/readyz").status_code == 200
    finally:
        server.stop()


def test_environment_variables_configure_the_server(tmp_path: Path) -> None:
    server = start_server_process(
        tmp_path / "data", env={"EDDY_DEFAULT_PARTITIONS": "4", "EDDY_AUTO_CREATE_TOPICS": "false"}
    )
    try:
        with httpx.Client(base_url=server.base_url) as c:
            assert c.post("/v1/topics/x/records", json={"value": 1}).status_code == 404
            assert c.post("/v1/topics", json={"name": "x"}).json()["partitions"] == 4
    finally:
        server.stop()


def test_invalid_setting_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eddy", "serve", "--data-dir", str(tmp_path), "--sync", "sometimes"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "invalid setting sync" in result.stderr


def test_idempotent_producer_state_survives_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server_process(data)
    body = {"records": [{"value": "once"}], "producer": {"id": "phone-1", "sequence": 5}}
    with httpx.Client(base_url=server.base_url) as c:
        original = c.post("/v1/topics/k/records", json=body).json()
    server.stop(signal.SIGKILL)
    server = start_server_process(data)
    try:
        with httpx.Client(base_url=server.base_url) as c:
            assert c.post("/v1/topics/k/records", json=body).json() == original  # a retry
            hw = c.get("/v1/topics/k").json()["partitions"][0]["high_watermark"]
            assert hw == 1
    finally:
        server.stop()


def test_listening_is_logged_once_the_port_serves_and_a_line_at_shutdown(tmp_path: Path) -> None:
    """`--port 0` takes any free port: the start-up line names the real one, which answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "eddy", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # the process logs this line before anything else
            lines.append(line)
            if "Eddy listening on" in line:
                break
        match = re.search(r"Eddy listening on http://127\.0\.0\.1:(\d+) ", lines[-1])
        assert match, lines
        port = int(match.group(1))
        assert port != 0
        # Logged after the bind: the port already answers when the line is out.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert rest.strip().splitlines()[-1].endswith("Eddy stopped")


def test_a_busy_port_is_a_clear_error_before_storage_opens(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "eddy",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "d"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"eddy: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Eddy listening" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()  # refused before the data directory was touched

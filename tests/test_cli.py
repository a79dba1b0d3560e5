"""The `eddy` command line client against a real server (uvicorn on a loopback port): commands
run in this process through typer's CliRunner, or as the venv's `eddy` script in a subprocess
(start-up, help, stdin from a file, environment); either way they talk HTTP and WebSocket."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from eddy.app.cli import cli
from tests.conftest import (
    REPO,
    RunningServer,
    fetch_all,
    free_port,
    serve_in_thread,
    start_server_process,
    wait_until,
)

EDDY = str(Path(sys.executable).parent / "eddy")


def eddy(
    server: RunningServer | None,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    process: bool = False,
) -> Result:
    """`eddy ARGS` with EDDY_URL pointing at the server: in this process through typer's
    CliRunner (fast; the command still talks HTTP and WebSocket to the server), or as the
    venv's `eddy` script in a subprocess."""
    environment = {"EDDY_URL": server.base_url} if server is not None else {}
    environment.update(env or {})
    if not process:
        outcome = CliRunner().invoke(cli, list(args), input=stdin, env=environment)
        if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
            raise outcome.exception
        return Result(outcome.exit_code, outcome.stdout, outcome.stderr)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EDDY_")}
    done = subprocess.run(
        [EDDY, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**inherited, **environment},
    )
    return Result(done.returncode, done.stdout, done.stderr)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def ok(result: Result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def records_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(tmp_path / "data") as server:
        yield server


def test_version() -> None:
    assert ok(eddy(None, "--version", process=True)).strip() == "eddy 0.1.0"


def test_topics_create_list_describe_alter_delete(running: RunningServer) -> None:
    created = json.loads(
        ok(
            eddy(
                running,
                "topics",
                "create",
                "prices",
                "--partitions",
                "3",
                "--config",
                "retention.ms=3600000",
                "--config",
                "cleanup.policy=compact,delete",
            )
        )
    )
    assert created["partitions"] == 3
    assert created["config"]["retention.ms"] == 3600000
    assert created["config"]["cleanup.policy"] == "compact,delete"
    ok(eddy(running, "topics", "create", "orders"))
    assert ok(eddy(running, "topics", "list")).split() == ["orders", "prices"]

    described = json.loads(ok(eddy(running, "topics", "describe", "prices")))
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    with running.client() as client:
        assert described == client.get("/v1/topics/prices").json()

    altered = json.loads(
        ok(
            eddy(
                running,
                "topics",
                "alter",
                "prices",
                "--partitions",
                "6",
                "--config",
                "retention.ms=-1",
            )
        )
    )
    assert len(altered["partitions"]) == 6 and altered["config"]["retention.ms"] == -1

    deleted = eddy(running, "topics", "delete", "orders")
    assert deleted.returncode == 0 and "deleted topic orders" in deleted.stderr
    assert ok(eddy(running, "topics", "list")).split() == ["prices"]


def test_server_errors_are_printed_with_a_non_zero_exit(running: RunningServer) -> None:
    missing = eddy(running, "topics", "describe", "nope")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "topic 'nope' does not exist (topic_not_found, HTTP 404)" in missing.stderr
    ok(eddy(running, "topics", "create", "t"))
    exists = eddy(running, "topics", "create", "t")
    assert exists.returncode == 1 and "topic_exists" in exists.stderr
    huge = eddy(running, "topics", "alter", "t", "--config", f"retention.ms={10**30}")
    assert huge.returncode == 1 and "invalid_request, HTTP 422" in huge.stderr
    bad = eddy(running, "topics", "create", "u", "--config", "retention.ms")
    assert bad.returncode == 2 and "key=value" in bad.stderr
    nothing = eddy(running, "topics", "alter", "t")
    assert nothing.returncode == 2 and "nothing to alter" in nothing.stderr
    assert "Traceback" not in missing.stderr + exists.stderr + huge.stderr + bad.stderr


def test_connection_refused_is_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("topics", "list"), ("consume", "t", "--count", "1"), ("groups", "list")):
        result = eddy(None, *args, "--url", url, process=args[0] == "topics")
        assert result.returncode == 1, args
        assert f"cannot connect to {url}: connection refused" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    produced = eddy(None, "produce", "t", stdin="1\n", env={"EDDY_URL": url})
    assert produced.returncode == 1 and "connection refused" in produced.stderr
    assert "produced 0 records" in produced.stderr


def test_produce_a_file_of_10000_lines(running: RunningServer, tmp_path: Path) -> None:
    ok(eddy(running, "topics", "create", "big", "--partitions", "4"))
    lines = tmp_path / "lines.txt"
    lines.write_text(
        "".join(f'k{i % 50}:{{"i": {i}, "big": {10**25 + i}}}\n' for i in range(10_000))
    )
    with lines.open() as stdin_file:
        result = subprocess.run(
            [EDDY, "produce", "big", "--key-separator", ":", "--url", running.base_url],
            stdin=stdin_file,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert "produced 10,000 records to big" in result.stderr
    assert "\r" not in result.stderr  # no progress display when stderr is not a terminal
    with running.client() as client:
        stored = [r for p in range(4) for r in fetch_all(client, "big", p)]
    assert sorted(r["value"]["i"] for r in stored) == list(range(10_000))
    assert all(r["value"]["big"] == 10**25 + r["value"]["i"] for r in stored)  # exact integers
    assert all(r["key"] == f"k{r['value']['i'] % 50}" for r in stored)
    # one key, one partition (Kafka's partitioner), and within it the file's order
    by_key: dict[str, set[int]] = {}
    for r in stored:
        by_key.setdefault(r["key"], set()).add(r["partition"])
    assert all(len(partitions) == 1 for partitions in by_key.values())
    for p in range(4):
        numbers = [r["value"]["i"] for r in stored if r["partition"] == p]
        assert numbers == sorted(numbers)


def test_produce_raw_text_to_a_partition(running: RunningServer) -> None:
    ok(eddy(running, "topics", "create", "logs", "--partitions", "3"))
    text = "GET /index.html 200\n\nkey-less: not json {\nuser=ann|login\n"
    ok(eddy(running, "produce", "logs", "--raw", "--partition", "2", stdin=text))
    ok(eddy(running, "produce", "logs", "--raw", "--key-separator", "|", stdin="ann|logout\n"))
    with running.client() as client:
        stored = fetch_all(client, "logs", 2)
        keyed = [r for p in range(3) for r in fetch_all(client, "logs", p) if r["key"]]
    # empty lines are skipped; a line without the separator has no key
    assert [(r["key"], r["value"]) for r in stored[:3]] == [
        (None, "GET /index.html 200"),
        (None, "key-less: not json {"),
        (None, "user=ann|login"),
    ]
    assert [(r["key"], r["value"]) for r in keyed] == [("ann", "logout")]


def test_produce_stops_at_a_line_that_is_not_json(running: RunningServer) -> None:
    result = eddy(running, "produce", "t", stdin='{"a": 1}\n2\nnot json\n4\n')
    assert result.returncode == 1
    assert "line 3: not valid JSON" in result.stderr and "--raw" in result.stderr
    assert "produced 2 records" in result.stderr
    with running.client() as client:
        assert [r["value"] for r in fetch_all(client, "t")] == [{"a": 1}, 2]


def test_produce_error_from_the_server(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data", auto_create_topics=False) as server:
        result = eddy(server, "produce", "nope", stdin="1\n2\n")
    assert result.returncode == 1
    assert "lines 1-2 were not produced: topic 'nope' does not exist" in result.stderr


def test_consume_count_offsets_keys_and_formats(running: RunningServer) -> None:
    ok(eddy(running, "topics", "create", "p", "--partitions", "2"))
    lines = "".join(f"{'AB'[i % 2]}:{json.dumps({'n': i})}\n" for i in range(10))
    ok(eddy(running, "produce", "p", "--key-separator", ":", stdin=lines))
    with running.client() as client:
        stored = {
            (r["partition"], r["offset"]): r for p in range(2) for r in fetch_all(client, "p", p)
        }

    everything = records_of(
        ok(eddy(running, "consume", "p", "--from", "earliest", "--count", "10"))
    )
    assert {(r["partition"], r["offset"]): r for r in everything} == stored  # the REST records
    assert all("type" not in r for r in everything)

    some = records_of(ok(eddy(running, "consume", "p", "--from", "earliest", "--count", "3")))
    assert len(some) == 3

    only_a = records_of(
        ok(eddy(running, "consume", "p", "--from", "earliest", "--keys", "A", "--count", "5"))
    )
    assert [r["value"]["n"] for r in only_a] == [0, 2, 4, 6, 8]
    part = only_a[0]["partition"]  # one key, one partition
    in_order = sorted(
        (r for r in stored.values() if r["partition"] == part), key=lambda r: r["offset"]
    )
    expected = [r for r in in_order if r["offset"] >= 3 and r["key"] == "A"][:2]
    resumed = records_of(
        ok(eddy(running, "consume", "p", "--offsets", f"{part}:3", "--keys", "A", "--count", "2"))
    )
    assert resumed == expected

    values = eddy(
        running,
        "consume",
        "p",
        "--from",
        "earliest",
        "--partitions",
        str(part),
        "--count",
        "2",
        "--format",
        "value",
    )
    assert ok(values).splitlines() == [
        json.dumps(r["value"], separators=(",", ":")) for r in in_order[:2]
    ]
    ok(eddy(running, "produce", "text", "--raw", stdin="plain words\n"))
    text = ok(
        eddy(running, "consume", "text", "--from", "earliest", "--count", "1", "--format", "value")
    )
    assert text == "plain words\n"


def test_consume_errors(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path / "data", auto_create_topics=False) as server:
        missing = eddy(server, "consume", "nope", "--count", "1")
        assert missing.returncode == 1 and "does not exist" in missing.stderr, missing.stderr
        ok(eddy(server, "topics", "create", "t"))
        beyond = eddy(server, "consume", "t", "--offsets", "0:99", "--count", "1")
        assert beyond.returncode == 1 and "offset_out_of_range" in beyond.stderr
        bad = eddy(server, "consume", "t", "--format", "xml")
        assert bad.returncode == 2
    assert "Traceback" not in missing.stderr + beyond.stderr


def test_group_consume_commits_what_it_printed_then_describe_reset_delete(
    running: RunningServer,
) -> None:
    ok(eddy(running, "topics", "create", "orders", "--partitions", "2"))
    ok(eddy(running, "produce", "orders", stdin="".join(f"{i}\n" for i in range(10))))

    def member(count: int) -> list[dict[str, Any]]:
        args = ("consume", "orders", "--group", "billing", "--from", "earliest")
        return records_of(ok(eddy(running, *args, "--count", str(count))))

    def members() -> int:
        with running.client() as client:
            return len(client.get("/v1/groups/billing").json()["members"])

    first = member(4)
    wait_until(lambda: members() == 0)
    described = json.loads(ok(eddy(running, "groups", "describe", "billing")))
    committed = {o["partition"]: o["committed_offset"] or 0 for o in described["offsets"]}
    assert sum(committed.values()) == 4  # exactly what was printed, nothing more
    for r in first:
        assert r["offset"] < committed[r["partition"]]

    second = member(6)  # resumes at the commits: the other six, none again
    wait_until(lambda: members() == 0)
    seen = sorted((r["partition"], r["offset"]) for r in first + second)
    assert len(set(seen)) == 10 and sorted(r["value"] for r in first + second) == list(range(10))

    assert ok(eddy(running, "groups", "list")).split() == ["billing"]
    reset = json.loads(
        ok(eddy(running, "groups", "reset", "billing", "--topic", "orders", "--to", "earliest"))
    )
    assert reset["offsets"] == {"0": 0, "1": 0}
    assert len(member(10)) == 10  # from the start again
    wait_until(lambda: members() == 0)
    latest = json.loads(
        ok(eddy(running, "groups", "reset", "billing", "--topic", "orders", "--to", "latest"))
    )
    with running.client() as client:
        heads = {
            str(p["partition"]): p["high_watermark"]
            for p in client.get("/v1/topics/orders").json()["partitions"]
        }
    assert latest["offsets"] == heads
    by_time = eddy(running, "groups", "reset", "billing", "--topic", "orders", "--to", "0")
    assert json.loads(ok(by_time))["offsets"] == {"0": 0, "1": 0}
    bad = eddy(running, "groups", "reset", "billing", "--topic", "orders", "--to", "soon")
    assert bad.returncode == 2

    deleted = eddy(running, "groups", "delete", "billing")
    assert deleted.returncode == 0 and "deleted group billing" in deleted.stderr
    gone = eddy(running, "groups", "describe", "billing")
    assert gone.returncode == 1 and "group_not_found" in gone.stderr
    assert ok(eddy(running, "groups", "list")) == ""


def test_token_from_option_and_environment(tmp_path: Path) -> None:
    auth = tmp_path / "auth.toml"
    key = "s3cret-key"
    auth.write_text(
        f"""
[[principals]]
name = "ops"
key_sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"
read = ["*"]
write = ["*"]
admin = ["*"]
groups = ["*"]
"""
    )
    with serve_in_thread(tmp_path / "data", auth_file=auth) as server:
        refused = eddy(server, "topics", "create", "t", process=True)
        assert refused.returncode == 1 and "unauthorized" in refused.stderr
        ok(eddy(server, "topics", "create", "t", "--token", key))
        ok(eddy(server, "produce", "t", stdin="1\n2\n", env={"EDDY_TOKEN": key}, process=True))
        got = eddy(
            server, "consume", "t", "--from", "earliest", "--count", "2", env={"EDDY_TOKEN": key}
        )
        assert [r["value"] for r in records_of(ok(got))] == [1, 2]
        denied = eddy(server, "consume", "t", "--count", "1", "--token", "wrong")
        assert denied.returncode == 1 and "unauthorized" in denied.stderr


def test_serve_help_shows_every_setting_with_its_variable_and_default() -> None:
    from eddy.app.serve_options import default_text, env_name
    from eddy.app.settings import Settings

    result = eddy(None, "serve", "--help", env={"COLUMNS": "80"}, process=True)
    help_text = ok(result)
    assert max(len(line) for line in help_text.splitlines()) <= 80
    words = " ".join(help_text.split())  # wrapped lines joined again
    for name, field in Settings.model_fields.items():
        assert f"--{name.replace('_', '-')}" in words, name
        assert env_name(name) in words, name
        default = default_text(field)
        if default is not None:
            assert f"default: {default}" in words, name
    assert "[env var: EDDY_PORT; default: 8080]" in words
    assert "--sync [full|normal]" in words


def test_the_documented_examples_name_real_commands_and_options() -> None:
    """Each `eddy ...` line of the command-line page (docs/cli.md) parses (with --help added, so
    nothing runs): its subcommands and options exist."""
    section = (REPO / "docs" / "cli.md").read_text()
    examples = [
        line.split("#", 1)[0].split("<", 1)[0].strip()
        for block in section.split("```sh\n")[1:]
        for raw in block.split("\n```")[0].splitlines()
        for line in [raw.split("| ", 1)[-1]]
        if line.startswith("eddy ")
    ]
    assert len(examples) >= 15
    for example in examples:
        args = shlex.split(example)[1:]
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (example, result.output)


def test_produce_shows_progress_only_on_a_terminal(running: RunningServer) -> None:
    """stderr on a pseudo-terminal gets a running count (one `\\r` update per batch); a pipe
    gets only the summary (see the 10,000-line test)."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [EDDY, "produce", "t", "--batch-size", "10", "--url", running.base_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            text=True,
        )
        process.communicate("".join(f"{i}\n" for i in range(35)), timeout=120)
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal's other end is closed and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert process.returncode == 0
    text = shown.decode()
    assert "\r10 records" in text and "\r30 records" in text and "\r35 records" in text
    assert "produced 35 records to t" in text


def test_consume_resumes_across_a_server_restart(tmp_path: Path) -> None:
    """`eddy consume` (on eddy.client) waits out a restart and resumes by offset: every record
    printed once."""
    port = free_port()
    server = start_server_process(tmp_path / "data", port=port)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EDDY_")}
    consumer = subprocess.Popen(
        [EDDY, "consume", "prices", "--from", "earliest", "--count", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**inherited, "EDDY_URL": server.base_url},
    )
    try:
        lines = "".join(f"{n}\n" for n in range(10))
        ok(eddy(server, "produce", "prices", stdin=lines))  # type: ignore[arg-type]
        assert consumer.stdout is not None
        first = [consumer.stdout.readline() for _ in range(10)]
        server.stop()
        server = start_server_process(tmp_path / "data", port=port)
        ok(eddy(server, "produce", "prices", stdin="".join(f"{n}\n" for n in range(10, 20))))  # type: ignore[arg-type]
        rest, errors = consumer.communicate(timeout=60)
    finally:
        if consumer.poll() is None:
            consumer.kill()
        server.stop()
    assert consumer.returncode == 0, errors
    printed = records_of("".join(first) + rest)
    assert sorted(r["value"] for r in printed) == list(range(20))
    assert len({(r["partition"], r["offset"]) for r in printed}) == 20


def test_a_group_member_whose_topic_is_deleted_says_so(running: RunningServer) -> None:
    ok(eddy(running, "topics", "create", "doomed"))
    ok(eddy(running, "produce", "doomed", stdin="1\n"))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EDDY_")}
    consumer = subprocess.Popen(
        [EDDY, "consume", "doomed", "--group", "g", "--from", "earliest"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**inherited, "EDDY_URL": running.base_url},
    )
    try:
        assert consumer.stdout is not None
        assert json.loads(consumer.stdout.readline())["value"] == 1
        ok(eddy(running, "topics", "delete", "doomed"))
        _, errors = consumer.communicate(timeout=60)
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert consumer.returncode == 1
    assert "topic 'doomed' does not exist (topic_not_found, WebSocket close 4404)" in errors

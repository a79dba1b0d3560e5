"""The `eddy` command (also `python -m eddy`): `serve` runs the broker; `topics`, `produce`,
`consume` and `groups` talk to a running one (app/client.py) in the spirit of kafka-topics and
kcat."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from eddy.app.cli_lines import (
    COMMIT_INTERVAL,
    COMMIT_WAIT,
    BatchFailed,
    LineError,
    LineProducer,
    record_output,
)
from eddy.app.serve_options import with_setting_options
from eddy.app.settings import Settings
from eddy.client import (
    DEFAULT_URL,
    Client,
    ClientError,
    Conflict,
    ConnectionLost,
    SyncSubscription,
)

# rich_markup_mode=None: click's plain help, which wraps at the terminal's width instead of
# cutting option names, and keeps "[env var: ...; default: ...]" (rich markup would eat it).
cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Eddy streaming broker: `eddy serve` runs it, the other commands talk to one.",
)
topics_cli = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Administer topics.")
groups_cli = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Inspect and reset consumer groups."
)
cli.add_typer(topics_cli, name="topics")
cli.add_typer(groups_cli, name="groups")

Url = Annotated[str, typer.Option(envvar="EDDY_URL", help="The server's URL")]
Token = Annotated[
    str | None, typer.Option(envvar="EDDY_TOKEN", help="API key or JWT", show_default=False)
]
ConfigItems = Annotated[
    list[str] | None,
    typer.Option("--config", help="Topic config key=value (repeatable)", show_default=False),
]


class OutputFormat(StrEnum):
    json = "json"
    value = "value"


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"eddy: {message}", err=True)
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"eddy {version('eddy')}")
        raise typer.Exit()


@cli.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    pass


# --- serve -----------------------------------------------------------------------------------
def _settings(flags: dict[str, Any]) -> Settings:
    """Flags given on the command line win; the rest come from EDDY_* variables or defaults."""
    try:
        # A flag left out is None (a repeatable one: empty), so Settings reads EDDY_* for it.
        return Settings(**{k: v for k, v in flags.items() if v is not None and v != []})
    except ValidationError as exc:
        for err in exc.errors():
            if err["loc"]:
                where = ".".join(map(str, err["loc"]))
                typer.echo(f"eddy: invalid setting {where}: {err['msg']}", err=True)
            else:  # a rule between settings (Settings._rules_between_fields): its own words
                error = err.get("ctx", {}).get("error")
                typer.echo(f"eddy: {error if error is not None else err['msg']}", err=True)
        raise typer.Exit(2) from None


@cli.command("serve")
@with_setting_options
def serve(**flags: Any) -> None:
    """Run the broker. Every option is also an EDDY_* environment variable; options win."""
    # The server's modules load here, not for the client commands (which start faster).
    from eddy.app.factory import create_app
    from eddy.app.logs import configure_logging
    from eddy.app.server import EddyServer, bind_socket, uvicorn_config
    from eddy.broker.access import AuthFileError
    from eddy.storage import DataDirLocked, SQLiteEngine

    settings = _settings(flags)
    configure_logging(settings.log_level, settings.log_format)
    # Fail fast with a clear message instead of a start-up traceback: a busy port before the
    # data directory is touched, a data directory in use before storage opens.
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    try:
        if settings.engine == "sqlite":
            SQLiteEngine.ensure_data_dir_free(settings.data_dir)
    except DataDirLocked as exc:
        _fail(str(exc))
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal; exiting 0 tells a
    # supervisor (systemd, Docker, Kubernetes) that this was a clean, requested stop.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        app = create_app(settings)
    except AuthFileError as exc:
        _fail(str(exc))
    config = uvicorn_config(app, settings)
    EddyServer(config, app, own_process=True).run(sockets=[sock])


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@cli.command("export-openapi")
def export_openapi(
    out: Annotated[Path, typer.Option(help="Where to write the spec")] = Path(
        "openapi/openapi.json"
    ),
) -> None:
    """Write the OpenAPI document the server serves (CI checks the checked-in copy equals it)."""
    from eddy.app.factory import create_app

    spec = create_app(Settings()).openapi()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    typer.echo(f"wrote {out}")


# --- topics ----------------------------------------------------------------------------------
def _config(items: list[str] | None) -> dict[str, Any]:
    """key=value pairs; a value that is JSON (a number) is sent as such, anything else as text
    (cleanup.policy=compact)."""
    config: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            _fail(f"--config takes key=value, not {item!r}", 2)
        try:
            config[key] = json.loads(text)
        except ValueError:
            config[key] = text
    return config


@topics_cli.command("create")
def topics_create(
    name: str,
    partitions: Annotated[int | None, typer.Option(help="Partition count")] = None,
    config: ConfigItems = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Create a topic; prints it."""
    with _client(url, token) as client:
        _print_json(_call(client.create_topic, name, partitions, _config(config)))


@topics_cli.command("list")
def topics_list(url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print the topics' names, one per line."""
    with _client(url, token) as client:
        for topic in _call(client.list_topics):
            typer.echo(topic["name"])


@topics_cli.command("describe")
def topics_describe(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print a topic's config and, per partition, its offsets and size."""
    with _client(url, token) as client:
        _print_json(_call(client.describe_topic, name))


@topics_cli.command("alter")
def topics_alter(
    name: str,
    partitions: Annotated[int | None, typer.Option(help="New partition count")] = None,
    config: ConfigItems = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Add partitions and/or change config keys; prints the topic."""
    changes = _config(config)
    if partitions is None and not changes:
        _fail("nothing to alter: give --partitions and/or --config", 2)
    with _client(url, token) as client:
        _print_json(_call(client.alter_topic, name, partitions, changes))


@topics_cli.command("delete")
def topics_delete(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Delete a topic and its data."""
    with _client(url, token) as client:
        _call(client.delete_topic, name)
    typer.echo(f"deleted topic {name}", err=True)


# --- produce / consume -----------------------------------------------------------------------
@cli.command()
def produce(
    topic: str,
    key_separator: Annotated[
        str | None,
        typer.Option(help="Split each line at its first SEP into key and value", metavar="SEP"),
    ] = None,
    partition: Annotated[int | None, typer.Option(help="Partition of every record")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Values are text, not JSON")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Most lines per request")] = 1000,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Produce stdin's lines, one record each (a JSON value, or text with --raw). Lines are
    sent in batches, each appended whole or not at all; empty lines are skipped."""
    progress = sys.stderr.isatty()
    started = time.monotonic()

    def show_progress(total: int) -> None:
        if progress:
            typer.echo(f"\r{total:,} records", err=True, nl=False)

    with _client(url, token) as client:
        producer = LineProducer(client, topic, raw, key_separator, partition)
        try:
            producer.send(sys.stdin, batch_size, show_progress)
        except (LineError, BatchFailed) as exc:
            if progress:
                typer.echo("", err=True)
            _produce_summary(topic, producer.partitions, started)
            _fail(str(exc))
    if progress:
        typer.echo("", err=True)
    _produce_summary(topic, producer.partitions, started)


def _produce_summary(topic: str, partitions: Counter[int], started: float) -> None:
    seconds = time.monotonic() - started
    spread = ", ".join(f"{p}: {n:,}" for p, n in sorted(partitions.items()))
    where = f" (partition {spread})" if spread else ""
    total = partitions.total()
    noun = "record" if total == 1 else "records"
    typer.echo(f"produced {total:,} {noun} to {topic}{where} in {seconds:.2f} s", err=True)


@cli.command()
def consume(
    topic: str,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="earliest or latest: where partitions with no other position start "
            "[server default: latest]",
            show_default=False,
        ),
    ] = None,
    offsets: Annotated[
        str | None, typer.Option(help="Start positions, partition:offset,... (e.g. 0:5,1:7)")
    ] = None,
    keys: Annotated[str | None, typer.Option(help="Only these keys, comma-separated")] = None,
    partitions: Annotated[
        str | None, typer.Option(help="Only these partitions, comma-separated")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(help="Consume as a member of this group (commits what it printed)"),
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Exit after N records")] = None,
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            help="json: one JSON record per line; value: only the value (text as is)",
        ),
    ] = OutputFormat.json,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Print a topic's records as they arrive, one per line (over a WebSocket). After a
    dropped connection or a server restart it reconnects and resumes where it was."""
    options: dict[str, Any] = {"start": start, "group": group}
    if offsets is not None:
        options["offsets"] = _partition_offsets(offsets)
    if keys is not None:
        options["keys"] = keys.split(",")
    if partitions is not None:
        options["partitions"] = _partition_list(partitions)
    # SIGTERM like Ctrl-C: commit what was printed, then exit (the handler is put back after,
    # for callers that run the command in their own process).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _consume(url, token, topic, options, count, output)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _partition_offsets(text: str) -> dict[int, int]:
    try:
        pairs = (item.split(":") for item in text.split(","))
        return {int(p): int(o) for p, o in pairs}
    except ValueError:
        _fail(f"--offsets takes partition:offset,... (e.g. 0:5,1:7), not {text!r}", 2)


def _partition_list(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        _fail(f"--partitions takes partition numbers, comma-separated, not {text!r}", 2)


class _Printed:
    """A group member's printed records: their next offsets are committed every
    COMMIT_INTERVAL and on the way out, so what was not printed is delivered again."""

    def __init__(self, subscription: SyncSubscription) -> None:
        self.subscription = subscription
        self.done: dict[int, int] = {}  # partition -> next offset, printed, not committed
        self.warnings: list[str] = []

    def commit(self, timeout: float | None = None) -> None:
        owned = set(self.subscription.assignment)
        offsets = {p: o for p, o in self.done.items() if p in owned}
        self.done = {}  # given away in a rebalance: their new owner reads them again
        if not offsets:
            return
        try:
            self.subscription.commit(offsets, timeout=timeout)
        except Conflict as exc:  # not_assigned: lost in a rebalance meanwhile
            self.warnings.append(exc.message)
        except ConnectionLost as exc:  # reconnecting: the group's next reader prints them again
            self.warnings.append(f"not committed: {exc.message}")
        except TimeoutError:
            raise ClientError("timeout", "the server did not confirm the last commit") from None


def _consume(
    url: str,
    token: str | None,
    topic: str,
    options: dict[str, Any],
    count: int | None,
    output: OutputFormat,
) -> None:
    received = 0
    group = options["group"] is not None
    with _client(url, token) as client:
        # A server that cannot be reached at first is an error; one lost later is waited for.
        subscription = client.subscribe(topic, retry_first_connect=False, **options)
        printed = _Printed(subscription)
        try:
            try:
                next_commit = time.monotonic() + COMMIT_INTERVAL
                while received != count:
                    wait = max(0.0, next_commit - time.monotonic()) if group else None
                    record = subscription.get(wait)
                    if record is not None:
                        sys.stdout.write(record_output(record.to_json(), output.value) + "\n")
                        sys.stdout.flush()
                        received += 1
                        printed.done[record.partition] = record.offset + 1
                    if group and time.monotonic() >= next_commit:
                        printed.commit(COMMIT_WAIT)
                        next_commit = time.monotonic() + COMMIT_INTERVAL
            finally:
                if group and subscription.error is None:  # else the server's error is the news
                    printed.commit(COMMIT_WAIT)
        except BrokenPipeError:  # `eddy consume t | head`: the reader is gone, so is the need
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        except ClientError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            pass  # Ctrl-C ends a consumer; what it printed was committed on the way out
        finally:
            subscription.close()
        for warning in printed.warnings:
            typer.echo(f"eddy: {warning}", err=True)


# --- groups ----------------------------------------------------------------------------------
@groups_cli.command("list")
def groups_list(url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print the groups' names, one per line."""
    with _client(url, token) as client:
        for group in _call(client.list_groups):
            typer.echo(group["group"])


@groups_cli.command("describe")
def groups_describe(group: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print a group's members and, per partition, its committed offset and lag."""
    with _client(url, token) as client:
        _print_json(_call(client.describe_group, group))


@groups_cli.command("reset")
def groups_reset(
    group: str,
    topic: Annotated[str, typer.Option(help="Topic whose offsets to reset")],
    to: Annotated[
        str, typer.Option(help="earliest, latest, or a timestamp (ms since epoch)", metavar="TO")
    ],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Move a group's committed offsets on a topic (the group must have no members)."""
    target: str | int = to
    if to not in ("earliest", "latest"):
        try:
            target = int(to)
        except ValueError:
            _fail(f"--to takes earliest, latest or a timestamp in ms, not {to!r}", 2)
    with _client(url, token) as client:
        _print_json(_call(client.reset_group, group, topic, target))


@groups_cli.command("delete")
def groups_delete(group: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Forget a group's committed offsets (it must have no members)."""
    with _client(url, token) as client:
        _call(client.delete_group, group)
    typer.echo(f"deleted group {group}", err=True)


def _client(url: str, token: str | None) -> Client:
    return Client(url, token=token)


def _call(method: Any, *args: Any) -> Any:
    """A client call whose ClientError becomes the command's message and exit status 1."""
    try:
        return method(*args)
    except ClientError as exc:
        _fail(str(exc))


def main() -> None:
    cli(sys.argv[1:], prog_name="eddy")

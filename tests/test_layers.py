"""The transports (everything under routers/) call the broker's services and never reach into
its engine, access policy, group coordinator, fan-out hub or metrics: the rules each transport
would otherwise keep a copy of live in one place. Checked on the source's syntax tree, for what
the import contracts in pyproject.toml (`lint-imports`, run by scripts/check) cannot see:
attribute reaches such as `broker.engine`, and internal classes named from a module whose
vocabulary a transport may import (`AccessPolicy` beside `Principal`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROUTERS = Path(__file__).resolve().parent.parent / "routers"
# The broker's internals: what its services are built on.
INTERNALS = {
    "engine",
    "access",
    "groups",
    "metrics",
    "hub",
    "producer",
    "fetcher",
    "cleaner",
    "rate_limiter",
}
# Classes of those internals, which a transport has no business holding.
INTERNAL_CLASSES = {
    "AccessPolicy",
    "GroupCoordinator",
    "FanoutHub",
    "Metrics",
    "Engine",
    "SQLiteEngine",
    "KafkaEngine",
    "Producer",
    "Fetcher",
}
SOURCES = sorted(ROUTERS.rglob("*.py"))


def names_the_broker(node: ast.expr) -> bool:
    """`broker`, `self._broker`, `session.broker`, ...: an expression that is the broker."""
    if isinstance(node, ast.Name):
        return node.id in ("broker", "_broker")
    return isinstance(node, ast.Attribute) and node.attr in ("broker", "_broker")


def reaches(source: str) -> list[str]:
    """Where the code reaches past the broker's services (line: what)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in INTERNALS
            and names_the_broker(node.value)
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in INTERNAL_CLASSES:
                    found.append(f"{node.lineno}: imports {alias.name} from {node.module}")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    sample = (
        "from eddy.storage import SQLiteEngine\n"
        "def f(session, broker):\n"
        "    session.broker.engine.read()\n"
        "    broker.access.require()\n"
        "    self._broker.groups.has_members('g')\n"
        "    broker.metrics.records_out.inc()\n"
        "    self.groups.join()  # the listener's own coordinator, not the broker's\n"
        "    broker.authorize()\n"
    )
    assert [line.split(":")[0] for line in reaches(sample)] == ["1", "3", "4", "5", "6"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROUTERS)))
def test_transports_call_only_the_broker_services(path: Path) -> None:
    assert not reaches(path.read_text()), f"{path.name} reaches into the broker"


def test_every_transport_is_scanned() -> None:
    scanned = {str(p.relative_to(ROUTERS)) for p in SOURCES}
    assert {"records.py", "sse.py", "ws/session.py", "kafka/data.py", "kafka/groups.py"} <= scanned


BROKER = ROUTERS.parent / "broker"
ENGINES = {"SQLiteEngine", "KafkaEngine"}


@pytest.mark.parametrize("path", sorted(BROKER.rglob("*.py")), ids=lambda p: p.name)
def test_the_broker_knows_only_the_engine_interface(path: Path) -> None:
    """The broker talks to storage through `storage.Engine` alone; which engine runs is the
    app's choice (app/factory.py), and what differs between them is the interface's to say."""
    named = [
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.ImportFrom) and any(a.name in ENGINES for a in node.names))
        or (isinstance(node, ast.Name) and node.id in ENGINES)
    ]
    assert not named, f"{path.name} names a storage engine: {named}"

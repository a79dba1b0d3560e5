"""Fan-out against its peers, in one command: Eddy beside nchan (nginx's pub/sub module, C) and
the Python limit (one pre-built frame written to every transport), all measured in one run by
the shared harness (compiled epoll subscriber clients, so the load generator is not the limit).

    .venv/bin/python -m bench.fanout_peers             # full run, about 20 minutes
    .venv/bin/python -m bench.fanout_peers --quick     # one round, shorter phases, ~8 minutes

It installs the harness (`$EDDY_BENCH_SRC/install.sh`, default /work/shared/bench, into
`--harness`, default /tmp/eddy-bench) unless it is there, then runs:

1. fan-out: N subscribers x R records/s for 1000@50, 5000@10, 10000@5 and 1000@200, targets
   alternating every round (`interleave-eddy.sh`), publish-to-receive p50/p99, delivered/s, lost,
   server and client CPU;
2. 10,000 idle WebSockets per target: RSS per connection, idle server CPU, connect time;
3. produce latency (HTTP POST round trip of the paced publisher) with 1 subscriber and with
   1,000 subscribers at 50 records/s.

and prints one markdown table with Eddy's ratio to each peer for the targets of issue 9.
Figures are comparable only within one run; it prints the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOADS = "1000@50,5000@10,10000@5,1000@200"
PEERS = {
    "nchan": {
        "adapter": "nchan",
        "pub": "http://127.0.0.1:18080/pub/{topic}",
        "sub": "ws://127.0.0.1:18080/sub/{topic}",
        "port": "18080",
        "restart": "peers/nchan/stop.sh >/dev/null 2>&1; peers/nchan/start.sh >/dev/null 2>&1",
        "stop": "peers/nchan/stop.sh",
    },
    "rawframe": {
        "adapter": "ceiling",
        "pub": "http://127.0.0.1:18091/pub/{topic}",
        "sub": "ws://127.0.0.1:18090/sub/{topic}",
        "port": "18090",
        "restart": "ceilings/ws_server_stop.sh >/dev/null 2>&1; "
        "WSC_MODE=rawframe ceilings/ws_server_start.sh >/dev/null 2>&1",
        "stop": "ceilings/ws_server_stop.sh",
    },
    "eddy": {
        "adapter": "eddy",
        "pub": "http://127.0.0.1:18095/v1/topics/{topic}/records",
        "sub": "ws://127.0.0.1:18095/v1/topics/{topic}/ws?from=latest",
        "port": "18095",
        "restart": "peers/eddy/stop.sh >/dev/null 2>&1; peers/eddy/start.sh >/dev/null 2>&1",
        "stop": "peers/eddy/stop.sh",
    },
}
LABELS = {"nchan": "nchan", "rawframe": "py-websockets-rawframe", "eddy": "eddy"}


def log(message: str) -> None:
    print(f"[fanout_peers] {message}", file=sys.stderr, flush=True)


def sh(command: list[str] | str, harness: Path, env: dict[str, str], **kw: Any) -> str:
    result = subprocess.run(
        command,
        cwd=harness,
        env=env,
        shell=isinstance(command, str),
        check=True,
        text=True,
        stdout=subprocess.PIPE,
        **kw,
    )
    return str(result.stdout)


def install(harness: Path) -> None:
    if (harness / "loadgen" / "wsub").exists():
        return
    source = Path(os.environ.get("EDDY_BENCH_SRC", "/work/shared/bench"))
    log(f"installing the harness from {source} into {harness}")
    subprocess.run([str(source / "install.sh"), str(harness)], check=True)


def load_runs(path: Path) -> dict[tuple[str, int, float], list[dict[str, Any]]]:
    rows: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for file in sorted(path.glob("*.json")):
        doc = json.loads(file.read_text())
        for result in doc["results"]:
            for run in result["runs"]:
                key = (
                    doc["label"],
                    int(result.get("n", result.get("k", 0))),
                    result.get("rate", 0),
                )
                rows.setdefault(key, []).append(run)
    return rows


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def run_fanout(harness: Path, env: dict[str, str], out: Path, rounds: int, duration: int) -> None:
    log(f"fan-out {LOADS}, {rounds} round(s) of {duration} s, targets alternating")
    run_env = {
        **env,
        "OUT": str(out),
        "SUBS": LOADS,
        "ROUNDS": str(rounds),
        "DURATION": str(duration),
        "TARGETS": "nchan rawframe eddy",
    }
    subprocess.run(["./interleave-eddy.sh"], cwd=harness, env=run_env, check=True)


# Eddy pings every silent WebSocket (after 20 s by default, to notice vanished consumers); the
# idle rows also show the old 5 s interval, where pings were most of the idle CPU.
FAST_PINGS = "--ws-ping-interval 5 --ws-ping-timeout 5"
IDLE_HOLD = 25  # seconds held open after connecting: more than the default 20 s ping interval


def run_idle(harness: Path, env: dict[str, str], out: Path, conns: int, hold: int) -> None:
    targets = [(name, name, env) for name in PEERS]
    targets.append(("eddy", "eddy-ping5", {**env, "EDDY_ARGS": FAST_PINGS}))
    for name, label, target_env in targets:
        peer = PEERS[name]
        log(f"{conns} idle WebSockets: {label}")
        sh(
            [
                ".venv/bin/python", "-m", "loadgen", "idle", "--label", label,
                "--adapter", peer["adapter"], "--sub-url", peer["sub"],
                "--server-port", peer["port"], "--before-each", peer["restart"],
                "--conns", str(conns), "--hold", str(hold), "--runs", "1",
                "--out", str(out / f"idle-{label}.json"),
            ],
            harness,
            target_env,
        )  # fmt: skip
        subprocess.run(peer["stop"], cwd=harness, env=env, shell=True, check=False)


def run_produce(harness: Path, env: dict[str, str], out: Path, duration: int) -> None:
    peer = PEERS["eddy"]
    for subs in (1, 1000):
        log(f"produce latency with {subs} subscriber(s) at 50 records/s")
        sh(
            [
                ".venv/bin/python", "-m", "loadgen", "fanout", "--label", f"eddy-{subs}",
                "--adapter", "eddy", "--pub-url", peer["pub"], "--sub-url", peer["sub"],
                "--server-port", peer["port"], "--before-each", peer["restart"],
                "--subs", f"{subs}@50", "--duration", str(duration), "--runs", "1",
                "--out", str(out / f"produce-{subs}.json"),
            ],
            harness,
            env,
        )  # fmt: skip
    subprocess.run(peer["stop"], cwd=harness, env=env, shell=True, check=False)


def report(out: Path, loads_before: str, loads_after: str) -> str:
    fan = load_runs(out / "fanout")
    lines = [
        "| load | nchan p50 / p99 ms | Python pre-built frame p50 / p99 ms | Eddy p50 / p99 ms "
        "| Eddy p99 / nchan p99 | delivered/s nchan / Python / Eddy | Eddy / Python delivered "
        "| server CPU % nchan / Python / Eddy | client CPU % (Eddy run) | Eddy published/s "
        "| lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load in LOADS.split(","):
        n, rate = load.split("@")
        key = (int(n), float(rate))
        runs = {name: fan.get((LABELS[name], *key), []) for name in PEERS}
        p50 = {name: median(r, "lat_p50_ms") for name, r in runs.items()}
        p99 = {name: median(r, "lat_p99_ms") for name, r in runs.items()}
        delivered = {name: median(r, "delivered_per_s") for name, r in runs.items()}
        cpu = {name: median(r, "server_cpu_pct") for name, r in runs.items()}
        lost = sum(r.get("lost", 0) for r in runs["eddy"])
        lines.append(
            f"| {int(n):,} x {rate}/s "
            f"| {fmt(p50['nchan'])} / {fmt(p99['nchan'])} "
            f"| {fmt(p50['rawframe'])} / {fmt(p99['rawframe'])} "
            f"| {fmt(p50['eddy'])} / {fmt(p99['eddy'])} | {ratio(p99['eddy'], p99['nchan'])} "
            f"| {fmt(delivered['nchan'], 0)} / {fmt(delivered['rawframe'], 0)} / "
            f"{fmt(delivered['eddy'], 0)} | {ratio(delivered['eddy'], delivered['rawframe'])} "
            f"| {fmt(cpu['nchan'], 0)} / {fmt(cpu['rawframe'], 0)} / {fmt(cpu['eddy'], 0)} "
            f"| {fmt(median(runs['eddy'], 'client_cpu_pct'), 0)} "
            f"| {fmt(median(runs['eddy'], 'publish_rate_achieved'))} of {rate} | {lost} |"
        )
    idle: dict[str, dict[str, float | None]] = {}
    for name in [*PEERS, "eddy-ping5"]:
        path = out / f"idle-{name}.json"
        if path.exists():
            runs = json.loads(path.read_text())["results"][0]["runs"]
            idle[name] = {
                k: median(runs, k) for k in runs[0] if isinstance(runs[0][k], int | float)
            }
    if idle:
        lines += [
            "",
            "| 10,000 idle WebSockets | nchan | Python pre-built frame | Eddy | Eddy / nchan "
            "| Eddy, pings after 5 s |",
            "|---|---|---|---|---|---|",
        ]
        for metric, what in (
            ("rss_per_conn_kb", "RSS per connection, KB"),
            ("idle_server_cpu_pct", "idle server CPU, % of a core"),
            ("connect_s", "time to connect all, s"),
            ("open", "connections open"),
        ):
            values = {name: idle.get(name, {}).get(metric) for name in [*PEERS, "eddy-ping5"]}
            lines.append(
                f"| {what} | {fmt(values['nchan'], 2)} | {fmt(values['rawframe'], 2)} "
                f"| {fmt(values['eddy'], 2)} | {ratio(values['eddy'], values['nchan'])} "
                f"| {fmt(values['eddy-ping5'], 2)} |"
            )
    produce = {}
    for subs in (1, 1000):
        path = out / f"produce-{subs}.json"
        if path.exists():
            produce[subs] = json.loads(path.read_text())["results"][0]["runs"][0]
    if produce:
        lines += [
            "",
            "| Eddy produce (HTTP POST, 50/s) | p50 ms | p99 ms |",
            "|---|---|---|",
        ]
        for subs, run in produce.items():
            lines.append(
                f"| with {subs:,} subscriber(s) | {fmt(run.get('publish_http_p50_ms'), 2)} "
                f"| {fmt(run.get('publish_http_p99_ms'), 2)} |"
            )
        if len(produce) == 2:
            loaded, quiet = (produce[n].get("publish_http_p99_ms") for n in (1000, 1))
            lines.append(f"| p99 ratio (1,000 / 1) | | {ratio(loaded, quiet)} |")
    lines += ["", f"Load average before: {loads_before}; after: {loads_after}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, 5 s phases")
    parser.add_argument("--harness", type=Path, default=Path("/tmp/eddy-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fanout-peers")
    parser.add_argument("--checkout", type=Path, default=REPO, help="the Eddy checkout to run")
    parser.add_argument("--only", choices=["fanout", "idle", "produce"], action="append")
    parser.add_argument("--report", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    rounds, duration = (1, 5) if args.quick else (2, 10)
    out: Path = args.out.resolve()
    if not args.report:
        install(args.harness)
        env = {
            **os.environ,
            "EDDY_CHECKOUT": str(args.checkout.resolve()),
            "EDDY_PYTHON": os.environ.get("EDDY_PYTHON", sys.executable),
        }
        loads_before = os.getloadavg()
        out.mkdir(parents=True, exist_ok=True)
        sections = args.only or ["fanout", "idle", "produce"]
        if "fanout" in sections:
            run_fanout(args.harness, env, out / "fanout", rounds, duration)
        if "idle" in sections:
            # Held longer than the ping interval, so the idle CPU includes Eddy's keepalive.
            run_idle(args.harness, env, out, 10_000, IDLE_HOLD)
        if "produce" in sections:
            run_produce(args.harness, env, out, duration)
        before = ", ".join(f"{x:.2f}" for x in loads_before)
        (out / "load.txt").write_text(before)
    before = (out / "load.txt").read_text() if (out / "load.txt").exists() else "n/a"
    table = report(out, before, ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

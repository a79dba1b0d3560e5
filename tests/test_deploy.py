"""The operations assets in deploy/, checked by the tools that run them and against a real
server:

- the Grafana dashboard names only metrics (and labels) that a real server's /metrics exports
  after real traffic, its queries are valid PromQL (promtool checks them as recording rules),
  and its panels, variables and layout hold together;
- the Prometheus alerting rules pass `promtool check rules`, their unit tests pass `promtool
  test rules`, every alert has a test, and they too name only exported metrics;
- the systemd unit passes `systemd-analyze verify`, runs as its own user with its state
  directory as the data dir, and sets only real settings.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from eddy.app.settings import Settings
from tests.conftest import REPO, RunningServer, serve_in_thread, wait_until

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "eddy-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "eddy-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "eddy-alerts.test.yml"
UNIT = DEPLOY / "systemd" / "eddy.service"
SYSUSERS = DEPLOY / "systemd" / "eddy.sysusers.conf"

# Series Prometheus makes itself, and the labels it adds to every scraped series.
FROM_PROMETHEUS = {"up"}
TARGET_LABELS = {"instance", "job"}
METRIC = re.compile(r"\b((?:eddy|process|python)_[a-zA-Z0-9_]+|up)\b(\{[^}]*\})?")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
KEY = "deploy-test-key"
AUTH = f"""
[[principals]]
name = "ops"
key_sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"

[anonymous]
read = ["*"]
write = ["*"]
admin = ["*"]
groups = ["*"]
"""


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # a failure, not a skip: CI installs it
        pytest.fail(f"{name} is missing: run `bash .ci/install-debian-packages.sh`")
    return path


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"].removeprefix("label_values(").rsplit(",", 1)[0])
    return queries


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def as_promql(query: str) -> str:
    """A Grafana query as plain PromQL: its variables replaced by what they may stand for."""
    return (
        query.replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
        .replace("$topic", ".*")
    )


@pytest.fixture(scope="module", name="exported")
def exported_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str] | None]:
    """Every sample name a real server's /metrics has after traffic of every kind (produce,
    fetch, subscribe, publish, a group member's commit, retention, refusals), with the label
    names its samples carry (None for a family declared with no sample yet)."""
    tmp = tmp_path_factory.mktemp("deploy")
    auth = tmp / "auth.toml"
    auth.write_text(AUTH)
    with serve_in_thread(tmp / "data", auth_file=auth, retention_check_interval=0.1) as server:
        traffic(server)
        text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    names: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(text):
        if not family.samples:  # declared, no series yet: the names its type gives
            suffixes = {
                "counter": ["_total", "_created"],
                "histogram": ["_bucket", "_sum", "_count", "_created"],
                "gauge": [""],
                "info": ["_info"],
            }[family.type]
            for suffix in suffixes:
                names.setdefault(family.name + suffix, None)
        for sample in family.samples:
            labels = names.get(sample.name) or set()
            names[sample.name] = labels | set(sample.labels)
    return names


def traffic(server: RunningServer) -> None:
    with server.client() as c:
        assert c.post("/v1/topics", json={"name": "orders", "partitions": 2}).status_code == 201
        records = [{"key": f"customer-{i}", "value": {"id": i}} for i in range(20)]
        assert c.post("/v1/topics/orders/records", json={"records": records}).status_code == 200
        assert c.get("/v1/topics/orders/partitions/0/records").status_code == 200
        assert c.get("/v1/topics/absent/partitions/0/records").status_code == 404
        bad = c.get("/v1/topics", headers={"Authorization": "Bearer not-a-key"})
        assert bad.status_code == 401
        old = {"name": "old", "config": {"retention.ms": 1}}
        assert c.post("/v1/topics", json=old).status_code == 201
        assert c.post("/v1/topics/old/records", json={"value": 1}).status_code == 200
    with (
        connect(f"{server.ws_url}/v1/topics/orders/ws?from=earliest") as subscriber,
        connect(f"{server.ws_url}/v1/topics/orders/ws?group=mailer&from=earliest") as member,
        connect(f"{server.ws_url}/v1/topics/orders/publish") as publisher,
    ):
        assert json.loads(subscriber.recv(timeout=10))["type"] == "subscribed"
        assert json.loads(subscriber.recv(timeout=10))["type"] == "record"
        assert json.loads(member.recv(timeout=10))["type"] == "assignment"
        record = json.loads(member.recv(timeout=10))
        assert record["type"] == "record"
        commit = {"type": "commit", "offsets": {str(record["partition"]): record["offset"] + 1}}
        member.send(json.dumps(commit))
        while (frame := json.loads(member.recv(timeout=10)))["type"] != "committed":
            assert frame["type"] == "record", frame
        publisher.send(json.dumps({"id": 1, "key": "customer-1", "value": {"id": 1}}))
        assert json.loads(publisher.recv(timeout=10))["type"] == "ack"

        def removed() -> bool:
            text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
            return 'eddy_records_removed_total{reason="retention",topic="old"}' in text

        wait_until(removed)


def check_names(query: str, exported: dict[str, set[str] | None]) -> list[str]:
    """What `query` names that the server does not export: metrics, and labels (in matchers
    and in by/without) that none of its metrics carries."""
    problems = []
    carried: set[str] = set(TARGET_LABELS) | {"__name__"}
    known_labels = True
    for name, selector in METRIC.findall(query):
        if name in FROM_PROMETHEUS:
            continue
        if name not in exported:
            problems.append(f"metric {name}")
            continue
        labels = exported[name]
        if labels is None:
            known_labels = False
            continue
        carried |= labels
        for label in MATCHER.findall(selector or ""):
            if label not in labels | TARGET_LABELS:
                problems.append(f"label {label} of {name}")
    if known_labels:
        for group in BY.findall(query):
            for label in (part.strip() for part in group.split(",")):
                if label and label not in carried:
                    problems.append(f"label {label} in by/without")
    return problems


def test_the_dashboard_names_only_metrics_a_real_server_exports(
    exported: dict[str, set[str] | None],
) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 25
    named = {name for query in queries for name, _ in METRIC.findall(query)}
    # The dashboard covers the families the operations page documents.
    for family in (
        "eddy_records_in_total",
        "eddy_group_lag",
        "eddy_storage_commit_seconds_bucket",
        "eddy_http_request_duration_seconds_bucket",
        "eddy_websockets_open",
    ):
        assert family in named, family
    problems = {query: check_names(query, exported) for query in queries}
    assert {query: found for query, found in problems.items() if found} == {}


def test_the_alerts_name_only_metrics_a_real_server_exports(
    exported: dict[str, set[str] | None],
) -> None:
    problems = {rule["alert"]: check_names(rule["expr"], exported) for rule in alert_rules()}
    assert {alert: found for alert, found in problems.items() if found} == {}


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query (as a recording rule: it has no other way to check one)."""
    rules = [
        {"record": f"eddy_dashboard:query_{i}", "expr": as_promql(query)}
        for i, query in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_the_dashboard_s_panels_variables_and_layout_hold_together() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance", "topic"}
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range"}
            assert used <= variables, (panel["title"], used)


def test_promtool_checks_the_alerting_rules() -> None:
    checked = subprocess.run(
        [tool("promtool"), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_the_alerts_unit_tests_pass_and_cover_every_alert() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]  # a test that expects it to fire, not only silence
    }
    assert {rule["alert"] for rule in alert_rules()} == tested
    result = subprocess.run(
        [tool("promtool"), "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def unit_settings() -> dict[str, str]:
    """The unit's [Service] key=value lines (Environment= collected as EDDY_* variables)."""
    service: dict[str, str] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            if key == "Environment":
                name, _, setting = value.partition("=")
                service[name] = setting
            else:
                service[key] = value
    return service


def test_the_unit_runs_as_its_own_user_with_its_state_directory_as_the_data_dir() -> None:
    service = unit_settings()
    assert service["User"] == service["Group"] == "eddy"
    assert service["StateDirectory"] == "eddy"
    assert service["EDDY_DATA_DIR"] == "/var/lib/eddy" == service["WorkingDirectory"]
    assert service["ExecStart"].endswith("/eddy serve")
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert int(service["LimitNOFILE"]) > Settings.model_fields["max_websockets"].default
    assert service["KillSignal"] == "SIGTERM"  # the graceful stop
    # The user it names is the one the sysusers file makes, with that home.
    users = [line.split() for line in SYSUSERS.read_text().splitlines() if line.startswith("u ")]
    assert [(u[1], u[-1]) for u in users] == [("eddy", "/var/lib/eddy")]
    # Every EDDY_* variable it sets is a setting, with a valid value.
    variables = {k: v for k, v in service.items() if k.startswith("EDDY_")}
    assert variables
    fields = {f"EDDY_{name.upper()}" for name in Settings.model_fields}
    assert set(variables) <= fields
    settings = Settings.model_validate(
        {k.removeprefix("EDDY_").lower(): v for k, v in variables.items()}
    )
    assert str(settings.data_dir) == "/var/lib/eddy"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """verify checks every directive and that ExecStart exists, so the copy checked runs this
    checkout's `eddy` instead of /opt/eddy's."""
    eddy = shutil.which("eddy", path=str(Path(REPO / ".venv" / "bin"))) or shutil.which("eddy")
    assert eddy, "the eddy command is not installed"
    unit = tmp_path / "eddy.service"
    unit.write_text(
        UNIT.read_text().replace("ExecStart=/opt/eddy/bin/eddy serve", f"ExecStart={eddy} serve")
    )
    assert unit.read_text() != UNIT.read_text()
    verified = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys too (it only warns): no output at all is the pass.
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout + verified.stderr == ""

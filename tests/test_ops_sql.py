"""Every SQL statement a Grafana panel or a dbt model holds, run on chDB against real shipped data.

One database per module holds the 2023 eco2mix history (as upsert-version writes it), RTE's own
published forecasts as forecast runs, a real dead-letter record, a few stage runs and what the
detect stage computes from all that. Grafana macros are expanded the way the ClickHouse plugin
expands them; dbt models are compiled by dbt (no server needed) and created as views.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from shared.settings import Settings
from shared.store import Store
from tests.fixtures_ops import (
    load_measurements,
    load_pipeline_runs,
    load_rejected_record,
    load_rte_forecasts,
)

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((REPO / "observability" / "grafana" / "dashboards").glob("*.json"))
DBT_DIR = REPO / "dbt"
DBT = REPO / ".venv-dbt" / "bin" / "dbt"
DBT_INSTALL = "python3 -m venv .venv-dbt && .venv-dbt/bin/pip install -r dbt/requirements.txt"
DBT_DB = "psdbt"  # database name dbt compiles into the SQL; replaced by the test database

# The dashboards are looked at over five weeks of autumn 2023: the fall-back day (2023-10-29) and
# the day missing from the source (2023-10-14) are inside.
WINDOW = (datetime(2023, 10, 1, tzinfo=UTC), datetime(2023, 11, 5, tzinfo=UTC))
STAGES = ("poll", "upsert-version", "featurize", "forecast", "detect")
DETECT_ERRORS: list[str] = []


@pytest.fixture(scope="module")
def ops_store() -> Iterator[Store]:
    """A database with real data in every table the dashboards and dbt models read."""
    from shared import clock

    settings = Settings(clickhouse_database=f"ops_{uuid.uuid4().hex[:10]}")
    store = Store(settings)
    store.apply_schema()
    load_measurements(store, "2023-01-01", "2024-01-01")
    load_rte_forecasts(store, "2023-01-01", "2024-01-01")
    load_rejected_record(store, datetime(2023, 10, 10, 12, tzinfo=UTC))
    load_pipeline_runs(store, WINDOW[0])
    # realised national temperature (the shipped Enedis series) for the temperature panel
    from shared.weather.service import backfill

    backfill(store, settings, datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    # featurize's own code writes the gated grids (the gate's verdicts for the data-quality dashboard)
    from shared.features import featurize

    featurize(store, settings, WINDOW[1])
    # the detect stage's own code fills anomalies, data_quality and model_metrics, "now" being the
    # end of the window; a failure there is reported by one test, not by every panel's
    from shared.runs import stage_run

    clock.install(clock.SimulatedClock(WINDOW[1], speed=0.0))
    try:
        from shared.detection.service import run_detect

        with stage_run(store, "detect", trigger="http") as run:
            run_detect(store, settings, run, start=WINDOW[0], end=WINDOW[1])
    except Exception as exc:
        DETECT_ERRORS.append(f"{type(exc).__name__}: {exc}")
    finally:
        clock.install(None)
    yield store
    store.command(f"drop database if exists {settings.clickhouse_database}")


def test_detect_stage_fills_the_tables_the_dashboards_read(ops_store: Store) -> None:
    assert not DETECT_ERRORS
    assert {"anomalies", "data_quality"} <= tables_with_rows(ops_store)


def tables_with_rows(store: Store) -> set[str]:
    """Tables of the test database that hold at least one row."""
    rows = store.query_rows("select name, total_rows from system.tables where database = {db:String}")
    names = {str(name) for name, n in rows if n}
    if "measurements" in names:  # the view of "the series" (ch/init/007.series.sql) reads measurements
        names.add("series")
    return names


# --- Grafana -------------------------------------------------------------------------------------------


def _panel_queries() -> list[Any]:
    params = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                if "rawSql" in target:
                    params.append(pytest.param(dash["uid"], panel["title"], target,
                                               id=f"{path.stem}:{panel['title']}:{target['refId']}"))
    return params


def grafana_sql(sql: str, start: datetime, end: datetime, interval_s: int = 3600) -> str:
    """Expand the ClickHouse plugin's macros and this project's variables as Grafana would."""
    frm, to = int(start.timestamp()), int(end.timestamp())
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)",
                 lambda m: f"{m[1]} >= toDateTime({frm}) AND {m[1]} <= toDateTime({to})", sql)
    sql = re.sub(r"\$__timeInterval\(([^)]+)\)",
                 lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {interval_s} second)", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    sql = sql.replace("$__interval_s", str(interval_s))
    # ${db} is a constant variable ("electricity"); here the Store binds the test database
    sql = sql.replace("${db}", "{db:Identifier}").replace("${horizon_day}", "1")
    sql = sql.replace("${source}", "eco2mix_national").replace("${metric}", "consommation")
    sql = sql.replace("${function:singlequote}", ", ".join(f"'{s}'" for s in STAGES))
    assert "$" not in sql, f"unexpanded macro or variable: {sql}"
    return sql


def window_of(uid: str) -> tuple[datetime, datetime]:
    """Pipeline runs are recorded at wall-clock time; everything else lives in autumn 2023."""
    if uid == "powersense-pipeline-health":
        now = datetime.now(UTC)
        return now - timedelta(days=1), now + timedelta(hours=1)
    return WINDOW


@pytest.mark.parametrize(("uid", "title", "target"), _panel_queries())
def test_panel_sql_runs_on_real_data(ops_store: Store, uid: str, title: str, target: dict[str, Any]) -> None:
    sql = grafana_sql(target["rawSql"], *window_of(uid))
    read = set(re.findall(r"\{db:Identifier\}\.(\w+)", sql))
    missing = read - {str(r[0]) for r in ops_store.query_rows(
        "select name from system.tables where database = {db:String}")}
    if missing:
        pytest.skip(f"table(s) {sorted(missing)} not in ch/init yet")
    df = ops_store.query_df(sql)
    if read <= tables_with_rows(ops_store):
        assert len(df) > 0, f"{title}: no rows although {sorted(read)} hold data"
    if target["format"] == 0 and len(df):
        assert df.columns[0] == "time" and pd.api.types.is_datetime64_any_dtype(df["time"])
        assert df["time"].is_monotonic_increasing, "Grafana needs time-series rows sorted by time"


def _panel(uid: str, title: str) -> dict[str, Any]:
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        if dash["uid"] == uid:
            return next(p for p in dash["panels"] if p["title"] == title)
    raise KeyError(title)


def test_coverage_panel_counts_the_fall_back_day_complete(ops_store: Store) -> None:
    panel = _panel("powersense-data-quality", "Incomplete days")
    df = ops_store.query_df(grafana_sql(panel["targets"][0]["rawSql"], *WINDOW)).set_index("day")
    days = {d.strftime("%Y-%m-%d"): row for d, row in df.iterrows()}
    # the source lacks the first 02:00–03:00 hour of the fall-back night, which is not expected: 48 of 48 half-hours
    # (it listed 2023-10-29 as incomplete, 48 of 50, while poll called the day resolved)
    assert "2023-10-29" not in days
    # local day 2023-10-14 is absent from the source file
    assert (days["2023-10-14"]["expected_slots"], days["2023-10-14"]["observed_slots"]) == (48, 0)


def test_coverage_panels_leave_out_days_the_range_cuts(ops_store: Store) -> None:
    # the window starts at 02:00 Paris on 2023-10-01 and ends at 01:00 on 2023-11-05: both days were listed as
    # incomplete (44 and 3 of 48 half-hours) although every value of them is stored; only the real gap remains
    panel = _panel("powersense-data-quality", "Incomplete days")
    df = ops_store.query_df(grafana_sql(panel["targets"][0]["rawSql"], *WINDOW))
    assert [pd.Timestamp(d).strftime("%Y-%m-%d") for d in df["day"]] == ["2023-10-14"]
    coverage = _panel("powersense-data-quality", "Daily coverage of ${metric} (DST-aware)")
    days = ops_store.query_df(grafana_sql(coverage["targets"][0]["rawSql"], *WINDOW))["time"]
    local = pd.DatetimeIndex(days).tz_localize("UTC").tz_convert("Europe/Paris") if pd.DatetimeIndex(days).tz is None \
        else pd.DatetimeIndex(days).tz_convert("Europe/Paris")
    assert (local.min().strftime("%Y-%m-%d"), local.max().strftime("%Y-%m-%d")) == ("2023-10-02", "2023-11-04")


def test_coverage_panel_expects_the_calendars_steps(ops_store: Store) -> None:
    from shared.calendar import expected_steps

    panel = _panel("powersense-data-quality", "Daily coverage of ${metric} (DST-aware)")
    sql = grafana_sql(panel["targets"][0]["rawSql"], datetime(2022, 3, 20, tzinfo=UTC),
                      datetime(2023, 11, 5, tzinfo=UTC))
    expected = ops_store.query_df(sql.split("select toDateTime(e.day")[0] + "select day, expected_slots from expected")
    days = {pd.Timestamp(d).strftime("%Y-%m-%d"): int(n) for d, n in zip(expected["day"], expected["expected_slots"],
                                                                              strict=True)}
    assert {days["2022-03-27"], days["2022-10-30"], days["2023-03-26"], days["2023-10-29"]} == {46, 48}
    assert all(n == expected_steps(d, 30) for d, n in days.items())


def test_dbt_calendar_expects_the_calendars_steps(ops_store: Store, dbt_views: dict[str, str]) -> None:
    # one definition of a complete day: dim_calendar (dbt's coverage), shared.calendar.expected_steps (poll's gap proof,
    # detect's completeness) and the Grafana panel; the fall-back day expected 100 quarter-hours in dbt and detect
    from shared.calendar import expected_steps
    from shared.settings import Settings

    variables = dbt_vars()
    assert variables["ignore_fallback_gap"] is Settings.model_fields["detect_ignore_fallback_gap"].default
    rows = ops_store.query_rows("select date, expected_quarter_hours, expected_half_hours from "
                                "{db:Identifier}.dim_calendar where toYear(date) between 2021 and 2024")
    assert len(rows) == 1461
    for day, quarter, half in rows:
        assert (quarter, half) == (expected_steps(day, 15), expected_steps(day, 30)), day


def test_forecast_panel_shows_what_the_api_serves(ops_store: Store) -> None:
    # "the forecast for a ts" is the newest run issued at or before it (/forecasts/vs-actual, detect's residuals); the
    # panel took the newest run outright, so RTE's same-day run (issued 06:00) replaced the day-ahead run for the
    # night before its issue
    from shared.query.models import VsActualParams
    from shared.query.service import forecast_vs_actual

    start, end = datetime(2023, 10, 9, tzinfo=UTC), datetime(2023, 10, 12, tzinfo=UTC)
    panel = _panel("powersense-load-forecast", "Load: actual vs latest forecast (prediction interval)")
    df = ops_store.query_df(grafana_sql(panel["targets"][0]["rawSql"], start, end - timedelta(seconds=1)))
    shown = {pd.Timestamp(t).tz_localize("UTC") if pd.Timestamp(t).tzinfo is None else pd.Timestamp(t): v
             for t, v in zip(df["time"], df["forecast_mw"], strict=True) if pd.notna(v)}
    api = forecast_vs_actual(ops_store, VsActualParams(source="eco2mix_national", metric="consommation",
                                                       start=start, end=end))
    served = {pd.Timestamp(p.ts): p.yhat for p in api.points}
    assert len(served) == 144 and shown.keys() == served.keys()
    assert all(abs(shown[t] - served[t]) < 1e-6 for t in served)


# --- the forecast panels read the forecasts by target (ts) and bound issued_at by the longest lead -------------------

LEAD_BOUND = re.compile(r"\n\s*and (?:f\.)?issued_at >= \$__fromTime - interval (\d+) day[^\n]*")


def _forecast_panels() -> list[tuple[str, str]]:
    """(title, rawSql) of every panel that reads the forecasts by target (ts) over the time range."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                sql = target.get("rawSql", "")
                if re.search(r"\.forecasts\b", sql) and re.search(r"\$__timeFilter\((?:f\.)?ts\)", sql):
                    found.append((panel["title"], sql))
    return found


def _largest_horizon() -> int:
    """The largest POWERSENSE_FORECAST_HORIZON_DAYS the settings accept."""
    return int(next(m.le for m in Settings.model_fields["forecast_horizon_days"].metadata if hasattr(m, "le")))


def _longest_lead_run() -> tuple[pd.Timestamp, pd.DatetimeIndex]:
    """(issued_at, targets) of the product's forecast run with the longest lead (last target − issue) among runs
    issued every 30 minutes over the fortnights around 2023's two clock changes, with the largest horizon the
    settings accept (a bound for the default horizon dropped the long-lead rows of a longer one)."""
    from shared.forecasting.service import forecast_targets

    horizon = _largest_horizon()
    resolution = Settings.model_fields["forecast_resolution_min"].default
    step = pd.Timedelta(minutes=resolution)
    runs = []
    for change in ("2023-03-26", "2023-10-29"):
        for issued in pd.date_range(pd.Timestamp(change, tz="UTC") - pd.Timedelta(days=10), periods=14 * 48,
                                    freq=step):
            runs.append((issued, forecast_targets(issued - step, issued, resolution, horizon)))
    return max(runs, key=lambda r: r[1][-1] - r[0])


def test_forecast_panels_bound_issued_at_by_the_longest_lead_the_product_issues() -> None:
    # the bound lets the partitions (months of issued_at) and the key skip older issues (each refresh read every
    # forecast ever issued); it must not be shorter than the lead of any forecast the product issues: to the end of
    # local day D+7, 8 days and 30 minutes at most (a 25-hour fall-back day)
    panels = _forecast_panels()
    assert len(panels) >= 7, [t for t, _ in panels]
    leads = {title: [int(d) for d in LEAD_BOUND.findall(sql)] for title, sql in panels}
    assert all(len(days) == 1 for days in leads.values()), leads
    bound = pd.Timedelta(days=min(d for days in leads.values() for d in days))
    issued, targets = _longest_lead_run()
    assert bound - pd.Timedelta(days=1) < targets[-1] - issued <= bound


def test_forecast_panels_show_a_forecast_issued_at_the_longest_lead(store: Store, settings: Settings) -> None:
    # the range starts at the last target of the product's longest-lead run: every forecast panel shows it exactly as
    # without the bound (a bound a day shorter leaves it out)
    from shared.forecasting.service import forecast_rows

    issued, targets = _longest_lead_run()
    start = targets[-1]
    load_measurements(store, f"{start:%Y-%m-%d}", f"{start + pd.Timedelta(days=2):%Y-%m-%d}")
    fc = pd.DataFrame({"ts": targets, "yhat": 60_000.0, "lower": 57_000.0, "upper": 63_000.0})
    store.insert_df("forecasts", forecast_rows(fc, run_id="longest-lead", model_version="test", issued_at=issued,
                                               settings=settings, quality="model"))
    horizon_day = int(store.scalar("select horizon_day from {db:Identifier}.forecasts "
                                   "where ts = {t:DateTime64(3, 'UTC')}", {"t": start}))
    assert horizon_day == _largest_horizon()
    for title, raw in _forecast_panels():
        raw = raw.replace("${horizon_day}", str(horizon_day))
        window = (start.to_pydatetime(), (start + pd.Timedelta(minutes=15)).to_pydatetime())
        shown = store.query_df(grafana_sql(raw, *window))
        unbounded = store.query_df(grafana_sql(LEAD_BOUND.sub("", raw), *window))
        assert LEAD_BOUND.search(raw) and not LEAD_BOUND.search(LEAD_BOUND.sub("", raw))
        values = unbounded.drop(columns=[c for c in unbounded.columns if c in ("time", "actual_mw")])
        assert values.notna().any().any(), f"{title}: the forecast is not in the panel at all"
        pd.testing.assert_frame_equal(shown, unbounded, obj=title)


def test_gate_panel_shows_the_sources_interpolated_ramps(ops_store: Store) -> None:
    """Real: from 2023-11-01 23:45 local the real-time data is one straight line for 20.5 hours (82 quarter-hours
    between two real values), an interpolated gap; the window holds nine such ramps and nothing else rejected."""
    panel = _panel("powersense-data-quality", "Values the training-data gate rejected per day")
    df = ops_store.query_df(grafana_sql(panel["targets"][0]["rawSql"], *WINDOW))
    assert set(df["reason"]) == {"linear_ramp"}
    t = pd.DatetimeIndex(df["time"])
    day = (t.tz_localize("UTC") if t.tz is None else t).tz_convert("Europe/Paris").strftime("%Y-%m-%d")
    per_day = df.groupby(day)["values"].sum()
    assert (per_day["2023-11-01"], per_day["2023-11-02"]) == (1, 81)  # the ramp from 23:45 local, by Paris days
    rows = ops_store.query_df(
        "select ts from {db:Identifier}.features final where implausible = 1 and resolution_min = "
        "(select min(resolution_min) from {db:Identifier}.features) and ts >= {a:DateTime64(3, 'UTC')} "
        "and ts <= {b:DateTime64(3, 'UTC')}", {"a": WINDOW[0], "b": WINDOW[1]})
    paris_days = pd.to_datetime(rows["ts"], utc=True).dt.tz_convert("Europe/Paris").dt.strftime("%Y-%m-%d")
    assert per_day.to_dict() == paris_days.value_counts().to_dict()


def test_accuracy_panel_scores_rte_day_ahead_forecast_at_about_two_percent(ops_store: Store) -> None:
    panel = _panel("powersense-model-performance", "MAPE by horizon day")
    df = ops_store.query_df(grafana_sql(panel["targets"][0]["rawSql"], *WINDOW)).set_index("horizon")
    assert 0.01 < df.loc["D+1", "mape_ratio"] < 0.04
    assert df.loc["D+0", "mape_ratio"] < df.loc["D+1", "mape_ratio"]


def test_pipeline_panel_shows_the_failed_run_with_its_error(ops_store: Store) -> None:
    panel = _panel("powersense-pipeline-health", "Recent failures")
    df = ops_store.query_df(grafana_sql(panel["targets"][0]["rawSql"], *window_of("powersense-pipeline-health")))
    assert list(df["function"]) == ["detect"]
    assert df["error"].iloc[0] == "RuntimeError: model artifact missing"


# --- dbt -----------------------------------------------------------------------------------------------

MODEL_FILES = sorted((DBT_DIR / "models").rglob("*.sql"))


def dbt_vars(env: dict[str, str] | None = None) -> dict[str, Any]:
    """dbt_project.yml's vars as dbt renders them: ``env_var(name, default)`` read from ``env`` (none: every
    default)."""
    import jinja2

    env = env or {}

    def env_var(name: str, default: str | None = None) -> str:
        value = env.get(name, default)
        assert value is not None, f"env_var({name!r}) has no default"
        return value

    raw = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())["vars"]
    return {k: jinja2.Template(v).render(env_var=env_var) if isinstance(v, str) else v for k, v in raw.items()}


FRESHNESS_ENV = ("POWERSENSE_QUERY_MAX_DATA_AGE_S", "POWERSENSE_FORECAST_MAX_STALENESS_HOURS")


def _dbt_run_compile(out: Path, cluster: str = "", extra_env: dict[str, str] | None = None,
                     ) -> subprocess.CompletedProcess[str]:
    """dbt compile (no server) into ``out``, with POWERSENSE_CLICKHOUSE_CLUSTER = ``cluster`` and ``extra_env``
    (the series and fresh-data variables only from there, never from the caller's environment)."""
    if not DBT.exists():
        pytest.skip(f"dbt not installed: {DBT_INSTALL}")
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith("POWERSENSE_SERIES_") and k not in FRESHNESS_ENV}
    env = {**inherited, "POWERSENSE_CLICKHOUSE_DATABASE": DBT_DB, "POWERSENSE_DBT_SCHEMA": DBT_DB,
           "POWERSENSE_CLICKHOUSE_CLUSTER": cluster,
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_PARTIAL_PARSE": "false", **(extra_env or {})}
    return subprocess.run(
        [str(DBT), "compile", "--profiles-dir", ".", "--no-populate-cache", "--target-path", str(out / "target"),
         "--log-path", str(out / "logs")],
        cwd=DBT_DIR, env=env, capture_output=True, text=True, timeout=300,
    )


def _dbt_compile(out: Path, cluster: str = "", extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`_dbt_run_compile`, which must succeed: the manifest."""
    res = _dbt_run_compile(out, cluster, extra_env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    manifest: dict[str, Any] = json.loads((out / "target" / "manifest.json").read_text())
    return manifest


@pytest.fixture(scope="module")
def dbt_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The single-host compile (no cluster): every model's and test's compiled SQL."""
    return _dbt_compile(tmp_path_factory.mktemp("dbt"))


@pytest.fixture(scope="module")
def dbt_views(ops_store: Store, dbt_manifest: dict[str, Any]) -> dict[str, str]:
    """Load the seed and create every model as a view, dependencies first; name → error ('' if none)."""
    seed = pd.read_csv(DBT_DIR / "seeds" / "fr_public_holidays.csv")
    seed["date"] = pd.to_datetime(seed["date"]).dt.date
    ops_store.command("create table {db:Identifier}.fr_public_holidays (date Date, name String) "
                      "engine = MergeTree order by date")
    ops_store.insert_df("fr_public_holidays", seed)
    models = {uid: n for uid, n in dbt_manifest["nodes"].items() if n["resource_type"] == "model"}
    errors: dict[str, str] = {}

    def create(uid: str) -> None:
        node = models[uid]
        if node["name"] in errors:
            return
        for dep in node["depends_on"]["nodes"]:
            if dep in models:
                create(dep)
        sql = node["compiled_code"].replace(f"`{DBT_DB}`.", f"{ops_store.database}.")
        try:
            # a view stores its text: the database is literal; %% because the driver %-formats it
            ops_store.command(f"create view {ops_store.database}.{node['name']} as {sql}".replace("%", "%%"))
            errors[node["name"]] = ""
        except Exception as exc:  # reported by the model's own test
            errors[node["name"]] = str(exc)

    for uid in models:
        create(uid)
    return errors


@pytest.mark.parametrize("model", [p.stem for p in MODEL_FILES])
def test_dbt_model_runs_on_real_data(ops_store: Store, dbt_views: dict[str, str], model: str) -> None:
    assert dbt_views.get(model) == "", dbt_views.get(model, "not compiled")
    assert ops_store.scalar(f"select count() from (select * from {{db:Identifier}}.{model})") > 0


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_every_dbt_model_is_documented_and_tested(path: Path) -> None:
    import yaml

    doc = yaml.safe_load(path.with_suffix(".yml").read_text())
    model = next(m for m in doc["models"] if m["name"] == path.stem)
    assert model.get("description")
    assert any(c.get("data_tests") for c in model["columns"])


def test_dbt_source_freshness_reads_the_newest_valid_value(ops_store: Store, dbt_manifest: dict[str, Any]) -> None:
    # dbt's freshness read measurements' inserted_at (moved by every revision of an old value and by every
    # temperature forecast); it now asks what /health and the freshness gauge ask (shared.series.latest_valid_ts)
    import jinja2

    from shared.series import latest_valid_ts

    node = next(n for n in dbt_manifest["sources"].values() if n["name"] == "series")
    variables = dbt_vars()

    class This:  # the source relation as dbt renders it: `database.series`
        schema = ops_store.database

        def __str__(self) -> str:
            return f"{self.schema}.series"

    sql = jinja2.Template(node["loaded_at_query"]).render(this=This(), var=variables.__getitem__)
    (got,) = ops_store.query_rows(sql.replace("%", "%%"), {})[0]
    expected = latest_valid_ts(ops_store, "eco2mix_national", "consommation")
    assert expected is not None and got.replace(tzinfo=UTC) == expected


def test_dbt_data_tests_pass_on_real_data(ops_store: Store, dbt_views: dict[str, str],
                                          dbt_manifest: dict[str, Any]) -> None:
    tests = [n for n in dbt_manifest["nodes"].values() if n["resource_type"] == "test"]
    assert len(tests) > 40
    failures = {}
    for node in tests:
        sql = node["compiled_code"].replace(f"`{DBT_DB}`.", "{db:Identifier}.")
        failing = ops_store.scalar(f"select count() from ({sql})")
        if failing:
            failures[node["name"]] = failing
    assert not failures


def _tested_column_type(store: Store, manifest: dict[str, Any], node: dict[str, Any]) -> str:
    """The ClickHouse type of the column a dbt column test checks, in the relation it reads (model, seed or source)."""
    parent = node["depends_on"]["nodes"][0]
    table = (manifest["sources"][parent]["name"] if parent.startswith("source.") else parent.split(".")[-1])
    return str(store.scalar("select type from system.columns where database = {d:String} and table = {t:String} "
                            "and name = {c:String}", {"d": store.database, "t": table, "c": node["column_name"]}))


def test_dbt_not_null_tests_only_check_columns_that_can_hold_null(ops_store: Store, dbt_views: dict[str, str],
                                                                 dbt_manifest: dict[str, Any]) -> None:
    # ClickHouse writes a type's default where a non-Nullable column gets NULL: not_null could never fail there (29
    # such tests did until 2026-12-06); those columns use not_missing (dbt/tests/generic/not_missing.sql)
    tests = [n for n in dbt_manifest["nodes"].values()
             if n["resource_type"] == "test" and (n.get("test_metadata") or {}).get("name") == "not_null"]
    types = {f"{n['depends_on']['nodes'][0].split('.')[-1]}.{n['column_name']}":
             _tested_column_type(ops_store, dbt_manifest, n) for n in tests}
    assert len(types) >= 5
    assert {c: t for c, t in types.items() if not t.startswith("Nullable(")} == {}


def test_dbt_not_missing_fails_on_the_default_clickhouse_writes_for_null(ops_store: Store, dbt_views: dict[str, str],
                                                                        dbt_manifest: dict[str, Any]) -> None:
    node = next(n for n in dbt_manifest["nodes"].values() if n["resource_type"] == "test"
                and n["name"] == "not_missing_stg_measurements_ukey")
    ops_store.command("create table {db:Identifier}.ukeys_with_a_null (ukey String) engine = Memory")
    # a NULL inserted into a String column: stored as '' (input_format_null_as_default), as any client's would be
    ops_store.command("insert into {db:Identifier}.ukeys_with_a_null values ('2023-10-01T00:00:00Z|consommation'), "
                      "(NULL)")
    sql = node["compiled_code"].replace(f"`{DBT_DB}`.`stg_measurements`", "{db:Identifier}.ukeys_with_a_null")
    assert "ukeys_with_a_null" in sql
    assert ops_store.scalar(f"select count() from ({sql})") == 1


def test_dbt_and_the_dashboards_show_the_series_the_functions_use() -> None:
    # "the series" is POWERSENSE_SERIES_SOURCE / _METRIC for the functions and dbt (its vars read them) and the
    # dashboards' hidden constants: their defaults must be one series (a deployment builds its own: next test)
    defaults = {"source": Settings.model_fields["series_source"].default,
                "metric": Settings.model_fields["series_metric"].default,
                "db": Settings.model_fields["clickhouse_database"].default}
    variables = dbt_vars()
    assert (variables["series_source"], variables["series_metric"]) == (defaults["source"], defaults["metric"])
    checked = 0
    for path in DASHBOARDS:
        constants = {v["name"]: v["query"] for v in json.loads(path.read_text())["templating"]["list"]
                     if v["type"] == "constant"}
        assert {k: defaults[k] for k in constants} == constants, path.name
        checked += "source" in constants
    assert checked >= 3


def _build_dashboards(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """build_dashboards.py run as a deployment runs it, with ``env`` (the caller's series variables left out),
    from ``out`` (outside the repository: it must not depend on where it is run from)."""
    out.mkdir(parents=True, exist_ok=True)
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("POWERSENSE_SERIES_", "POWERSENSE_CLICKHOUSE_DATABASE"))}
    return subprocess.run([sys.executable, str(REPO / "observability" / "grafana" / "build_dashboards.py"), str(out)],
                          env={**inherited, **env}, capture_output=True, text=True, timeout=120, cwd=out)


def test_the_dashboards_are_built_for_the_deployments_series_and_database(tmp_path: Path) -> None:
    # until 2026-12-07 the constants were edited by hand: a deployment of another series or database had every
    # panel read France's load from `electricity` (empty panels) unless someone edited five JSON files
    res = _build_dashboards(tmp_path, {"POWERSENSE_SERIES_SOURCE": "entsoe_load",
                                       "POWERSENSE_SERIES_METRIC": "actual_total_load",
                                       "POWERSENSE_CLICKHOUSE_DATABASE": "grid"})
    assert res.returncode == 0, res.stderr
    built = 0
    for path in sorted(tmp_path.glob("*.json")):
        constants = {v["name"]: v["query"] for v in json.loads(path.read_text())["templating"]["list"]
                     if v["type"] == "constant"}
        if "source" in constants:
            assert constants == {"db": "grid", "source": "entsoe_load", "metric": "actual_total_load"}, path.name
            built += 1
    assert built == 4


def test_building_the_dashboards_with_a_bad_setting_names_it_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "dashboards"
    res = _build_dashboards(out, {"POWERSENSE_CLICKHOUSE_DATABASE": "grid; drop table x"})
    assert res.returncode == 2
    assert res.stderr.startswith("invalid configuration: POWERSENSE_CLICKHOUSE_DATABASE")
    assert "Traceback" not in res.stderr
    assert not list(out.glob("*.json"))


def test_dbt_builds_the_series_the_functions_are_configured_with(tmp_path: Path) -> None:
    # until 2026-12-06 dbt's vars were constants: a deployment of another series had dbt build France's load
    manifest = _dbt_compile(tmp_path, extra_env={"POWERSENSE_SERIES_SOURCE": "entsoe_load",
                                                 "POWERSENSE_SERIES_METRIC": "actual_total_load"})
    node = next(n for n in manifest["nodes"].values() if n["name"] == "int_series_best_nature")
    assert "'entsoe_load' as source" in node["compiled_code"]
    assert "metric = 'actual_total_load'" in node["compiled_code"]


def _series_freshness_s(manifest: dict[str, Any]) -> tuple[float, float]:
    """The series source's freshness as dbt parsed it: (warn, error) in seconds."""
    fresh = next(s for s in manifest["sources"].values() if s["name"] == "series")["freshness"]
    per = {"minute": 60, "hour": 3600, "day": 86400}
    return tuple(float(fresh[k]["count"]) * per[fresh[k]["period"]] for k in ("warn_after", "error_after"))  # type: ignore[return-value]


def test_dbt_source_freshness_warns_when_stale_and_errors_when_too_old(dbt_manifest: dict[str, Any]) -> None:
    levels = Settings().freshness_levels()
    assert _series_freshness_s(dbt_manifest) == (levels["stale"], levels["too_old"])


def test_dbt_source_freshness_follows_the_functions_settings(tmp_path: Path) -> None:
    # written as 3 h / 6 h until 2026-12-07: an operator's POWERSENSE_QUERY_MAX_DATA_AGE_S left dbt warning later
    # than /health, the alerts and detect
    manifest = _dbt_compile(tmp_path, extra_env={"POWERSENSE_QUERY_MAX_DATA_AGE_S": "5400",
                                                 "POWERSENSE_FORECAST_MAX_STALENESS_HOURS": "8.3"})
    # 8.3 h is 498.00000000000006 minutes in floating point: 498, not 499 (a minute after the alert and the forecast)
    assert _series_freshness_s(manifest) == (5400.0, 498 * 60.0)


@pytest.mark.parametrize("value", ["", "abc", "-1", "inf"])
def test_dbt_refuses_a_fresh_data_level_that_is_not_a_positive_number(tmp_path: Path, value: str) -> None:
    # Jinja's float filter read "" or "abc" as 0 minutes: every `dbt source freshness` an error, and nothing said why
    res = _dbt_run_compile(tmp_path, extra_env={"POWERSENSE_FORECAST_MAX_STALENESS_HOURS": value})
    assert res.returncode != 0
    assert "POWERSENSE_FORECAST_MAX_STALENESS_HOURS is not a positive number of hours" in res.stdout + res.stderr


def test_the_dbt_holiday_seed_is_the_python_calendar() -> None:
    # the seed is a generated copy of shared.calendar.public_holidays over dbt's calendar years: a `holidays`
    # upgrade that renames or moves a day must regenerate it, or dbt and the forecast disagree on holidays

    from shared.calendar import public_holidays

    years = dbt_vars()
    first, last = int(years["calendar_start"][:4]), int(years["calendar_end"][:4])
    seed = pd.read_csv(DBT_DIR / "seeds" / "fr_public_holidays.csv")
    calendar = sorted((d.isoformat(), name) for y in range(first, last + 1) for d, name in public_holidays(y).items())
    assert list(seed.itertuples(index=False, name=None)) == calendar


def _stored(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The marts and seeds (what dbt stores as tables): name → config."""
    return {n["name"]: n["config"] for n in manifest["nodes"].values()
            if n["resource_type"] == "seed" or n["config"].get("materialized") == "table"}


def test_dbt_on_one_host_stores_plain_merge_trees(dbt_manifest: dict[str, Any]) -> None:
    stored = _stored(dbt_manifest)
    assert len(stored) >= 5 and {c["engine"] for c in stored.values()} == {"MergeTree()"}


def test_dbt_on_the_cluster_makes_every_host_a_replica_of_each_mart(
        tmp_path_factory: pytest.TempPathFactory, ops_store: Store, dbt_manifest: dict[str, Any]) -> None:
    # without `cluster` the marts were MergeTree tables on whichever host dbt reached: the other three did not
    # have them. Every host is now a replica of one table: no {shard} in the Keeper path (the server's default
    # has it: the other shard's hosts would stay empty), {uuid} rather than {table} (ClickHouse fixes the path at
    # creation and dbt's rebuild swaps tables: the third run would collide), {replica} per host
    manifest = _dbt_compile(tmp_path_factory.mktemp("dbt_cluster"), cluster="powersense")
    stored = _stored(manifest)
    assert set(stored) == set(_stored(dbt_manifest))
    # the SQL is the single host's: only where the tables live changes
    code = {uid: n.get("compiled_code") for uid, n in manifest["nodes"].items()}
    assert code == {uid: n.get("compiled_code") for uid, n in dbt_manifest["nodes"].items()}
    for name, config in stored.items():
        engine = config["engine"]
        assert engine.startswith("ReplicatedMergeTree(") and "{uuid}" in engine and "{replica}" in engine, name
        assert "{shard}" not in engine and "{table}" not in engine, name
        # the statement dbt-clickhouse issues for it parses in ClickHouse's parser (chDB runs no cluster)
        ops_store.scalar("select formatQuery({q:String})", {"q": (
            f"create table analytics.{name} on cluster powersense (x UInt8) engine = {engine} order by tuple()")})
    assert stored["fr_public_holidays"]["query_settings"] == {"insert_deduplicate": 0}
    # the root project's swap, which waits for the rebuilt table's replicas, is the one dbt resolves
    macro = manifest["macros"]["macro.powersense.exchange_tables_atomic"]["macro_sql"]
    assert "SYSTEM SYNC REPLICA {{ on_cluster_clause(old_relation) }} {{ old_relation.schema }}" in macro


def test_daily_coverage_mart_knows_both_dst_days_of_2023(ops_store: Store, dbt_views: dict[str, str]) -> None:
    rows = ops_store.query_df(
        "select toString(date) as day, expected_half_hours, observed_half_hours "
        "from {db:Identifier}.fct_daily_coverage "
        "where metric = 'consommation' and date in ('2023-03-26', '2023-10-29', '2023-10-14')"
    ).set_index("day")
    assert rows.loc["2023-03-26"].tolist() == [46, 46]
    # the fall-back day's first repeated hour is never published, and not expected: complete at 48 (it was 48 of 50)
    assert rows.loc["2023-10-29"].tolist() == [48, 48]
    assert rows.loc["2023-10-14"].tolist() == [48, 0]


def test_hourly_load_mart_adds_up_to_the_french_annual_consumption(ops_store: Store,
                                                                     dbt_views: dict[str, str]) -> None:
    twh = ops_store.scalar("select sum(energy_mwh) / 1e6 from {db:Identifier}.fct_load_hourly "
                           "where local_date between '2023-01-02' and '2023-12-30'")
    # 422 TWh here (the mart over 2023 gives 424.6); RTE reports about 445 TWh of gross consumption for
    # 2023, and the real-time eco2mix values shipped for 2023 run 0.3–0.55 GW below definitive data;
    # two edge days and the missing 2023-10-14 are not counted
    assert 400 < twh < 460


def test_forecast_accuracy_mart_ranks_rte_intraday_above_day_ahead(ops_store: Store,
                                                                     dbt_views: dict[str, str]) -> None:
    df = ops_store.query_df(
        "select horizon_day, sum(mape_ratio * scored_steps) / sum(scored_steps) as mape "
        "from {db:Identifier}.fct_forecast_accuracy group by horizon_day order by horizon_day"
    )
    assert df["horizon_day"].tolist() == [0, 1]
    assert df["mape"].iloc[0] < df["mape"].iloc[1] < 0.03


def test_forecast_accuracy_mart_scores_as_the_product_does(ops_store: Store, dbt_views: dict[str, str]) -> None:
    # one definition of "the actual": the series' reading at the forecast's instant. dbt averaged 15-min values
    # into half-hours until 2026-12-05, so its MAPE differed from drift.accuracy's (the gauge's, Grafana's)
    from shared.detection.drift import accuracy
    from shared.series import load_series

    forecasts = ops_store.query_df("select run_id, model_version, issued_at, ts, horizon_day, yhat, lower, upper, "
                                   "interval_level, quality from {db:Identifier}.forecasts "
                                   "where source = 'eco2mix_national' and metric = 'consommation'")
    actuals = load_series(ops_store, "eco2mix_national", "consommation")
    product = accuracy(forecasts, actuals).set_index("horizon_day")
    mart = ops_store.query_df("select horizon_day, avg(abs_pct_error) as mape, count() as n "
                              "from {db:Identifier}.int_forecast_scored group by horizon_day").set_index("horizon_day")
    assert sorted(mart.index) == sorted(product.index) and len(mart) >= 2
    for day in mart.index:
        assert mart.loc[day, "n"] == product.loc[day, "n"]
        assert mart.loc[day, "mape"] == pytest.approx(product.loc[day, "mape"], rel=1e-9)


# --- the query function's /metrics → the alert rules ---------------------------------------------------

# Scraped 12 h 30 min after the newest 2023 value (2023-12-31T23:45Z) and 7 h 15 min after the
# newest forecast run (RTE's intraday forecast for 2024-01-01, issued 06:00 Paris time).
SCRAPE_AT = datetime(2024, 1, 1, 12, 15, tzinfo=UTC)


PROMETHEUS_CONFIGS = {"faasd": REPO / "observability/prometheus/prometheus.yml",
                      "compose": REPO / "observability/prometheus/prometheus.compose.yml",
                      "kubernetes": REPO / "deploy/kubernetes/prometheus/prometheus.yml"}


def _scrape_query(ops_store: Store, monkeypatch: pytest.MonkeyPatch, path: str = "/metrics",
                  through_gateway: bool = False) -> str:
    """The exposition the real query function serves for the test database at SCRAPE_AT, after detect's scheduled
    run: at ``path`` on the function itself, or through the embedded OpenFaaS gateway (which forwards
    ``/function/query/<rest>`` to the function's ``/<rest>`` as the OpenFaaS gateway does)."""
    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler
    from local_dev.gateway import create_gateway_app
    from shared import clock
    from shared import settings as settings_mod
    from shared import store as store_mod

    monkeypatch.setenv("POWERSENSE_CLICKHOUSE_DATABASE", ops_store.database)
    settings_mod.get_settings.cache_clear()
    store_mod.reset_store()
    clock.install(clock.SimulatedClock(SCRAPE_AT, speed=0.0))
    try:
        # detect's scheduled run at the scrape: the feed stopped at the end of 2023, so the quarter-hours due
        # since are open `missing` anomalies in the span it re-examines (the gauge counts only that span)
        from shared.detection.service import run_detect
        from shared.runs import stage_run

        with stage_run(ops_store, "detect", trigger="cron") as run:
            run_detect(ops_store, settings_mod.get_settings(), run)
        app = create_gateway_app(["query"], with_replay=False) if through_gateway else load_handler("query").app
        response = TestClient(app).get(path)
        assert response.status_code == 200, response.text
        return response.text
    finally:
        clock.install(None)
        settings_mod.get_settings.cache_clear()
        store_mod.reset_store()


@pytest.fixture
def query_metrics(ops_store: Store, monkeypatch: pytest.MonkeyPatch) -> str:
    """The exposition the real query function serves on /metrics for the test database."""
    return _scrape_query(ops_store, monkeypatch)


def _names_the_rules_read_from_the_query_function() -> set[str]:
    """Metric names the alerting and recording rules read that the query function's exporter produces (the rest
    are pushed by the stages, or come from ClickHouse, the gateway, node-exporter …)."""
    exporter = (REPO / "shared/query/metrics.py").read_text()
    produced = set(re.findall(r'"(powersense_[a-z0-9_]+)"', exporter))
    exprs = [r["expr"] for p in (REPO / "observability/prometheus/rules").glob("*.yml")
             for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]]
    read = {n for e in exprs for n in re.findall(r"\bpowersense_[a-z0-9_]+", re.sub(r'"[^"]*"', '""', e))}
    return produced & read


@pytest.mark.parametrize("topology", sorted(PROMETHEUS_CONFIGS))
def test_each_prometheus_scrapes_the_query_gauges_the_rules_read_where_the_function_serves_them(
        topology: str, ops_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job each shipped Prometheus config scrapes for the query function (path and target) reaches the query
    function's own /metrics: through the OpenFaaS gateway on faasd and Kubernetes, on the function's watchdog port in
    plain compose. Every gauge the rules read from it is there: the fresh-data thresholds of the data-stale alerts
    among them (a job pointed elsewhere leaves PowerSenseDataStale silent and only FreshnessUnknown to say so)."""
    from prometheus_client.parser import text_string_to_metric_families

    config = yaml.safe_load(PROMETHEUS_CONFIGS[topology].read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "powersense-query"]
    [target] = [t for sc in job["static_configs"] for t in sc["targets"]]
    host, port = target.rsplit(":", 1)
    path = job.get("metrics_path", "/metrics")
    # of-watchdog serves the function on 8080, and so does the OpenFaaS gateway (faasd, the openfaas chart)
    assert port == "8080", target
    if path.startswith("/function/"):
        # faasd's service name; the openfaas chart's gateway Service in its namespace (as the cron-connector's)
        gateway = {"faasd": "gateway", "kubernetes": "gateway.openfaas.svc.cluster.local"}[topology]
        assert host == gateway, f"{topology}: {target} is not the OpenFaaS gateway"
        body = _scrape_query(ops_store, monkeypatch, path, through_gateway=True)
    else:
        assert host == "query", f"{topology}: {target} is not the query function's service"
        body = _scrape_query(ops_store, monkeypatch, path)
    served = set()
    for family in text_string_to_metric_families(body):
        served |= {family.name, *(s.name for s in family.samples)}
        if family.type == "counter":
            served.add(f"{family.name}_total")
    wanted = _names_the_rules_read_from_the_query_function()
    assert {"powersense_data_freshness_seconds", "powersense_data_freshness_threshold_seconds",
            "powersense_forecast_age_seconds"} <= wanted
    assert wanted <= served, f"{topology}: read by the rules, not served at {target}{path}: {sorted(wanted - served)}"


def test_query_metrics_carry_the_names_and_labels_the_alerts_expect(query_metrics: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    samples = {f.name: f.samples for f in text_string_to_metric_families(query_metrics)}
    freshness = {s.labels["metric"]: s.value for s in samples["powersense_data_freshness_seconds"]}
    assert freshness["consommation"] == pytest.approx(12.5 * 3600)
    age = {s.labels["metric"]: s.value for s in samples["powersense_forecast_age_seconds"]}
    assert age == {"consommation": pytest.approx(7.25 * 3600)}
    assert {s.labels["horizon_day"] for s in samples["powersense_forecast_mape_ratio"]} == {"0", "1"}
    assert sum(s.value for s in samples["powersense_anomalies_open"]) > 0
    events = samples["powersense_anomaly_events_open"]  # what PowerSenseAnomaliesOpen counts, by kind and severity
    assert events and all({"kind", "severity"} <= set(s.labels) for s in events)
    assert sum(s.value for s in events) <= sum(s.value for s in samples["powersense_anomalies_open"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_scraping_query_metrics_raises_the_staleness_alerts_not_the_anomaly_one(
    query_metrics: str, tmp_path: Path
) -> None:
    """A real Prometheus scrapes what the query function served and evaluates the repository's rules. The feed
    stopped: the staleness alerts fire; the quarter-hours missing since are open `missing` events in the gauge, which
    PowerSenseAnomaliesOpen leaves to poll's gap alert (it counts the load's own kinds; its firing case is a promtool
    test)."""
    import shutil
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx
    import yaml

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed: apt-get install -y prometheus")
    body = query_metrics.encode()

    class Exposition(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    exporter = ThreadingHTTPServer(("127.0.0.1", _free_port()), Exposition)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    web = _free_port()
    rules = sorted(str(p) for p in (REPO / "observability" / "prometheus" / "rules").glob("*.yml"))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": rules,
              "scrape_configs": [{"job_name": "powersense-query", "metrics_path": "/function/query/metrics",
                                  "static_configs": [{"targets": [f"127.0.0.1:{exporter.server_port}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert 'powersense_anomaly_events_open{kind="missing"' in query_metrics
    wanted = {"PowerSenseDataStale", "PowerSenseDataStaleCritical", "PowerSenseForecastStale",
              "PowerSenseForecastStaleCritical"}
    active: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not wanted <= active:
            time.sleep(0.5)
            try:
                alerts = httpx.get(f"http://127.0.0.1:{web}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
            except httpx.HTTPError:
                continue
            active = {a["labels"]["alertname"] for a in alerts
                      if a["labels"].get("metric", "consommation") == "consommation"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        exporter.shutdown()
    assert wanted <= active, f"active alerts: {sorted(active)}"
    assert "PowerSenseFreshnessUnknown" not in active and "PowerSenseAnomaliesOpen" not in active


def test_the_nature_ranking_of_the_series_is_written_once() -> None:
    # "The series" (best nature, latest version, implausible values out) is the view in
    # ch/init/007.series.sql; Python readers, dbt and Grafana call it instead of ranking natures again.
    texts = [*REPO.glob("shared/**/*.py"), *REPO.glob("functions/**/*.py"), *REPO.glob("local_dev/**/*.py"),
             *(DBT_DIR / "models").rglob("*.sql"), *(DBT_DIR / "macros").rglob("*.sql"), *DASHBOARDS,
             REPO / "observability" / "grafana" / "build_dashboards.py", *REPO.glob("ch/init/*.sql")]
    ranking = [p.relative_to(REPO).as_posix() for p in texts if "Données définitives%" in p.read_text()]
    assert ranking == ["ch/init/007.series.sql"]


def test_the_last_run_panel_looks_back_as_far_as_lost_runs_are_closed() -> None:
    # bounded (pipeline_runs is never pruned), at least as far back as close_lost_runs settles a run's status
    from shared.runs import RUN_LOST_LOOKBACK_DAYS

    panels = json.loads((REPO / "observability/grafana/dashboards/pipeline-health.json").read_text())["panels"]
    [sql] = [t["rawSql"] for p in panels if p["title"] == "Last run per stage" for t in p["targets"]]
    assert f"started_at >= least($__fromTime, now() - interval {RUN_LOST_LOOKBACK_DAYS} day)" in sql


def test_the_last_run_panel_shows_an_older_success_and_counts_the_range(database: str) -> None:
    from shared.store import get_store

    store = get_store()
    store.apply_schema()
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)

    def run(run_id: str, ago: timedelta, status: str) -> dict[str, Any]:
        start = now - ago
        return {"function": "forecast", "run_id": run_id, "trigger": "cron", "started_at": start,
                "finished_at": start + timedelta(minutes=2), "status": status, "rows_in": 0, "rows_out": 0,
                "error": "", "details": "{}", "updated_at": start + timedelta(minutes=2)}

    store.insert_df("pipeline_runs", pd.DataFrame([
        run("ancient", timedelta(days=60), "success"),  # before the lookback: not read
        run("last-success", timedelta(days=10), "success"),  # before the 24-hour range, within 35 days
        run("failed", timedelta(hours=3), "failed"),
    ]))
    panel = _panel("powersense-pipeline-health", "Last run per stage")
    df = store.query_df(grafana_sql(panel["targets"][0]["rawSql"], now - timedelta(days=1), now + timedelta(hours=1)))
    row = df.set_index("function").loc["forecast"]
    assert (row["last_status"], row["runs"], row["failed_runs"]) == ("failed", 1, 1)
    assert pd.Timestamp(row["last_success_at"]).tz_localize(None) == now - timedelta(days=10) + timedelta(minutes=2)


def test_the_last_run_panel_counts_a_partial_run_as_a_success(database: str) -> None:
    # as the last-success gauge and PowerSenseStageNoRecentSuccess do (shared/runs.py DID_ITS_WORK): poll's partial
    # runs every 5 minutes showed hours since the last success while the alert rightly stayed quiet
    from shared.runs import DID_ITS_WORK_SQL
    from shared.store import get_store

    store = get_store()
    store.apply_schema()
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    start = now - timedelta(minutes=7)
    store.insert_df("pipeline_runs", pd.DataFrame([
        {"function": "poll", "run_id": run_id, "trigger": "cron", "started_at": start - ago,
         "finished_at": start - ago + timedelta(seconds=5), "status": status, "rows_in": 0, "rows_out": 0,
         "error": "", "details": "{}", "updated_at": start - ago + timedelta(seconds=5)}
        for run_id, ago, status in [("success", timedelta(hours=3), "success"), ("partial", timedelta(0), "partial")]
    ]))
    panel = _panel("powersense-pipeline-health", "Last run per stage")
    assert DID_ITS_WORK_SQL in panel["targets"][0]["rawSql"]
    df = store.query_df(grafana_sql(panel["targets"][0]["rawSql"], now - timedelta(days=1), now + timedelta(hours=1)))
    row = df.set_index("function").loc["poll"]
    assert row["last_status"] == "partial" and row["seconds_since_success"] < 600


def test_the_verdict_known_at_as_of_is_written_once() -> None:
    # "The plausibility verdict known at as_of" (each version's latest measurement_flags row) is the view
    # measurement_verdicts in ch/init/007.series.sql; the series view, version=all, reflag and the Data quality
    # dashboard read it instead of choosing the latest verdict again.
    texts = [*REPO.glob("shared/**/*.py"), *REPO.glob("functions/**/*.py"), *REPO.glob("local_dev/**/*.py"),
             *(DBT_DIR / "models").rglob("*.sql"), *(DBT_DIR / "macros").rglob("*.sql"), *DASHBOARDS,
             REPO / "observability" / "grafana" / "build_dashboards.py", *REPO.glob("ch/init/*.sql")]
    choosing = [p.relative_to(REPO).as_posix() for p in texts
                if re.search(r"argMax\(\s*reason\s*,\s*flagged_at\s*\)", p.read_text(), re.IGNORECASE)]
    assert choosing == ["ch/init/007.series.sql"]


def _sql_texts() -> list[tuple[str, str]]:
    """Every SQL text the product ships: dashboard panels, dbt models and macros, the schema, the query API's."""
    def raw_sql(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            yield from ([node["rawSql"]] if "rawSql" in node else [])
            node = list(node.values())
        if isinstance(node, list):
            for child in node:
                yield from raw_sql(child)

    files = [*(DBT_DIR / "models").rglob("*.sql"), *(DBT_DIR / "macros").rglob("*.sql"), *REPO.glob("ch/init/*.sql"),
             *REPO.glob("shared/**/*.py")]
    return ([(p.name, sql) for p in DASHBOARDS for sql in raw_sql(json.loads(p.read_text()))]
            + [(p.relative_to(REPO).as_posix(), p.read_text()) for p in files])


def test_every_local_day_in_sql_is_the_calendars() -> None:
    # "A day" is a local day of shared/calendar.py's zone everywhere: dbt's local_date, the forecasts' D+k, the
    # query API's interval=1d, the dashboards' per-day panels. A day function on an instant without a zone
    # would cut UTC days (toStartOfDay(ts) of a DateTime64(3, 'UTC') column), and any zone named is TZ.
    from shared.calendar import TZ

    zone = re.compile(r"'([A-Z][A-Za-z_]+/[A-Za-z_]+)'")
    day_of_instant = re.compile(
        r"\b(?:toStartOfDay|toDate|toDayOfWeek|toStartOfWeek|toStartOfMonth|toYYYYMMDD)\(\s*[\w.]*(?:ts|_at)\s*\)")
    texts = _sql_texts()
    assert len([name for name, _ in texts if name.endswith(".json")]) >= 10  # the panels were found
    assert [(name, z) for name, text in texts for z in zone.findall(text) if z != TZ] == []
    assert [(name, d) for name, text in texts for d in day_of_instant.findall(text)] == []


def test_every_dashboard_shows_the_calendars_clock() -> None:
    # "browser" drew each Paris day's point at 22:00 or 23:00 of the day before for a viewer whose browser is on UTC
    from shared.calendar import TZ

    assert {path.name: json.loads(path.read_text())["timezone"] for path in DASHBOARDS} == {
        path.name: TZ for path in DASHBOARDS}


def test_dbt_accepts_every_status_a_run_ends_with() -> None:
    # the accepted values lacked partial: after poll's first partial run every dbt build exited 1, for good
    import yaml

    from shared.runs import RUN_STATUSES

    model = yaml.safe_load((REPO / "dbt" / "models" / "staging" / "stg_pipeline_runs.yml").read_text())["models"][0]
    column = next(c for c in model["columns"] if c["name"] == "status")
    accepted = next(t["accepted_values"]["arguments"]["values"] for t in column["data_tests"] if "accepted_values" in t)
    assert set(accepted) == {"running", *RUN_STATUSES}


def test_rejected_records_and_poll_gaps_lead_to_the_run(database: str) -> None:
    # the on-call path of PowerSensePollGapsOpen: the gap (its reason and run), the record the source sent and
    # PowerSense rejected, and the run that landed it (raw_batches.run_id: the Logs dashboard's run_id)
    from shared.ingest.poll import gap_reason
    from shared.store import get_store

    store = get_store()
    store.apply_schema()
    at, ts = datetime(2023, 3, 10, 12, tzinfo=UTC), datetime(2023, 3, 1, 12, tzinfo=UTC)
    store.insert_df("raw_batches", pd.DataFrame([{
        "batch_id": "b1", "fetched_at": at, "source_url": "replay", "window_start": ts, "window_end": ts,
        "page": 0, "n_records": 96, "n_rejected": 1, "run_id": "poll-run-1"}]))
    store.insert_df("rejected_records", pd.DataFrame([{
        "batch_id": "b1", "record_no": 48, "stage": "poll", "reason": "not a number: consommation",
        "payload": '{"consommation": "1_586"}', "rejected_at": at}]))
    store.insert_df("poll_gaps", pd.DataFrame([{
        "source": "eco2mix-national-tr", "day": date(2023, 3, 1), "window_start": datetime(2023, 2, 28, 23, tzinfo=UTC),
        "window_end": datetime(2023, 3, 1, 23, tzinfo=UTC), "status": "source_incomplete", "expected": 96,
        "missing": [ts], "attempts": 6, "first_seen_at": at, "last_attempt_at": at,
        "reason": gap_reason(1, 6, 1, "source_incomplete"), "run_id": "poll-run-1", "updated_at": at}]))
    frm, to = datetime(2023, 2, 25, tzinfo=UTC), datetime(2023, 3, 15, tzinfo=UTC)
    rejected = store.query_df(grafana_sql(
        _panel("powersense-data-quality", "Latest rejected records")["targets"][0]["rawSql"], frm, to))
    assert rejected[["reason", "run_id", "batch_id"]].values.tolist() == [["not a number: consommation",
                                                                           "poll-run-1", "b1"]]
    gaps = store.query_df(grafana_sql(_panel("powersense-data-quality", "Poll gaps")["targets"][0]["rawSql"], frm, to))
    assert gaps[["status", "missing_quarter_hours", "run_id"]].values.tolist() == [["source_incomplete", 1,
                                                                                    "poll-run-1"]]
    assert "rejected_records" in gaps["reason"].iloc[0]


def test_the_open_anomalies_panel_counts_events_as_the_alert_does(database: str) -> None:
    # one definition of "an anomaly": the panel counted points (a two-hour level shift was eight) of every series
    from shared.detection.events import DETECT_RESOLUTION_MIN, EVENT_GAP_STEPS, events
    from shared.store import get_store

    sql = _panel("powersense-data-quality", "Open anomalies")["targets"][0]["rawSql"]
    assert f"dateDiff('second', previous, ts) > {EVENT_GAP_STEPS * DETECT_RESOLUTION_MIN * 60}" in sql  # events.py
    store = get_store()
    store.apply_schema()
    t = datetime(2023, 3, 1, 12, tzinfo=UTC)
    base = {"source": "eco2mix_national", "metric": "consommation", "detector": "residual", "severity": "low",
            "value": 1.0, "value_version": 1, "model_version": "", "forecast_run_id": "", "detected_at": t,
            "run_id": "d", "status": "open", "resolution": ""}
    rows = pd.DataFrame([
        *({**base, "kind": "level_shift", "ts": t + timedelta(minutes=15 * k)} for k in range(8)),  # one event
        {**base, "kind": "level_shift", "ts": t + timedelta(hours=5)},  # a gap: another
        {**base, "kind": "dip", "ts": t + timedelta(minutes=15)},  # another kind
        {**base, "kind": "spike", "ts": t, "status": "resolved"},
        {**base, "kind": "spike", "ts": t, "metric": "prevision_j"},  # another series
    ])
    store.insert_df("anomalies", rows)
    got = store.query_df(grafana_sql(sql, t - timedelta(days=1), t + timedelta(days=1)))
    mine = rows[(rows["status"] == "open") & (rows["metric"] == "consommation")]
    assert int(got["open_anomalies"].iloc[0]) == len(events(mine, pd.Timedelta(minutes=DETECT_RESOLUTION_MIN))) == 3

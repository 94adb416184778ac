"""The Grafana dashboards as code: writes observability/grafana/dashboards/*.json.

    .venv/bin/python observability/grafana/build_dashboards.py [OUT_DIR]

The database and the series the panels show are the functions' settings (``POWERSENSE_CLICKHOUSE_DATABASE``,
``POWERSENSE_SERIES_SOURCE``, ``POWERSENSE_SERIES_METRIC``, read through :func:`shared.settings.get_settings`):
run it with a deployment's environment to build that deployment's dashboards. The committed JSON is the
defaults' build.

Edit the panels here, regenerate, commit both (a test checks the JSON matches this file). Every
ClickHouse panel's SQL is executed on real data by tests/test_ops_sql.py.

Structure: a few panel factories (:func:`timeseries`, :func:`stat`, :func:`table`, :func:`barchart`,
:func:`logs`, :func:`alertlist`; a plain string target is ClickHouse SQL, refIds follow the order), a
dashboard builder (:class:`Dash`: left-to-right layout on Grafana's 24-column grid, rows, ids), one
function per dashboard and :func:`main`.  Hand-written factories rather than Grafana's
``grafana-foundation-sdk`` (PyPI): its Python package is still a 0.0.x pre-release
(pypi.org/project/grafana-foundation-sdk), its builders emit their own defaults so the provisioned
JSON would change shape without any functional gain, and five dashboards do not justify a new
dependency; the factories keep the generated JSON byte-identical to what was reviewed and tested.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere: shared/ importable
from shared.errors import ConfigurationError  # noqa: E402
from shared.settings import Settings, get_settings  # noqa: E402

OUT = Path(__file__).resolve().parent / "dashboards"
CH = {"type": "grafana-clickhouse-datasource", "uid": "powersense-clickhouse"}
PROM = {"type": "prometheus", "uid": "powersense-prometheus"}
LOKI = {"type": "loki", "uid": "powersense-loki"}

# The series every panel shows: hidden constant variables (like ${db}), built from the deployment's settings
# (Store.of). The view `series` (ch/init/007.series.sql) is the one definition of "the series" —
# per ts the latest version of the best nature, implausible values left out — shared with the
# functions (shared/series.py) and dbt. Grafana's $__timeFilter is inclusive of its end, the view's
# end is exclusive: one second more.
SERIES = "source = '${source}' and metric = '${metric}'"
# A day is a Europe/Paris day (shared/calendar.py TZ; 23, 24 or 25 hours), as in dbt's local_date, the D+k of
# the forecasts and the query API's interval=1d: every day bucket names the zone (tests/test_ops_sql.py).
# The dashboards show that zone's clock whatever the viewer's browser says ("browser" until 2026-12-06: a day's
# point was drawn at 22:00 or 23:00 of the day before on a UTC browser).
DASHBOARD_TIMEZONE = "Europe/Paris"


def series_view(metric="'${metric}'", source="'${source}'"):
    """The view called for ``metric`` of ``source`` (SQL literals) over the dashboard's time range."""
    return (
        f"${{db}}.series(source = {source}, metric = {metric}, start = $__fromTime, "
        "end = addSeconds($__toTime, 1), as_of = toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), nature = '')"
    )


ACTUAL_CTE = f"""actual as (
    select ts, value as actual_mw
    from {series_view()}
    where value is not null
)"""


# The longest lead the product can issue: a forecast run covers the steps up to the end of local day D+h of its
# issue (shared/forecasting/service.py forecast_targets, h = POWERSENSE_FORECAST_HORIZON_DAYS, at most 14), so its
# last target starts at most h + 1 days and 30 minutes after its issue (a run issued at local midnight, a 25-hour
# fall-back day within): 16 days bounds every horizon the settings accept (9 days, the default's bound, silently
# dropped the long-lead rows of a deployment with h >= 8). A panel that reads the forecasts by target (ts) also bounds
# issued_at from below by the range's start minus this lead: the same rows (a forecast of a ts in the range was
# issued after the start minus the lead), and the table's partitions (months of issued_at) and key (source, metric,
# issued_at, ...) leave out every older issue; without it each refresh read every forecast ever issued
# (tests/test_ops_sql.py checks it against the settings' largest horizon and the product's forecast_targets).
FORECAST_MAX_LEAD = "interval 16 day"
FORECAST_LEAD_COMMENT = "-- the longest lead the product can issue (D+14): build_dashboards.py FORECAST_MAX_LEAD"

# How far back the pipeline panels look at least for a function's last run and last success: the lookback of
# shared/runs.py close_lost_runs (RUN_LOST_LOOKBACK_DAYS; tests/test_ops_sql.py checks they are equal).
RUN_LOST_LOOKBACK_DAYS = 35
# A run that did its work, as shared/runs.py DID_ITS_WORK_SQL (a partial run too), as the last-success gauge and the
# alerts count it: the panel showed hours since the last success while poll's partial runs kept the alert quiet.
RUN_DID_ITS_WORK = "status in ('success', 'partial')"
# One anomaly is an event: a run of points of one kind at most two steps of detect's grid apart, as the open-events
# gauge and PowerSenseAnomaliesOpen count them (shared/detection/events.py; tests/test_ops_sql.py checks the gap).
ANOMALY_EVENT_GAP_S = 1800


def forecast_cte(name: str, condition: str = "") -> str:
    """CTE ``name``: per target ts in the time range, the forecast of the newest run issued at or before ts, and its
    interval (``condition``: more filters on the forecasts, e.g. one horizon day).

    The query API's /forecasts/vs-actual and detect's residuals read the same (issued_at <= ts, ties by run_id): an
    hourly run issued at :07 also writes its hour's first step, which lies before its issue; the panels showed that
    step while the API scored the previous run's.
    """
    return f"""{name} as (
    select ts,
           argMax(yhat, (issued_at, run_id)) as forecast_mw,
           argMax(lower, (issued_at, run_id)) as lower_mw,
           argMax(upper, (issued_at, run_id)) as upper_mw
    from ${{db}}.forecasts
    where {SERIES}{condition} and $__timeFilter(ts) and issued_at <= ts
      and issued_at >= $__fromTime - {FORECAST_MAX_LEAD}  {FORECAST_LEAD_COMMENT}
    group by ts
)"""


class Dash:
    """A dashboard under construction: panels are laid out left to right, 24 columns wide."""

    def __init__(self, uid, title, description, tags, variables=(), time_from="now-7d"):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.variables = list(variables)
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1
        self.time_from = time_from

    def add(self, panel, w=12, h=8):
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)

    def row(self, title):
        self.x, self.y = 0, self.y + self.row_h
        self.row_h = 1
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": self.next_id,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self.next_id += 1
        self.y += 1
        self.row_h = 0

    def json(self):
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["powersense", *self.tags],
            "timezone": DASHBOARD_TIMEZONE,
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "5m",
            "time": {"from": self.time_from, "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "links": [{"type": "dashboards", "tags": ["powersense"], "asDropdown": True, "title": "PowerSense"}],
            "panels": self.panels,
        }


def constant_var(name: str, label: str, value: str) -> dict[str, Any]:
    """A hidden dashboard constant (``${name}`` in queries): set in one place per deployment."""
    return {"type": "constant", "name": name, "label": label, "query": value, "hide": 2, "skipUrlSync": True}


def textbox_var(name: str, label: str, default: str) -> dict[str, Any]:
    """A free-text dashboard variable."""
    return {"type": "textbox", "name": name, "label": label, "query": default,
            "current": {"text": default, "value": default}}


class Store(NamedTuple):
    """What the dashboards read: the ClickHouse database and the series (source, metric) — the functions' — and
    the ages (s) past which its data is stale and too old."""

    database: str
    source: str
    metric: str
    stale_s: float
    too_old_s: float

    @classmethod
    def of(cls, settings: Settings) -> Store:
        """The store a deployment's settings name (one definition: the functions read the same fields)."""
        levels = settings.freshness_levels()
        return cls(settings.clickhouse_database, settings.series_source, settings.series_metric, levels["stale"],
                   levels["too_old"])


def freshness_thresholds(store: Store) -> dict[str, Any]:
    """Data freshness colours, shared by the ClickHouse and Prometheus freshness stats: the settings' levels
    (Settings.freshness_levels), where DataStale and DataStaleCritical fire: orange when stale, red when too
    old for the model."""
    def number(seconds: float) -> float | int:  # 10800, not 10800.0, in the JSON
        return int(seconds) if float(seconds).is_integer() else seconds

    return {
        "mode": "absolute",
        "steps": [
            {"color": "green", "value": None},
            {"color": "orange", "value": number(store.stale_s)},
            {"color": "red", "value": number(store.too_old_s)},
        ],
    }


def store_vars(store: Store) -> list[dict[str, Any]]:
    """${db}, and the series shown: ${source}, ${metric} (hidden constants)."""
    return [constant_var("db", "database", store.database), constant_var("source", "source", store.source),
            constant_var("metric", "metric", store.metric)]


def ch_target(sql, fmt="timeseries", ref="A"):
    return {
        "refId": ref,
        "datasource": CH,
        "editorType": "sql",
        "queryType": {"timeseries": "timeSeries", "table": "table"}[fmt],
        "format": {"timeseries": 0, "table": 1}[fmt],
        "rawSql": sql.strip(),
    }


def prom_target(expr, legend="", ref="A", instant=False):
    t = {
        "refId": ref,
        "datasource": PROM,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
    }
    return t


def loki_target(expr, legend="", ref="A", qtype="range"):
    return {"refId": ref, "datasource": LOKI, "expr": expr, "legendFormat": legend, "queryType": qtype}


def panel(kind, title, description, ds, targets, unit=None, extra=None, overrides=None, options=None):
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": ds,
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": overrides or []},
        "options": options or {},
    }
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if extra:
        p["fieldConfig"]["defaults"].update(extra)
    return p


Target = str | dict[str, Any]  # a str is ClickHouse SQL; a dict is a built target (prom_target, loki_target …)


def _panel(
    kind: str,
    fmt: str,
    title: str,
    description: str,
    targets: tuple[Target, ...],
    *,
    unit: str | None = None,
    extra: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A panel of ``kind``: SQL targets become ClickHouse queries in ``fmt`` (refIds A, B, … by position);
    the panel's data source is its first target's (every panel here reads one data source)."""
    built = [ch_target(t, fmt, ref=chr(ord("A") + i)) if isinstance(t, str) else t for i, t in enumerate(targets)]
    ds = built[0]["datasource"] if built else None
    return panel(kind, title, description, ds, built, unit, extra, overrides, options)


def timeseries(title: str, description: str, *targets: Target, **kw: Any) -> dict[str, Any]:
    """A time-series panel (ClickHouse SQL in time-series format, or Prometheus/Loki targets)."""
    return _panel("timeseries", "timeseries", title, description, targets, **kw)


def stat(title: str, description: str, *targets: Target, **kw: Any) -> dict[str, Any]:
    """A single-value panel (ClickHouse SQL in table format, or a Prometheus target)."""
    return _panel("stat", "table", title, description, targets, **kw)


def table(title: str, description: str, *targets: Target, **kw: Any) -> dict[str, Any]:
    """A table panel (ClickHouse SQL in table format, or a Loki target)."""
    return _panel("table", "table", title, description, targets, **kw)


def barchart(title: str, description: str, *targets: Target, **kw: Any) -> dict[str, Any]:
    """A bar chart over a categorical column (ClickHouse SQL in table format)."""
    return _panel("barchart", "table", title, description, targets, **kw)


def logs(title: str, description: str, *targets: Target, **kw: Any) -> dict[str, Any]:
    """A log-lines panel (Loki targets)."""
    return _panel("logs", "table", title, description, targets, **kw)


def alertlist(title: str, description: str, **kw: Any) -> dict[str, Any]:
    """Grafana's alert list (no data source, no target)."""
    return _panel("alertlist", "table", title, description, (), **kw)


def band_overrides(lower="lower_mw", upper="upper_mw"):
    # fill between the interval bounds, bounds drawn thin and dashed
    return [
        {
            "matcher": {"id": "byName", "options": lower},
            "properties": [
                {"id": "custom.fillBelowTo", "value": upper},
                {"id": "custom.lineWidth", "value": 0},
                {"id": "custom.fillOpacity", "value": 20},
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}},
            ],
        },
        {
            "matcher": {"id": "byName", "options": upper},
            "properties": [
                {"id": "custom.lineWidth", "value": 0},
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}},
            ],
        },
        {
            "matcher": {"id": "byName", "options": "actual_mw"},
            "properties": [
                {"id": "custom.lineWidth", "value": 2},
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "blue"}},
            ],
        },
    ]


# --------------------------------------------------------------------------------------------------
# 1. Load & forecast
horizon_var = {
    "type": "custom",
    "name": "horizon_day",
    "label": "horizon (days ahead)",
    "query": "0,1,2,3,4,5,6,7",
    "current": {"text": "1", "value": "1"},
    "options": [{"text": str(i), "value": str(i), "selected": i == 1} for i in range(8)],
}


def load_forecast_dashboard(store: Store) -> Dash:
    """Dashboard 1. Load & forecast."""
    d = Dash(
        "powersense-load-forecast",
        "PowerSense — Load & forecast",
        "French national consumption (eco2mix, best available nature) against the forecasts PowerSense issued.",
        ["load", "forecast"],
        [*store_vars(store), horizon_var],
    )
    d.add(
        timeseries(
            "Load: actual vs latest forecast (prediction interval)",
            "Per target time, the forecast of the newest run issued at or before it, and its interval (as "
            "/forecasts/vs-actual); actual = latest version of the best nature.",
            f"""
with {ACTUAL_CTE},
{forecast_cte("latest_forecast")}
select ts as time, actual_mw, forecast_mw, lower_mw, upper_mw
from actual
full outer join latest_forecast using (ts)
order by time
settings join_use_nulls = 1
""",
            unit="megwatt",
            extra={"custom": {"lineWidth": 1}},
            overrides=band_overrides(),
        ),
        w=24,
        h=10,
    )
    d.add(
        timeseries(
            "Forecast issued D+${horizon_day} vs actual",
            "For each target time, the latest forecast issued ${horizon_day} Paris calendar day(s) before it.",
            f"""
with {ACTUAL_CTE},
{forecast_cte("horizon_forecast", " and horizon_day = ${horizon_day}")}
select ts as time, actual_mw, forecast_mw, lower_mw, upper_mw
from horizon_forecast
left join actual using (ts)
order by time
settings join_use_nulls = 1
""",
            unit="megwatt",
            overrides=band_overrides(),
        ),
        w=12,
        h=9,
    )
    d.add(
        timeseries(
            "Error by horizon day (MW, forecast − actual)",
            "Mean signed error per day and horizon: a bias that grows with the horizon shows in this panel first.",
            f"""
with {ACTUAL_CTE}
select toStartOfDay(f.ts, 'Europe/Paris') as time,
       concat('D+', toString(f.horizon_day)) as horizon,
       avg(f.yhat - a.actual_mw) as mean_error_mw
from ${{db}}.forecasts as f
inner join actual as a on a.ts = f.ts
where f.{SERIES.replace(" and metric", " and f.metric")} and $__timeFilter(f.ts)
  and f.issued_at >= $__fromTime - {FORECAST_MAX_LEAD}  {FORECAST_LEAD_COMMENT}
group by time, horizon
order by time, horizon
""",
            unit="megwatt",
        ),
        w=12,
        h=9,
    )
    d.add(
        timeseries(
            "RTE's own forecasts (J-1, J) vs actual",
            "The operator's published day-ahead and intraday forecasts, the benchmark a model should beat.",
            f"""
select ts as time, a.value as actual_mw, j1.value as rte_j1_mw, j.value as rte_j_mw
from {series_view()} as a
full outer join {series_view("'prevision_j1'")} as j1 using (ts)
full outer join {series_view("'prevision_j'")} as j using (ts)
order by time
""",
            unit="megwatt",
        ),
        w=24,
        h=8,
    )
    d.add(
        timeseries(
            "National temperature: latest forecast vs realised (°C)",
            "The weighted national 2 m temperature (RTE's 35 stations): the newest Open-Meteo forecast "
            "(poll-weather) next to realised temperature (Open-Meteo's archive, Enedis's smoothed series). "
            "Temperature drives the daily load level; read it beside the load forecast above.",
            f"""
select ts as time, f.value as forecast_c, r.value as realised_c, e.value as realised_enedis_smoothed_c
from {series_view("'temperature_2m'", "'open_meteo'")} as f
full outer join {series_view("'temperature_2m_realised'", "'open_meteo'")} as r using (ts)
full outer join {series_view("'temperature_realisee_lissee'", "'enedis'")} as e using (ts)
order by time
""",
            unit="celsius",
        ),
        w=24,
        h=8,
    )
    d.add(
        stat(
            "Latest forecast issued",
            "When the newest forecast run was issued.",
            """
select max(issued_at) as issued_at
from ${db}.forecasts
where source = '${source}' and metric = '${metric}'
""",
            unit="dateTimeFromNow",
        ),
        w=6,
        h=4,
    )
    d.add(
        stat(
            "Fallback share (time range)",
            "Share of forecast rows issued by the fallback instead of the model.",
            """
select countIf(quality = 'fallback') / greatest(count(), 1) as fallback_ratio
from ${db}.forecasts
where source = '${source}' and metric = '${metric}' and $__timeFilter(issued_at)
""",
            unit="percentunit",
        ),
        w=6,
        h=4,
    )
    d.add(
        table(
            "Latest forecast runs",
            "The ten newest runs: model version, quality, fallback reason and weather status (used = the weather "
            "model with the temperature forecast known at the run; otherwise why not: off, missing, stale, "
            "incomplete, no_model, failed, unused — the values are then the weather-free model's).",
            """
select run_id, any(model_version) as model_version, max(issued_at) as issued_at, min(origin) as origin,
       count() as steps, max(horizon_day) as max_horizon_day, any(quality) as quality,
       any(fallback_reason) as fallback_reason, any(weather_status) as weather_status
from ${db}.forecasts
where source = '${source}' and metric = '${metric}'
group by run_id
order by issued_at desc
limit 10
""",
        )
    )
    return d


COVERAGE = f"""
with days as (
    select toDate($__fromTime, 'Europe/Paris') + number as day
    from numbers(toUInt64(dateDiff('day', toDate($__fromTime, 'Europe/Paris'), toDate($__toTime, 'Europe/Paris')) + 1))
    -- only the Paris days wholly inside the range and over: the values are read inside the range, so a day cut by
    -- its start or end (the default now-30d cuts both; today is not over) was listed as incomplete
    where toDateTime(day, 'Europe/Paris') >= $__fromTime
      and toDateTime(day + 1, 'Europe/Paris') <= least($__toTime, now())
),
observed as (
    select toDate(ts, 'Europe/Paris') as day,
           uniqExact(toStartOfInterval(ts, interval 30 minute)) as observed_slots
    from {series_view()}
    where value is not null
    group by day
),
day_lengths as (
    select day, dateDiff('minute', toDateTime(day, 'Europe/Paris'), toDateTime(day + 1, 'Europe/Paris')) as minutes
    from days
),
expected as (
    -- 46, 48 or 48 half-hours: the local day is 23, 24 or 25 hours long, and the first occurrence of the fall-back
    -- day's repeated hour, which RTE never publishes, is not expected (shared.calendar.expected_steps, as poll,
    -- detect and dbt's dim_calendar count; POWERSENSE_DETECT_IGNORE_FALLBACK_GAP)
    select day, intDiv(minutes - if(minutes = 1500, 60, 0), 30) as expected_slots
    from day_lengths
)
"""


def data_quality_dashboard(store: Store) -> Dash:
    """Dashboard 2. Anomalies & data quality."""
    # --------------------------------------------------------------------------------------------------
    # 2. Anomalies & data quality
    d = Dash(
        "powersense-data-quality",
        "PowerSense — Anomalies & data quality",
        "Coverage (DST-aware), revisions, natures, rejected records and the anomalies detect flags.",
        ["data-quality", "anomalies"],
        [*store_vars(store)],
        time_from="now-30d",
    )
    d.add(
        timeseries(
            "Daily coverage of ${metric} (DST-aware)",
            "Observed half-hours with a value / half-hours expected in the Paris day "
            "(46 on spring-forward days; 48 on fall-back days, whose first repeated hour RTE never publishes).",
            COVERAGE
            + """
select toDateTime(e.day, 'Europe/Paris') as time,
       coalesce(o.observed_slots, 0) / e.expected_slots as coverage_ratio
from expected as e
left join observed as o on o.day = e.day
order by time
settings join_use_nulls = 1
""",
            unit="percentunit",
            extra={"min": 0, "max": 1.05},
        )
    )
    d.add(
        table(
            "Incomplete days",
            "Paris days with fewer half-hourly values than expected (as the daily coverage).",
            COVERAGE
            + """
select e.day as day, e.expected_slots as expected_slots, coalesce(o.observed_slots, 0) as observed_slots,
       e.expected_slots - coalesce(o.observed_slots, 0) as missing_slots
from expected as e
left join observed as o on o.day = e.day
where coalesce(o.observed_slots, 0) < e.expected_slots
order by day desc
settings join_use_nulls = 1
""",
        )
    )
    d.add(
        timeseries(
            "Values by nature per day",
            "Which revision level (temps réel, consolidées, définitives) the stored values have.",
            f"""
select toStartOfDay(ts, 'Europe/Paris') as time, nature, count() as values
from ${{db}}.measurements_latest final
where {SERIES} and $__timeFilter(ts)
group by time, nature
order by time
""",
            extra={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        )
    )
    d.add(
        timeseries(
            "Revised values per day",
            "Values stored in more than one version (the source changed them after first publication).",
            """
select toStartOfDay(ts, 'Europe/Paris') as time, metric, uniqExactIf(ukey, version > 1) as revised_values
from ${db}.measurements
where source = '${source}' and $__timeFilter(ts)
group by time, metric
order by time
""",
        )
    )
    d.add(
        timeseries(
            "Implausible values per day",
            "Stored values the plausibility rule flags (zero or negative load, outside the physical bounds, "
            "an impossible jump): kept as received, left out of the series. A revision that makes a value "
            "plausible clears its flag.",
            """
select toStartOfDay(ts, 'Europe/Paris') as time, concat(metric, ': ', reason) as reason, count() as values
from ${db}.measurement_verdicts(source = '${source}', metric = '', start = $__fromTime,
    end = addSeconds($__toTime, 1), as_of = toDateTime64('2200-01-01 00:00:00', 3, 'UTC'))
where reason != ''
group by time, reason
order by time
""",
            extra={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        )
    )
    d.add(
        timeseries(
            "Values the training-data gate rejected per day",
            "Grid instants whose value the forecast's training-data gate (shared/forecasting/gate.py) kept out of "
            "training, model inputs, seasonal-naive copies and scoring, by reason: the plausibility flags above, "
            "flatlines (a stuck feed) and linear_ramp (a gap the source filled by linear interpolation and "
            "published as load). On featurize's finest grid.",
            f"""
select toStartOfDay(ts, 'Europe/Paris') as time, implausible_reason as reason, count() as values
from ${{db}}.features final
where {SERIES} and $__timeFilter(ts) and implausible = 1
  and resolution_min = (select min(resolution_min) from ${{db}}.features where {SERIES})
group by time, reason
order by time
""",
            extra={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        )
    )
    d.add(
        timeseries(
            "Rejected records by reason",
            "Dead-letter records per hour (poll and upsert-version).",
            """
select toStartOfHour(rejected_at) as time, concat(stage, ': ', reason) as reason, count() as records
from ${db}.rejected_records
where $__timeFilter(rejected_at)
group by time, reason
order by time
""",
            extra={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        )
    )
    d.add(
        table(
            "Latest rejected records",
            "The 50 newest dead-letter records with their payload, and the run that landed their page "
            "(raw_batches.run_id: the run_id of the Logs dashboard and of pipeline_runs).",
            """
with latest as (
    select rejected_at, stage, reason, batch_id, record_no, payload
    from ${db}.rejected_records
    where $__timeFilter(rejected_at)
    order by rejected_at desc
    limit 50
)
select l.rejected_at as rejected_at, l.stage as stage, l.reason as reason, b.run_id as run_id,
       l.batch_id as batch_id, l.record_no as record_no, substring(l.payload, 1, 300) as payload
from latest as l
left join (
    select batch_id, any(run_id) as run_id
    from ${db}.raw_batches
    where batch_id in (select batch_id from latest)
    group by batch_id
) as b on b.batch_id = l.batch_id
order by rejected_at desc
settings join_use_nulls = 1
""",
        )
    )
    d.add(
        table(
            "Poll gaps",
            "Local days poll found incomplete after re-reading them (poll_gaps; PowerSensePollGapsOpen): open = "
            "re-read on every tick, source_incomplete = no longer re-read (the reason says whether the source "
            "lacks the quarter-hours or sent them in records PowerSense rejected: see Latest rejected records), "
            "resolved = every quarter-hour arrived. run_id: the poll run that last wrote the row.",
            """
select day, status, length(missing) as missing_quarter_hours, attempts, first_seen_at, last_attempt_at, reason,
       run_id
from ${db}.poll_gaps final
where window_end > $__fromTime and window_start <= $__toTime
order by day desc
limit 100
""",
        )
    )
    d.row("Anomalies (detect)")
    d.add(
        stat(
            "Open anomalies",
            "Anomalies detect still holds open in the time range, as events (runs of consecutive points of one "
            "kind) as PowerSenseAnomaliesOpen counts them; the alert counts the medium and high spike, dip, "
            "level_shift and flatline events of the last 48 h.",
            f"""
select count() as open_anomalies
from (
    select kind, ts,
           lagInFrame(ts) over (partition by kind order by ts rows between 1 preceding and current row) as previous
    from ${{db}}.anomalies final
    where {SERIES} and status = 'open' and $__timeFilter(ts)
)
where previous = toDateTime64(0, 3, 'UTC') or dateDiff('second', previous, ts) > {ANOMALY_EVENT_GAP_S}
""",
            extra={
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 1}],
                }
            },
        ),
        w=4,
        h=8,
    )
    d.add(
        timeseries(
            "Load with open anomalies",
            "The series with the points detect flagged (dots) and what it expected.",
            f"""
with {ACTUAL_CTE}
select ts as time, actual_mw
from actual
order by time
""",
            f"""
select ts as time, value as anomaly_mw, expected as expected_mw
from ${{db}}.anomalies final
where {SERIES} and status = 'open' and $__timeFilter(ts)
order by time
""",
            unit="megwatt",
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "anomaly_mw"},
                    "properties": [
                        {"id": "custom.drawStyle", "value": "points"},
                        {"id": "custom.pointSize", "value": 7},
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                    ],
                },
                {
                    "matcher": {"id": "byName", "options": "expected_mw"},
                    "properties": [
                        {"id": "custom.drawStyle", "value": "points"},
                        {"id": "custom.pointSize", "value": 3},
                    ],
                },
            ],
        ),
        w=20,
        h=8,
    )
    d.add(
        timeseries(
            "Anomalies per day by kind",
            "spike, dip, level_shift, flatline, missing, implausible, interpolated — all statuses.",
            f"""
select toStartOfDay(ts, 'Europe/Paris') as time, kind, count() as anomalies
from ${{db}}.anomalies final
where {SERIES} and $__timeFilter(ts)
group by time, kind
order by time
""",
            extra={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        )
    )
    d.add(
        table(
            "Latest anomalies",
            "The 100 newest anomalous points with their expectation, score and state.",
            f"""
select ts, kind, detector, severity, status, value, expected, lower, upper, score, model_version, resolution,
       detected_at
from ${{db}}.anomalies final
where {SERIES} and $__timeFilter(ts)
order by ts desc
limit 100
""",
        )
    )
    d.row("Data-quality checks (detect)")
    d.add(
        table(
            "Latest result of every check",
            "Per check and scope, the most recent status and value.",
            """
select check, scope, argMax(status, checked_at) as status, argMax(value, checked_at) as value,
       argMax(expected, checked_at) as expected, max(checked_at) as last_checked_at
from ${db}.data_quality
where $__timeFilter(checked_at)
group by check, scope
order by status = 'ok', check, scope desc
limit 200
""",
        )
    )
    d.add(
        timeseries(
            "Checks not ok per day",
            "warn and fail results per day and check.",
            """
select toStartOfDay(checked_at, 'Europe/Paris') as time, concat(check, ' ', status) as check_status, count() as checks
from ${db}.data_quality
where status != 'ok' and $__timeFilter(checked_at)
group by time, check_status
order by time
""",
            extra={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        )
    )
    return d


JOINED = f"""
with {ACTUAL_CTE},
scored as (
    select f.ts as ts, f.horizon_day as horizon_day, f.model_version as model_version, f.yhat as yhat,
           f.lower as lower, f.upper as upper, f.interval_level as interval_level, a.actual_mw as actual_mw
    from ${{db}}.forecasts as f
    inner join actual as a on a.ts = f.ts
    where f.source = '${{source}}' and f.metric = '${{metric}}' and $__timeFilter(f.ts)
      and f.issued_at >= $__fromTime - {FORECAST_MAX_LEAD}  {FORECAST_LEAD_COMMENT}
)
"""


def model_performance_dashboard(store: Store) -> Dash:
    """Dashboard 3. Model performance & drift."""
    # --------------------------------------------------------------------------------------------------
    # 3. Model performance & drift
    d = Dash(
        "powersense-model-performance",
        "PowerSense — Model performance & drift",
        "Accuracy of issued forecasts against the actual series, by horizon day; interval calibration; drift signals.",
        ["model", "accuracy", "drift"],
        [*store_vars(store), horizon_var],
        time_from="now-30d",
    )
    d.add(
        barchart(
            "MAPE by horizon day",
            "Mean absolute percentage error of every issued forecast, by days ahead.",
            JOINED
            + """
select concat('D+', toString(horizon_day)) as horizon,
       avg(abs(yhat - actual_mw) / actual_mw) as mape_ratio,
       count() as scored_points
from scored
where actual_mw > 0
group by horizon_day
order by horizon_day
""",
            unit="percentunit",
        )
    )
    d.add(
        table(
            "Interval calibration by horizon day",
            "Share of actuals inside the prediction interval vs its nominal level.",
            JOINED
            + """
select horizon_day,
       avg(interval_level) as nominal_coverage,
       avgIf(actual_mw between lower and upper, lower is not null and upper is not null) as observed_coverage,
       avg(upper - lower) as mean_width_mw
from scored
group by horizon_day
order by horizon_day
""",
        )
    )
    d.add(
        timeseries(
            "Daily MAPE at D+${horizon_day}",
            "Accuracy over time for the selected horizon: a step up is drift.",
            JOINED
            + """
select toStartOfDay(ts, 'Europe/Paris') as time, model_version, avg(abs(yhat - actual_mw) / actual_mw) as mape_ratio
from scored
where horizon_day = ${horizon_day} and actual_mw > 0
group by time, model_version
order by time
""",
            unit="percentunit",
        )
    )
    d.add(
        timeseries(
            "Bias drift: 7-day rolling mean error at D+${horizon_day}",
            "Mean signed error over the last 7 days: persistent over- or under-forecasting "
            "means the load moved away from the training data.",
            JOINED
            + """,
daily as (
    select toStartOfDay(ts, 'Europe/Paris') as day, avg(yhat - actual_mw) as mean_error_mw,
           avg(actual_mw) as mean_load_mw
    from scored
    where horizon_day = ${horizon_day}
    group by day
)
select day as time,
       avg(mean_error_mw) over (order by day rows between 6 preceding and current row) as rolling_bias_mw,
       avg(mean_load_mw) over (order by day rows between 6 preceding and current row) as rolling_load_mw
from daily
order by time
""",
            unit="megwatt",
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "rolling_load_mw"},
                    "properties": [{"id": "custom.axisPlacement", "value": "right"}],
                }
            ],
        )
    )
    d.add(
        timeseries(
            "Forecast MAPE reported by query (Prometheus)",
            "powersense_forecast_mape_ratio per horizon day, the alerting input.",
            prom_target("powersense:forecast_mape_ratio:max", "D+{{horizon_day}}"),
            unit="percentunit",
        )
    )
    d.add(
        timeseries(
            "Forecast age (Prometheus)",
            "Seconds since the newest forecast was issued (alert above 2 h).",
            prom_target("powersense:forecast_age_seconds:max", "age"),
            unit="s",
        )
    )
    d.add(
        timeseries(
            "Forecast training memory (Prometheus)",
            "Peak resident memory of the forecast function's process and of its largest training worker, pushed "
            "after each training, against the function's memory limit (alert above 85 % of it together).",
            prom_target("max by (process) (powersense_forecast_training_peak_rss_bytes)", "{{process}}"),
            prom_target("max(powersense_forecast_memory_limit_bytes)", "limit", ref="B"),
            unit="bytes",
        )
    )
    d.add(
        timeseries(
            "Weather forecast damping by lead day (Prometheus)",
            "Share of the temperature forecast's anomaly the latest weather model keeps per lead day, learnt on its "
            "holdout from the forecasts' own record: their skill as the model sees it (alert below 0.8 at lead day 1).",
            prom_target("max by (lead_day) (powersense_forecast_weather_damping_ratio)", "lead day {{lead_day}}"),
            unit="percentunit",
        )
    )
    d.row("Model metrics recorded by detect")
    d.add(
        timeseries(
            "MAPE by horizon day (detect)",
            "model_metrics kind=accuracy, name=mape, per horizon day.",
            """
select computed_at as time, concat('D+', toString(horizon_day)) as horizon, value as mape_ratio
from ${db}.model_metrics final
where kind = 'accuracy' and name = 'mape' and $__timeFilter(computed_at)
order by time
""",
            unit="percentunit",
        )
    )
    d.add(
        timeseries(
            "Drift: PSI by time of day (detect)",
            "Population stability index of recent load vs reference, per time-of-day bucket.",
            """
select computed_at as time, scope, value as psi
from ${db}.model_metrics final
where kind = 'psi' and $__timeFilter(computed_at)
order by time
""",
        )
    )
    d.add(
        table(
            "Breaches and retrain requests",
            "Metrics above their threshold, newest first.",
            """
select computed_at, kind, name, horizon_day, scope, model_version, value, threshold, n, details
from ${db}.model_metrics final
where (breached = 1 or kind = 'retrain_request') and $__timeFilter(computed_at)
order by computed_at desc
limit 100
""",
        ),
        w=24,
        h=8,
    )
    return d


# --------------------------------------------------------------------------------------------------
# 4. Pipeline health
fn_var = {
    "type": "query",
    "name": "function",
    "label": "function",
    "datasource": CH,
    "multi": True,
    "includeAll": True,
    "refresh": 2,
    "sort": 1,
    "query": "select distinct function from ${db}.pipeline_runs order by function",
    "definition": "select distinct function from ${db}.pipeline_runs order by function",
    "current": {"text": "All", "value": "$__all"},
}
FN_FILTER = "function in (${function:singlequote})"
RUNS = f"""latest_runs as (
    select function, run_id, started_at, argMax(status, updated_at) as status,
           argMax(finished_at, updated_at) as finished_at, argMax(rows_out, updated_at) as rows_out,
           argMax(error, updated_at) as error, argMax(trigger, updated_at) as trigger
    from ${{db}}.pipeline_runs
    where $__timeFilter(started_at) and {FN_FILTER}
    group by function, run_id, started_at
)"""


def pipeline_health_dashboard(store: Store) -> Dash:
    """Dashboard 4. Pipeline health."""
    d = Dash(
        "powersense-pipeline-health",
        "PowerSense — Pipeline health",
        "Stage runs, durations, failures and data freshness, "
        "from pipeline_runs (ClickHouse) and the stage metrics (Prometheus).",
        ["pipeline", "ops"],
        [*store_vars(store), fn_var],
        time_from="now-24h",
    )
    d.add(
        alertlist(
            "Firing alerts",
            "PowerSense alerts currently firing.",
            options={
                "alertListOptions": {},
                "stateFilter": {"firing": True, "pending": True},
                "maxItems": 20,
                "sortOrder": 1,
                "dashboardAlerts": False,
                "alertName": "",
                "alertInstanceLabelFilter": "",
            },
        ),
        w=8,
        h=8,
    )
    d.add(
        table(
            "Last run per stage",
            "Status of the latest run and the last success (within the time range or the last "
            f"{RUN_LOST_LOOKBACK_DAYS} days, whichever reaches further back: empty = none there), and the runs and "
            "failed runs in the time range.",
            f"""
with latest_runs as (
    select function, run_id, started_at, argMax(status, updated_at) as status,
           argMax(finished_at, updated_at) as finished_at
    from ${{db}}.pipeline_runs
    -- bounded: pipeline_runs is never pruned, and this panel read every run ever recorded on each refresh
    where started_at >= least($__fromTime, now() - interval {RUN_LOST_LOOKBACK_DAYS} day) and {FN_FILTER}
    group by function, run_id, started_at
)
select function,
       argMax(status, started_at) as last_status,
       max(started_at) as last_run_at,
       maxIf(finished_at, {RUN_DID_ITS_WORK}) as last_success_at,
       dateDiff('second', maxIf(finished_at, {RUN_DID_ITS_WORK}), now64(3)) as seconds_since_success,
       countIf(status = 'failed' and $__timeFilter(started_at)) as failed_runs,
       countIf($__timeFilter(started_at)) as runs
from latest_runs
group by function
order by function
""",
        ),
        w=16,
        h=8,
    )
    d.add(
        timeseries(
            "Runs by stage and status",
            "Invocations per interval (pipeline_runs, final status).",
            f"""
with {RUNS}
select $__timeInterval(started_at) as time, concat(function, ' ', status) as series, count() as runs
from latest_runs
group by time, series
order by time
""",
            extra={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        )
    )
    d.add(
        timeseries(
            "Run duration p95 by stage",
            "95th percentile of wall time per interval.",
            f"""
with {RUNS}
select $__timeInterval(started_at) as time, function,
       quantile(0.95)(dateDiff('millisecond', started_at, finished_at) / 1000) as duration_p95_s
from latest_runs
where finished_at is not null
group by time, function
order by time
""",
            unit="s",
        )
    )
    d.add(
        table(
            "Recent failures",
            "Failed runs with their error (newest first).",
            f"""
with {RUNS}
select started_at, function, trigger, run_id, error
from latest_runs
where status = 'failed'
order by started_at desc
limit 50
""",
        )
    )
    d.add(
        timeseries(
            "Rows written by stage",
            "rows_out per interval.",
            f"""
with {RUNS}
select $__timeInterval(started_at) as time, function, sum(rows_out) as rows_out
from latest_runs
group by time, function
order by time
""",
            extra={"custom": {"drawStyle": "bars"}},
        )
    )
    # the same freshness from both sources, coloured by the alert thresholds
    for title, description, target in (
        # the newest VALID value (view series_latest_valid, as /health and the gauge): a feed stuck at 0 MW is
        # not fresh data; the weather series (their own stage alerts) are not the series
        ("Data freshness (ClickHouse)", "Age of the series' newest valid value (not withdrawn, not implausible).",
         """
select dateDiff('second', ts, now64(3)) as freshness_seconds
from ${db}.series_latest_valid(source = '${source}', metric = '${metric}')
"""),
        ("Data freshness (Prometheus)", "powersense_data_freshness_seconds of the series from the query function "
         "(alerting input).",
         prom_target('max(powersense:data_freshness_seconds:max{source="${source}", metric="${metric}"})',
                     "freshness", instant=True)),
    ):
        d.add(stat(title, description, target, unit="s", extra={"thresholds": freshness_thresholds(store)}), w=6, h=5)
    d.add(
        timeseries(
            "Since last success (Prometheus)",
            "Seconds since each stage last succeeded, against 2× its schedule.",
            prom_target("time() - powersense:stage_last_success_timestamp_seconds", "{{function}}"),
            prom_target("2 * powersense:stage_schedule_seconds", "{{function}} 2× schedule", ref="B"),
            unit="s",
        ),
        w=12,
        h=5,
    )
    d.add(
        timeseries(
            "Stage runs per hour (Prometheus)",
            "From the pushed powersense_stage_runs_total counters.",
            prom_target("powersense:stage_runs:increase1h", "{{function}} {{status}}"),
        )
    )
    d.add(
        timeseries(
            "Stage duration p95 (Prometheus)",
            "From powersense_stage_duration_seconds histograms.",
            prom_target("powersense:stage_duration_seconds:p95_1h", "{{function}}"),
            unit="s",
        )
    )
    d.add(
        timeseries(
            "Gateway invocations (OpenFaaS)",
            "Invocations per second by function and HTTP code.",
            prom_target(
                "sum by (function_name, code) (rate(gateway_function_invocation_total[$__rate_interval]))",
                "{{function_name}} {{code}}",
            ),
            unit="reqps",
        )
    )
    d.add(
        timeseries(
            "Function replicas (OpenFaaS)",
            "Replicas per function (query scales 2–5 on Kubernetes: openfaas-stack.yml labels; faasd runs one).",
            prom_target("max by (function_name) (gateway_service_count)", "{{function_name}}"),
        )
    )
    return d


# --------------------------------------------------------------------------------------------------
# 5. Logs
loki_fn = {
    "type": "query",
    "name": "function",
    "label": "function",
    "datasource": LOKI,
    "multi": True,
    "includeAll": True,
    # ".*", not ".+": a stream without the label (a line that is not JSON — a start-up traceback, a native crash —
    # keeps only the labels its source gave it, config.alloy) matches only the empty value, so "All" hid them
    "allValue": ".*",
    "refresh": 2,
    "query": {
        "label": "function",
        "stream": '{job="powersense"}',
        "type": 1,
        "refId": "LokiVariableQueryEditor-VariableQuery",
    },
    "definition": 'label_values({job="powersense"}, function)',
    "current": {"text": "All", "value": "$__all"},
}
level_var = {
    "type": "custom",
    "name": "level",
    "label": "level",
    "multi": True,
    "includeAll": True,
    "allValue": ".*",  # as the function's: "All" includes the lines that have no level
    "query": "DEBUG,INFO,WARNING,ERROR,CRITICAL",
    "current": {"text": "All", "value": "$__all"},
}
run_var = textbox_var("run_id", "run_id (regex)", ".*")
search_var = textbox_var("search", "line contains", "")
SEL = '{job="powersense", function=~"$function", level=~"$level"}'


def logs_dashboard() -> Dash:
    """Dashboard 5. Logs."""
    d = Dash(
        "powersense-logs",
        "PowerSense — Logs",
        "JSON logs of every function (Loki); filter by function, level, run_id.",
        ["logs"],
        [loki_fn, level_var, run_var, search_var],
        time_from="now-6h",
    )
    d.add(
        timeseries(
            "Log lines by level",
            "Lines per interval by level.",
            loki_target(
                f'sum by (level) (count_over_time({SEL} |= "$search" | run_id=~"$run_id" [$__auto]))', "{{level}}"
            ),
            extra={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        ),
        w=12,
        h=7,
    )
    d.add(
        timeseries(
            "Errors by function and event",
            "ERROR lines per interval, by function and event name.",
            loki_target(
                "sum by (function, event) (count_over_time("
                '{job="powersense", function=~"$function", level=~"ERROR|CRITICAL"} [$__auto]))',
                "{{function}} {{event}}",
            ),
            extra={"custom": {"drawStyle": "bars"}},
        ),
        w=12,
        h=7,
    )
    d.add(
        table(
            "Finished runs",
            "run_finished events: status, rows and duration per invocation.",
            loki_target(
                '{job="powersense", function=~"$function", event="run_finished"} | run_id=~"$run_id" '
                "| json status, rows_in, rows_out, duration_s, error",
                qtype="range",
            ),
            options={"showHeader": True},
        ),
        w=24,
        h=8,
    )
    d.add(
        logs(
            "Log lines",
            "Every matching line; click a line to see its fields (run_id, event, error …).",
            loki_target(f'{SEL} |= "$search" | run_id=~"$run_id" | json'),
            options={
                "showTime": True,
                "wrapLogMessage": True,
                "sortOrder": "Descending",
                "enableLogDetails": True,
                "prettifyLogMessage": False,
                "dedupStrategy": "none",
            },
        ),
        w=24,
        h=14,
    )
    return d


def build(store: Store) -> dict[str, Dash]:
    """File name (without .json) → the dashboard, reading ``store``."""
    return {
        "load-forecast": load_forecast_dashboard(store),
        "data-quality": data_quality_dashboard(store),
        "model-performance": model_performance_dashboard(store),
        "pipeline-health": pipeline_health_dashboard(store),
        "logs": logs_dashboard(),
    }


# the committed files: the settings' defaults (a test compares them with this)
dashboards: dict[str, Dash] = build(Store.of(Settings.model_construct()))


def render(dash: Dash) -> str:
    """The JSON file text of one dashboard."""
    return json.dumps(dash.json(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write every dashboard into OUT (or the directory given)."""
    out = Path(argv[0]) if argv else OUT
    try:
        store = Store.of(get_settings())  # the environment's deployment
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)  # one line naming the variable, and nothing written
        return 2
    out.mkdir(parents=True, exist_ok=True)
    built = build(store)
    for name, dash in built.items():
        (out / f"{name}.json").write_text(render(dash))
    print("written:", ", ".join(f"{name}.json" for name in built), "for", f"{store.database}:",
          f"{store.source}/{store.metric}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

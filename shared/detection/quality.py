"""Data-quality checks run by every detect invocation (into ``data_quality`` and the run log).

Pure functions build the checks from frames and figures; the few figures only ClickHouse has cheaply
(duplicates, dead letters, revisions, learned bounds) come from small aggregate queries, the ``load_*``
functions (and :func:`learned_bounds`), which detect runs in its load step.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shared.calendar import TZ, expected_instants, local_day_bounds
from shared.forecasting.gate import ramp_mask, value_resolution
from shared.series import NO_END, SERIES_SQL, data_age_s, freshness_status
from shared.store import Store
from shared.timeutil import to_utc

if TYPE_CHECKING:
    from shared.settings import Settings

COLUMNS = ["checked_at", "run_id", "source", "metric", "check", "scope", "value", "expected", "status", "details"]


def check(
    name: str, value: float, status: str, details: dict[str, Any], *, scope: str = "window",
    expected: float | None = 0.0,
) -> dict[str, Any]:
    """One check as the run log and :func:`to_frame` take it (``status``: ok / warn / fail)."""
    return {"check": name, "scope": scope, "value": value, "expected": expected, "status": status, "details": details}


def count_check(name: str, count: int, details: dict[str, Any], problem: str = "fail") -> dict[str, Any]:
    """A check of the window that expects none of what it counts: ok at 0, else ``problem``."""
    return check(name, float(count), "ok" if count == 0 else problem, details)


def completeness(
    series: pd.DataFrame, now: datetime, days: int, step_min: int, minimum: float, lag_min: float = 0.0,
    *, ignore_fallback_gap: bool = True,
) -> list[dict[str, Any]]:
    """Per local day of the last ``days`` days (today: only the steps already due), values present vs expected.

    Expected is :func:`shared.calendar.expected_steps` (poll's gap proof and dbt count the same), so the fall-back
    day, whose first repeated hour RTE never publishes, is complete at 96 quarter-hours: it warned at 96/100.
    """
    now_ts = to_utc(now)
    today = now_ts.tz_convert(TZ).date()
    have = series.dropna(subset=["value"])
    local_dates = pd.DatetimeIndex(have["ts"]).tz_convert(TZ).date if not have.empty else []
    counts = pd.Series(local_dates).value_counts() if len(local_dates) else pd.Series(dtype=int)
    step = pd.Timedelta(minutes=step_min)
    out = []
    for k in range(days - 1, -1, -1):
        date = today - pd.Timedelta(days=k).to_pytimedelta()
        day = pd.Timestamp(date).tz_localize(TZ)
        expected = expected_instants(*local_day_bounds(day), step, ignore_fallback_gap=ignore_fallback_gap)
        if k == 0:  # today: only the steps whose value is already due (ts + step + lag <= now)
            expected = expected[expected + step + pd.Timedelta(minutes=lag_min) <= now_ts]
        exp = len(expected)
        n = int(counts.get(date, 0))
        ratio = min(1.0, n / exp) if exp else 1.0
        status = "ok" if ratio >= minimum else ("warn" if ratio >= minimum - 0.1 else "fail")
        out.append(check("completeness", round(ratio, 4), status,
                         {"present": n, "expected_steps": exp, "partial_day": k == 0},
                         scope=str(day.date()), expected=float(exp)))
    return out


def freshness(series: pd.DataFrame, now: datetime, settings: Settings) -> dict[str, Any]:
    """Age of the newest value, in minutes, on the product's one scale of fresh data
    (:func:`shared.series.freshness_status`): ok, warn when late, fail when stale."""
    have = series.dropna(subset=["value"])
    late_min = settings.dq_freshness_max_min
    if have.empty:
        return check("freshness", float("inf"), "fail", {"newest": None}, expected=late_min)
    newest = pd.Timestamp(have["ts"].max())
    age_s = data_age_s(newest.to_pydatetime(), now)
    status = {"ok": "ok", "late": "warn"}.get(freshness_status(age_s, settings), "fail")
    return check("freshness", round(age_s / 60, 2), status, {"newest": newest.isoformat()}, expected=late_min)


def out_of_range(window: pd.DataFrame, bounds: tuple[float, float] | None, margin: float) -> dict[str, Any]:
    """Negative values and values outside the learned bounds (history quantiles widened by ``margin``)."""
    vals = window["value"].dropna().to_numpy(dtype=float)
    negative = int(np.sum(vals < 0))
    lo = hi = None
    outside = 0
    if bounds is not None and all(np.isfinite(bounds)):
        lo, hi = bounds[0] * (1 - margin), bounds[1] * (1 + margin)
        outside = int(np.sum((vals < lo) | (vals > hi)))
    return count_check("out_of_range", negative + outside,
                       {"negative": negative, "outside_bounds": outside, "lower": lo, "upper": hi, "n": int(vals.size)})


def implausible(window: pd.DataFrame) -> dict[str, Any]:
    """Values of the window the plausibility rule flags (shared/plausibility.py): stored as received,
    left out of the series.  ``window`` is :func:`shared.series.load_series` output (column ``flag``)."""
    flags = window["flag"].astype(str) if "flag" in window.columns else pd.Series(dtype=str)
    bad = window[flags != ""]
    details = {"reasons": bad["flag"].value_counts().to_dict() if len(bad) else {}, **_first_last(bad)}
    return count_check("implausible", len(bad), details)


def _first_last(rows: pd.DataFrame) -> dict[str, str]:
    """``first`` / ``last`` instant of flagged rows (empty when there are none)."""
    if not len(rows):
        return {}
    return {"first": pd.Timestamp(rows["ts"].min()).isoformat(), "last": pd.Timestamp(rows["ts"].max()).isoformat()}


def _sent(frame: pd.DataFrame) -> np.ndarray:
    """The values as the source sent them (``raw_value``, implausible ones included), else ``value``."""
    return (frame["raw_value"] if "raw_value" in frame.columns else frame["value"]).to_numpy(dtype=float)


def interpolated(window: pd.DataFrame, min_points: int, history: pd.DataFrame | None = None) -> dict[str, Any]:
    """Values of the window on a straight line the source drew through a gap (the training-data gate's ramp rule,
    :func:`shared.forecasting.gate.ramp_mask`): published as load but interpolated, so the forecast never learns
    from them; a warning, since the source sent them.  ``window``: :func:`shared.series.load_series` output;
    ``history``: the series the window is cut from, whose rounding step the rule uses (None: the window's — a few
    values with a decimal among a window's ~300 made its step finer than the detector's, which reads the history)."""
    resolution = value_resolution(_sent(history)) if history is not None else None
    mask = ramp_mask(pd.DatetimeIndex(window["ts"]), _sent(window), min_points, resolution)
    bad = window[mask]
    return count_check("interpolated", len(bad), _first_last(bad), problem="warn")


def learned_bounds(
    store: Store, source: str, metric: str, until: datetime, days: int = 365
) -> tuple[float, float] | None:
    """0.1 % and 99.9 % quantiles of the series over the ``days`` before ``until``.

    The series (ch/init/007.series.sql) leaves implausible values out, so a day and a half of zeros
    from the source cannot drag the learned lower bound to 0.
    """
    sql = f"""
    select count(), quantileExact(0.001)(value), quantileExact(0.999)(value)
    from {SERIES_SQL}
    where value is not null
    """
    rows = store.query_rows(
        sql,
        {"source": source, "metric": metric, "end": until, "start": pd.Timestamp(until) - pd.Timedelta(days=days),
         "as_of": NO_END, "nature": ""},
    )
    if not rows or rows[0][0] < 96:
        return None
    return float(rows[0][1]), float(rows[0][2])


def load_duplicate_counts(store: Store, source: str, metric: str, start: datetime, end: datetime) -> tuple[int, int]:
    """(unmerged duplicate (ukey, version) rows, instants carried by several keys of one nature) in the window."""
    sql = """
    with window_rows as (
        select ts, nature, ukey, version from {db:Identifier}.measurements
        where source = {source:String} and metric = {metric:String}
          and ts >= {start:DateTime64(3, 'UTC')} and ts < {end:DateTime64(3, 'UTC')}
    ),
    clashing_instants as (
        select ts, nature from window_rows group by ts, nature having uniqExact(ukey) > 1
    )
    select (select count() - uniqExact(ukey, version) from window_rows),
           (select count() from clashing_instants)
    """
    dup_rows, clashes = store.query_rows(sql, {"source": source, "metric": metric, "start": start, "end": end})[0]
    return int(dup_rows), int(clashes)


def duplicates(counts: tuple[int, int]) -> dict[str, Any]:
    """Unmerged duplicate (ukey, version) rows, and instants carried by several keys of one nature
    (``counts``: :func:`load_duplicate_counts`)."""
    dup_rows, clashes = counts
    return count_check("duplicates", int(dup_rows) + int(clashes),
                       {"duplicate_versions": int(dup_rows), "instants_with_several_keys": int(clashes)},
                       problem="warn")


def load_dead_letters(store: Store, start: datetime, end: datetime) -> int:
    """Records rejected (dead letter) during the window."""
    sql = """
    select count() from {db:Identifier}.rejected_records
    where rejected_at >= {start:DateTime64(3, 'UTC')} and rejected_at < {end:DateTime64(3, 'UTC')}
    """
    return int(store.scalar(sql, {"start": start, "end": end}) or 0)


def dead_letter(n: int) -> dict[str, Any]:
    """The dead-letter check for ``n`` records rejected during the window."""
    return count_check("dead_letter", n, {}, problem="warn")


def load_revisions(store: Store, source: str, metric: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Revision volume and magnitude per nature for versions inserted during the window: new versions of
    a key (same nature) vs the previous version, and upgrades of real-time values to a better nature.
    Columns nature, revision ('version' | 'nature'), n, mean_abs, max_abs."""
    sql = """
    with new_versions as (
        select ukey, nature, version, value from {db:Identifier}.measurements
        where source = {source:String} and metric = {metric:String} and version > 1
          and inserted_at >= {start:DateTime64(3, 'UTC')} and inserted_at < {end:DateTime64(3, 'UTC')}
    ),
    previous_versions as (
        select ukey, version, any(value) as value from {db:Identifier}.measurements
        where source = {source:String} and metric = {metric:String} and ukey in (select ukey from new_versions)
        group by ukey, version
    ),
    same_nature as (
        select n.nature as nature, 'version' as revision, count() as n,
               avg(abs(n.value - p.value)) as mean_abs, max(abs(n.value - p.value)) as max_abs
        from new_versions as n inner join previous_versions as p on p.ukey = n.ukey and p.version = n.version - 1
        group by n.nature
    ),
    upgraded as (
        select ts, nature, value from {db:Identifier}.measurements
        where source = {source:String} and metric = {metric:String} and nature not like 'Données temps réel%'
          and inserted_at >= {start:DateTime64(3, 'UTC')} and inserted_at < {end:DateTime64(3, 'UTC')}
    ),
    realtime as (
        select ts, tupleElement(argMax(tuple(value), version), 1) as value from {db:Identifier}.measurements
        where source = {source:String} and metric = {metric:String} and nature like 'Données temps réel%'
          and ts in (select ts from upgraded)
        group by ts
    ),
    nature_upgrades as (
        select u.nature as nature, 'nature' as revision, count() as n,
               avg(abs(u.value - r.value)) as mean_abs, max(abs(u.value - r.value)) as max_abs
        from upgraded as u inner join realtime as r on r.ts = u.ts
        group by u.nature
    )
    select * from same_nature union all select * from nature_upgrades
    """
    return store.query_df(sql, {"source": source, "metric": metric, "start": start, "end": end})


def revisions(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The revision checks, one per (nature, revision) row of :func:`load_revisions` ('all' when none)."""
    out = [
        check("revisions", float(r.n), "ok", {"mean_abs": _num(r.mean_abs), "max_abs": _num(r.max_abs)},
              scope=f"{r.nature}|{r.revision}", expected=None)
        for r in df.itertuples()
    ]
    return out or [check("revisions", 0.0, "ok", {}, scope="all", expected=None)]


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 3) if np.isfinite(f) else None


def to_frame(checks: list[dict[str, Any]], now: datetime, run_id: str, source: str, metric: str) -> pd.DataFrame:
    """Rows for ``data_quality``."""
    rows = [
        {
            "checked_at": pd.Timestamp(now),
            "run_id": run_id,
            "source": source,
            "metric": metric,
            "check": c["check"],
            "scope": c["scope"],
            "value": float(c["value"]) if np.isfinite(c["value"]) else 1e12,
            "expected": c.get("expected"),
            "status": c["status"],
            "details": json.dumps(c.get("details", {}), default=str),
        }
        for c in checks
    ]
    return pd.DataFrame(rows, columns=COLUMNS)

"""Read "the series" a stage works on from the store.

Per timestamp: the latest version of the best available nature (définitives > consolidées >
temps réel > anything else), so a consolidated revision supersedes the real-time value; a value
flagged implausible (shared/plausibility.py) leaves the instant without a value.  The one definition
is the parameterised view ``series`` in ch/init/007.series.sql; every reader here goes through it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import pandas as pd

from shared.store import Store
from shared.timeutil import utc_datetime

if TYPE_CHECKING:
    from shared.settings import Settings

# Bounds that stand for "no bound" (the view's parameters are all required).
NO_START = datetime(1970, 1, 1, tzinfo=UTC)
NO_END = datetime(2200, 1, 1, tzinfo=UTC)

# The view called for the series bound as {source:String}/{metric:String} over [{start}, {end}),
# as known at {as_of} (NO_END = now), best nature ({nature} = '') or one nature.
SERIES_SQL = """{db:Identifier}.series(
    source = {source:String}, metric = {metric:String},
    start = {start:DateTime64(3, 'UTC')}, end = {end:DateTime64(3, 'UTC')},
    as_of = {as_of:DateTime64(3, 'UTC')}, nature = {nature:String})"""

# The view of the plausibility verdict known at {as_of} on each stored version (ts, metric, ukey, version, reason)
# of {source} ({metric} = '' for all its metrics) over [{start}, {end}); a version it does not list is plausible.
VERDICTS_SQL = """{db:Identifier}.measurement_verdicts(
    source = {source:String}, metric = {metric:String},
    start = {start:DateTime64(3, 'UTC')}, end = {end:DateTime64(3, 'UTC')}, as_of = {as_of:DateTime64(3, 'UTC')})"""

# CTE ``actuals(ts, actual)``: the series (as known now) for {source}/{metric} over [{start}, {end}).
# Shared by every reader that compares forecasts with actuals, so they all agree on what "the actual"
# is; an implausible actual is NULL, so it is never scored.
ACTUALS_CTE = """
actuals as (
    select ts, value as actual
    from {db:Identifier}.series(
        source = {source:String}, metric = {metric:String},
        start = {start:DateTime64(3, 'UTC')}, end = {end:DateTime64(3, 'UTC')},
        as_of = toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), nature = '')
)"""


# The three levels of fresh data (freshness_status), "ok" below the first.
Freshness = Literal["ok", "late", "stale", "too_old"]


def data_age_s(newest: datetime, now: datetime) -> float:
    """Seconds from the newest valid value's timestamp (:func:`latest_valid_ts`) to ``now``: the one measure of
    how fresh the data is, for detect's freshness check, ``/health`` and ``powersense_data_freshness_seconds``."""
    return (utc_datetime(now) - utc_datetime(newest)).total_seconds()


def freshness_status(age_s: float, settings: Settings) -> Freshness:
    """The one scale of fresh data (``Settings.freshness_levels``): ``late`` past ``dq_freshness_max_min`` (detect's
    check warns), ``stale`` past ``query_max_data_age_s`` (the check fails, ``/health`` is degraded,
    PowerSenseDataStale, dbt's freshness warning), ``too_old`` past ``forecast_max_staleness_hours`` (the model is
    not used; PowerSenseDataStaleCritical, dbt's error)."""
    levels = settings.freshness_levels()
    order: tuple[Freshness, ...] = ("too_old", "stale", "late")
    for level in order:
        if age_s > levels[level]:
            return level
    return "ok"


def latest_valid_ts(store: Store, source: str, metric: str) -> datetime | None:
    """The newest instant of the series with a value, at most 35 days before its newest stored
    timestamp; None when there is none: what "data is fresh" measures, for ``/health``, the freshness gauge and
    detect's cleaned series. A withdrawn (NULL) or implausible value (a feed stuck at 0 MW) is no fresh data.
    The query is the view ``series_latest_valid`` (ch/init/007.series.sql), which dbt's source freshness and
    Grafana's freshness panel read too."""
    value = store.scalar("select ts from {db:Identifier}.series_latest_valid(source = {source:String}, "
                         "metric = {metric:String})", {"source": source, "metric": metric})
    return utc_datetime(value) if value is not None else None


def load_series(
    store: Store,
    source: str,
    metric: str,
    start: datetime | None = None,
    end: datetime | None = None,
    as_of: datetime | None = None,
) -> pd.DataFrame:
    """Columns ``ts`` (UTC), ``value`` (NULL or implausible → NaN), ``nature``, ``version``, ``flag``,
    ``raw_value``.

    ``start <= ts < end``.  ``flag`` is the plausibility reason of the chosen version ('' =
    plausible; otherwise ``value`` is NaN and ``raw_value`` is what the source sent).  ``as_of``
    restricts to versions inserted, and verdicts made, at or before that time (what was known then).
    """
    sql = f"select ts, value, nature, version, flag, raw_value from {SERIES_SQL} order by ts"
    params = {
        "source": source,
        "metric": metric,
        "start": start or NO_START,
        "end": end or NO_END,
        "as_of": as_of or NO_END,
        "nature": "",
    }
    df = store.query_df(sql, params)
    if df.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "value": pd.Series(dtype=float),
                             "nature": pd.Series(dtype=str), "version": pd.Series(dtype="uint64"),
                             "flag": pd.Series(dtype=str), "raw_value": pd.Series(dtype=float)})
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["raw_value"] = pd.to_numeric(df["raw_value"], errors="coerce")
    return df

"""Read "the series" a stage works on from the store.

Per timestamp: the latest version of the best available nature (définitives > consolidées >
temps réel > anything else), so a consolidated revision supersedes the real-time value; a value
flagged implausible (shared/plausibility.py) leaves the instant without a value.  The one definition
is the parameterised view ``series`` in ch/init/007.series.sql; every reader here goes through it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from shared.store import Store
from shared.timeutil import utc_datetime

# Bounds that stand for "no bound" (the view's parameters are all required).
NO_START = datetime(1970, 1, 1, tzinfo=UTC)
NO_END = datetime(2200, 1, 1, tzinfo=UTC)

# The view called for the series bound as {source:String}/{metric:String} over [{start}, {end}),
# as known at {as_of} (NO_END = now), best nature ({nature} = '') or one nature.
SERIES_SQL = """{db:Identifier}.series(
    source = {source:String}, metric = {metric:String},
    start = {start:DateTime64(3, 'UTC')}, end = {end:DateTime64(3, 'UTC')},
    as_of = {as_of:DateTime64(3, 'UTC')}, nature = {nature:String})"""

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


# How far before the newest stored timestamp "the newest valid value" is looked for: past it, none.
FRESHNESS_LOOKBACK = timedelta(days=35)


def latest_valid_ts(store: Store, source: str, metric: str, newest: datetime) -> datetime | None:
    """The newest instant of the series with a value, at most :data:`FRESHNESS_LOOKBACK` before ``newest`` (the
    newest stored timestamp of that series): what "data is fresh" means for ``/health`` and the freshness gauge,
    as for detect's cleaned series. A withdrawn (NULL) or implausible value (a feed stuck at 0 MW) is no fresh
    data; the newest stored timestamp counted them."""
    value = store.scalar(
        f"select max(ts) from {SERIES_SQL} where value is not null having count() > 0",
        {"source": source, "metric": metric, "start": newest - FRESHNESS_LOOKBACK,
         "end": newest + timedelta(milliseconds=1), "as_of": NO_END, "nature": ""},
    )
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

"""Read "the series" a stage works on from the store.

Per timestamp: the latest version of the best available nature (définitives > consolidées >
temps réel > anything else), so a consolidated revision supersedes the real-time value.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from shared.store import Store

NATURE_RANK_SQL = """
multiIf(nature like 'Données définitives%', 3, nature like 'Données consolidées%', 2,
        nature like 'Données temps réel%', 1, 0)
"""


# CTE ``actuals(ts, actual)``: per instant, the latest version of the best nature, for the series
# bound as {source:String}/{metric:String} over [{start}, {end}). Shared by every reader that compares
# forecasts with actuals, so they all agree on what "the actual" is.
ACTUALS_CTE = f"""
actuals as (
    select ts, argMax(value, (nature_rank, version, inserted_at)) as actual
    from (
        select ts, value, version, inserted_at, {NATURE_RANK_SQL} as nature_rank
        from {{db:Identifier}}.measurements
        where source = {{source:String}} and metric = {{metric:String}}
          and ts >= {{start:DateTime64(3, 'UTC')}} and ts < {{end:DateTime64(3, 'UTC')}}
    )
    group by ts
)"""


def load_series(
    store: Store,
    source: str,
    metric: str,
    start: datetime | None = None,
    end: datetime | None = None,
    as_of: datetime | None = None,
) -> pd.DataFrame:
    """Columns ``ts`` (UTC), ``value`` (NULL → NaN), ``nature``, ``version``; ``start <= ts < end``.

    ``as_of`` restricts to versions inserted at or before that time (what was known then).
    """
    sql = f"""
    with known_versions as (
        select ts, nature as n, value as v, version as ver, inserted_at as ins, {NATURE_RANK_SQL} as nature_rank
        from {{db:Identifier}}.measurements
        where source = {{source:String}} and metric = {{metric:String}}
          and ts >= {{start:DateTime64(3, 'UTC')}} and ts < {{end:DateTime64(3, 'UTC')}}
          and inserted_at <= {{as_of:DateTime64(3, 'UTC')}}
    )
    select ts,
           -- CTE columns are renamed so that an output alias never shadows an argMax argument
           argMax(v, (nature_rank, ver, ins)) as value,
           argMax(n, (nature_rank, ver, ins)) as nature,
           argMax(ver, (nature_rank, ver, ins)) as version
    from known_versions
    group by ts
    order by ts
    """
    params = {
        "source": source,
        "metric": metric,
        "start": start or datetime(1970, 1, 1),
        "end": end or datetime(2200, 1, 1),
        "as_of": as_of or datetime(2200, 1, 1),
    }
    df = store.query_df(sql, params)
    if df.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "value": pd.Series(dtype=float),
                             "nature": pd.Series(dtype=str), "version": pd.Series(dtype="uint64")})
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df

"""The original seasonal z-score baseline.

Per (local day of week, hour, minute) bucket, the mean and standard deviation of the same bucket over
the previous ``lookback_weeks`` weeks; a point with |z| >= threshold is a spike (z > 0) or a dip
(z < 0), and a run of >= ``level_shift_min_steps`` same-sign flags is a level shift (earlier rows of
the run are superseded, as in the residual detector). It needs no forecast, so the detect stage falls
back to it when the residual detector cannot run; the evaluation uses it as the floor to beat. It has
no notion of stuck or missing values (absent points are simply skipped), as in the original design.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from shared.calendar import TZ, wall_clock
from shared.detection.residual import ROW_COLUMNS


def detect_zscore(
    x: pd.Series,
    lookback_weeks: int = 8,
    threshold: float = 3.0,
    level_shift_min_steps: int = 8,
    min_samples: int = 3,
    detect_from: pd.Timestamp | None = None,
    tz: str = TZ,
) -> pd.DataFrame:
    """Flag points of a regular UTC grid ``x`` whose bucket z-score is extreme; rows as ``ROW_COLUMNS``.
    Buckets are the same local (day of week, time) of ``tz``, the series' zone."""
    if x.empty:
        return pd.DataFrame(columns=ROW_COLUMNS)
    wall = wall_clock(x.index, tz)
    by_wall = pd.Series(x.to_numpy(dtype=float), index=wall)
    by_wall = by_wall[~by_wall.index.duplicated(keep="last")]
    # same local (dow, hour, minute) k weeks earlier, k = 1..lookback: only the past is used
    past = np.vstack([by_wall.reindex(wall - pd.Timedelta(weeks=k)).to_numpy() for k in range(1, lookback_weeks + 1)])
    count = np.sum(~np.isnan(past), axis=0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # buckets without history are NaN, handled below
        mean = np.nanmean(past, axis=0)
        std = np.nanstd(past, axis=0, ddof=1)
    vals = x.to_numpy(dtype=float)
    ok = (count >= min_samples) & (std > 0) & ~np.isnan(vals)
    z = np.where(ok, (vals - mean) / np.where(std > 0, std, 1.0), 0.0)
    flag = np.abs(z) >= threshold
    if detect_from is not None:
        flag &= x.index >= detect_from
    rows: list[dict[str, object]] = []
    run_sign, run_start = 0, -1
    for i in np.flatnonzero(flag):
        sign = 1 if z[i] > 0 else -1
        if sign != run_sign or i == 0 or not flag[i - 1]:
            run_sign, run_start = sign, i
        run_len = i - run_start + 1
        kind = ("spike" if sign > 0 else "dip") if run_len < level_shift_min_steps else "level_shift"
        if run_len == level_shift_min_steps:
            for r in rows[-(level_shift_min_steps - 1) :]:
                r["superseded"] = True
                rows.append({**r, "kind": "level_shift", "superseded": False, "decided_ts": x.index[i]})
        rows.append(
            {
                "ts": x.index[i],
                "kind": kind,
                "value": vals[i],
                "expected": mean[i],
                "lower": mean[i] - threshold * std[i],
                "upper": mean[i] + threshold * std[i],
                "score": z[i],
                "threshold": threshold,
                "decided_ts": x.index[i],
                "superseded": False,
            }
        )
    return pd.DataFrame(rows, columns=ROW_COLUMNS)

"""Anomaly events: runs of consecutive anomalous points of one kind (pure, light: the query function imports it).

One definition of "one anomaly" for everything that counts them: the duration that sets the severity of a missing,
stuck or interpolated block (detect), the open events the query function's gauge, the alert
``PowerSenseAnomaliesOpen`` and the data-quality dashboard count, and the events the anomaly evaluation scores.
Points at most :data:`EVENT_GAP_STEPS` grid steps apart belong to one event (one unflagged point inside an anomaly
does not split it, the evaluation's rule since it was written); a longer gap starts another.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The step of the grid detect reads: the source's native quarter-hour (eco2mix publishes one value per 15 min),
# because detect judges every published value and reports a missing quarter-hour. featurize writes this grid
# besides the forecast's (POWERSENSE_FORECAST_RESOLUTION_MIN); when the two are equal it is one grid.
DETECT_RESOLUTION_MIN = 15
EVENT_GAP_STEPS = 2
SEVERITIES = ("low", "medium", "high")  # in rising order: an event's severity is its points' highest


def event_ids(ts: pd.DatetimeIndex, step: pd.Timedelta) -> np.ndarray:
    """Per point of one kind (``ts`` sorted ascending), the number of its event: a new one after a gap of more than
    :data:`EVENT_GAP_STEPS` × ``step``."""
    # in nanoseconds whatever the index's unit: ClickHouse's DateTime64(3) arrives in milliseconds
    ns = pd.DatetimeIndex(ts).as_unit("ns").asi8
    return np.cumsum(np.r_[True, np.diff(ns) > EVENT_GAP_STEPS * step.value]) if len(ts) else np.zeros(0, dtype=int)


def events(points: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """Events of anomalous ``points`` (columns ``kind``, ``ts``, ``severity``; any order): one row per event with
    kind, start, end, points and severity (the highest of its points)."""
    columns = ["kind", "start", "end", "points", "severity"]
    if points.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for kind, grp in points.sort_values("ts").groupby("kind", sort=True):
        ts = pd.DatetimeIndex(pd.to_datetime(grp["ts"], utc=True))
        rank = grp["severity"].map({s: i for i, s in enumerate(SEVERITIES)}).fillna(0).to_numpy(dtype=int)
        frame = pd.DataFrame({"ts": ts, "rank": rank, "event": event_ids(ts, step)})
        for _, ev in frame.groupby("event"):
            out.append({"kind": str(kind), "start": ev["ts"].iloc[0], "end": ev["ts"].iloc[-1], "points": len(ev),
                        "severity": SEVERITIES[int(ev["rank"].max())]})
    return pd.DataFrame(out, columns=columns)

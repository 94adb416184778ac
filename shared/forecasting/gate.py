"""The training-data gate: which values of the series a forecast may learn from, read or copy.

One gate for every consumer — the forecast stage (training, the level network's autoregressive
inputs, the nowcast and recent-shape terms), the backtest (inputs *and* scoring) and the seasonal-naive
fallback: a value the gate rejects becomes a gap (``NaN``), and every consumer already treats a gap as
"unknown" (training skips it, the level blocks need half their steps, seasonal naive goes one week
further back to the last valid same-slot value, scoring skips it and counts it).

Why: the source once published ``consommation = 0`` for ~33 hours; those zeros went into training and into
the model's inputs (a forecast of −11 GW), seasonal naive copied them a week later and every MAPE became
``inf``. The gate rejects

* whatever the data-quality layer's plausibility check flags (``shared.plausibility``: zero/negative
  load, impossible jumps, … — its reasons are passed through; for another series its jump rule scaled to the
  series' level), and, always (also when that module is not installed), zero/negative values;
* flatlines: a run of ``forecast_flatline_steps`` or more identical consecutive values on the grid (the
  shipped 2016–2023 history has no run longer than 3 at 15 min and 2 at 30 min, so a stuck feed is the
  only way to get one);
* linear ramps: ``forecast_ramp_points`` or more consecutive, equally spaced values on one straight line (up
  to the source's rounding) — a gap the source filled by linear interpolation and published as load. The
  shipped real-time data 2020–2023 hold 26 of them, 5 to 82 interpolated quarter-hours each (409 values in
  2023, most in Oct–Nov; each year's spring-forward eve; 2022-07-05 06:00–24:00 local: a ramp 38.3 → 45.2 GW
  where the real load had its usual daily swing, and the forecast issued that noon carried the fake level into
  the next day, 10 % too low); the definitive data 2012–2019 (30 min) never has more than 4 such points in a
  row, the real-time 15-min data 5 at most outside these ramps (``make evaluate`` reports the count). The two
  anchors of a ramp are real measurements and are kept; the interpolated values between them are rejected.

Open anomalies are removed before the gate, by :func:`shared.forecasting.service.load_grid`.
No torch import here: the fallback must work when the ML stack cannot load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shared.settings import Settings

NONPOSITIVE = "non_positive"  # the same reason string as shared.plausibility
FLATLINE = "flatline"
RAMP = "linear_ramp"


@dataclass
class GateResult:
    """The gated frame (``ts, value`` with rejected values set to NaN) and what was rejected."""

    frame: pd.DataFrame
    reasons: pd.Series  # per row: '' = kept, else why the value was rejected
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        """Number of values rejected."""
        return int((self.reasons != "").sum())


def _group_size(starts: np.ndarray) -> np.ndarray:
    """Per element, the size of its group of consecutive elements; a new group starts at every True of ``starts``."""
    group = np.cumsum(starts)
    return np.bincount(group)[group]


def flatline_mask(values: np.ndarray, min_steps: int) -> np.ndarray:
    """True for every value inside a run of ``min_steps`` or more identical consecutive values (NaN breaks runs)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0 or min_steps <= 1:
        return np.zeros(n, dtype=bool)
    same = np.zeros(n, dtype=bool)
    same[1:] = (v[1:] == v[:-1]) & np.isfinite(v[1:])
    return (_group_size(~same) >= min_steps) & np.isfinite(v)


# the share of a series' values that must be written at a decimal step for it to be the series' step
RESOLUTION_SHARE = 0.99


def value_resolution(values: np.ndarray, max_decimals: int = 6) -> float:
    """The decimal step the values are published at: ``10**-d`` for the fewest decimals ``d`` that write at least
    :data:`RESOLUTION_SHARE` of the finite values exactly (1.0 for whole numbers; ``10**-max_decimals`` for values at
    full float precision). A share, not every value: one value with a decimal among 71 days of whole megawatts (a
    revision, a hand-corrected point) made the whole series' step 0.1 and split the source's lines at their rounding
    (a 35-point line read as 29)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0
    for d in range(max_decimals + 1):
        scaled = v * 10.0**d
        exact = np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled))  # float noise
        if exact.mean() >= RESOLUTION_SHARE:
            return float(10.0**-d)
    return float(10.0**-max_decimals)


def ramp_mask(ts: pd.DatetimeIndex | pd.Series, values: np.ndarray, min_points: int,
              resolution: float | None = None) -> np.ndarray:
    """True for the interior values of every run of ``min_points`` or more consecutive, equally spaced values that
    lie on one straight line (NaN and uneven spacing break runs); the run's two end values stay False.

    "On a line" allows the source's rounding: ``|v[i+1] − 2·v[i] + v[i−1]| ≤ 2·q`` with ``q`` the series' value
    resolution (:func:`value_resolution`: 1 MW for eco2mix's whole megawatts), since each rounded point may be
    off the exact line by ``q/2``. ``resolution``: ``q`` measured on more of the series than ``values`` (a window's
    check takes the whole history's, as the detector does); None = measured on ``values``.
    """
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 3 or min_points < 3:
        return np.zeros(n, dtype=bool)
    t = pd.DatetimeIndex(ts).asi8
    tol = 2.0 * (value_resolution(v) if resolution is None else resolution)
    finite = np.isfinite(v)
    # straight[i]: v[i-1], v[i], v[i+1] finite, equally spaced and collinear (interior point i of a ramp)
    straight = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore"):  # inf − inf
        straight[1:-1] = (finite[2:] & finite[1:-1] & finite[:-2] & ((t[2:] - t[1:-1]) == (t[1:-1] - t[:-2]))
                          & (np.abs(v[2:] - 2 * v[1:-1] + v[:-2]) <= tol))
    # a group is one non-interior value and the k interior ones after it; k interior points span k + 2 values
    return straight & (_group_size(~straight) + 1 >= min_points)


def _plausibility_reasons(frame: pd.DataFrame, settings: Settings, metric: str | None) -> pd.Series | None:
    """Reasons from the data-quality layer's plausibility check (``shared.plausibility``), or None when it
    does not apply to ``metric`` (its bounds are France's national load in MW) or is not installed. ``metric``
    None (another series): its jump rule scaled to the series' median (``plausibility.scaled_to``)."""
    try:
        from shared.plausibility import PlausibilityParams, plausibility_flags, scaled_to
    except ImportError:  # the data-quality layer is optional for the gate; the built-in checks still run
        return None
    params = PlausibilityParams.from_settings(settings)
    if metric is None:
        values = frame["value"].to_numpy(dtype=float)
        positive = values[np.isfinite(values) & (values > 0)]
        if not positive.size:
            return None
        params = scaled_to(params, float(np.median(positive)))
    elif not params.applies_to(metric):
        return None
    flags = plausibility_flags(frame[["ts", "value"]].reset_index(drop=True), params)
    return pd.Series(np.asarray(flags, dtype=object), index=frame.index).fillna("").astype(str)


def gate(frame: pd.DataFrame, settings: Settings, metric: str | None = None,
         flatline_steps: int | None = None) -> GateResult:
    """Reject implausible values of a ``ts, value`` frame sorted by ``ts`` (see module docstring).

    ``metric``: the series' metric, to apply the plausibility bounds of the data-quality layer where they are
    defined (France's national load); None for a foreign series (another operator's file, a generic CSV): the
    jump rule scaled to its median level (``shared.plausibility.scaled_to``; France's MW bounds do not apply), and
    the built-in checks (non-positive values, flatlines, linear ramps). NaN values stay NaN and are not counted.
    """
    out = frame.copy()
    values = out["value"].to_numpy(dtype=float)
    reasons = pd.Series("", index=out.index, dtype=object)
    present = np.isfinite(values)
    if present.any():
        pl = _plausibility_reasons(out, settings, metric)
        if pl is not None:
            reasons[:] = pl.to_numpy()
        steps = settings.forecast_flatline_steps if flatline_steps is None else flatline_steps
        flat = flatline_mask(values, steps)
        reasons[(reasons == "") & flat] = FLATLINE
        reasons[(reasons == "") & ramp_mask(out["ts"], values, settings.forecast_ramp_points)] = RAMP
        reasons[(reasons == "") & present & (values <= 0)] = NONPOSITIVE
    bad = (reasons != "").to_numpy()
    out.loc[bad, "value"] = np.nan
    counts = {str(k): int(v) for k, v in reasons[reasons != ""].value_counts().items()}
    return GateResult(out, reasons, counts)


# --- strict JSON -------------------------------------------------------------------------------------
def finite_or_none(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing or not finite (JSON has no NaN/Infinity)."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def strict(obj: Any) -> Any:
    """A copy of ``obj`` where every non-finite float is None and numpy scalars are Python ones.

    Whoever computes a metric should say *why* it is None next to it; this is the last line of defence so
    that ``json.dumps(..., allow_nan=False)`` never fails on a report.
    """
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return finite_or_none(obj)
    return obj

"""Residual detector: each new actual against a very-short-lead expectation.

Expectation (why): a day-ahead forecast misses by ~2 % (≈1 GW), which would hide a 3 % spike. What a
forecast gets right at short range is the *shape* of the next quarter-hour. So the expected value of
point t is the last normal observation carried forward by the forecast's own change:

    expected_t = x_ref + Σ_{ref<j<=t} (Δf_j + b) + m_h

where ``f`` is the most recent forecast issued at or before t that covers the step (lead 15–75 min
with the hourly forecast run: the freshest information the pipeline had when t happened), ``x_ref``
the last point judged normal (lead 15 min), ``b`` a clipped moving bias of recent residual changes
(a ramp steeper than forecast) and ``m_h`` the median residual of that local hour. This is "the most
recent forecast corrected by the current residual level". Residuals are scaled robustly (median / MAD
per local hour over ``calibration_days``, or over the last 3 days if larger — a DST switch moves the
lighting ramps — flagged points excluded; floor 0.1 %, cap 0.75 % of the value).

Classification, per point, decided from data available when the point arrives (causal):
* ``spike``/``dip``: a jump |z| >= onset_z; the run continues until a jump back of about the same
  relative size (or, while short, until the value is nearer the old level). When the *return* is what
  trips the test, the short excursion before it (which stayed under the threshold) is flagged instead.
* ``level_shift``: such a run lasting >= level_shift_min_minutes (its spike/dip rows are superseded), or a
  step of >= shift_z after which the anchored level stays shifted for :data:`SLOW_STEPS` steps (four
  hours of a 15-min series; too small to alarm at once). The run's span is a time, turned into steps at
  the series' resolution; the slow test's is a count of points, which is what holds its false-alarm rate.
  A run longer than max_run_hours is accepted as the new normal.
* ``flatline``: an exactly repeated value while the expectation moved (>= flat_z) — in a series where single
  repeats are rare (at most ``max_chance_repeats_per_week`` in its past) — or >= flat_min_repeats repeats in a row.
* ``missing``: a grid point without a value once it is due (see :func:`missing_points`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shared.calendar import FRANCE, TZ, Calendar, day_type, is_fallback_gap, wall_clock
from shared.settings import Settings, get_settings

__all__ = [
    "ROW_COLUMNS", "TZ", "ResidualParams", "day_type", "detect_residual", "infer_step_min", "is_fallback_gap",
    "missing_points", "profile", "profile_delta", "profile_level", "regular_grid", "wall_clock",
]

# The slow level-shift test compares the median anchored level of the last SLOW_STEPS points with the SLOW_STEPS
# before. A count, not a time: its false alarms depend on how many points the medians hold. Made a time (4 h = 4
# points of an hourly series) it doubled the clean-year false alarms of PJM East (0.98 → 1.90 a week) and raised
# Great Britain's half-hourly (0.98 → 1.57) for level-shift recall it did not keep (evaluate-anomalies, seed 42).
SLOW_STEPS = 16
ROW_COLUMNS = ["ts", "kind", "value", "expected", "lower", "upper", "score", "threshold", "decided_ts", "superseded"]
# ResidualParams field ← Settings field: the tunable thresholds have their one default in Settings
_FROM_SETTINGS = {
    "calibration_days": "detect_calibration_days",
    "onset_z": "detect_onset_z",
    "flat_z": "detect_flat_z",
    "flat_min_repeats": "detect_flat_min_repeats",
    "level_shift_min_minutes": "detect_level_shift_min_minutes",
    "max_run_hours": "detect_max_run_hours",
    "shift_z": "detect_level_shift_z",
}


@dataclass(frozen=True, kw_only=True)
class ResidualParams:
    """Thresholds of the residual detector.

    The tunable ones (no default here) come from the settings' ``detect_*`` fields through
    :meth:`from_settings`; the others are constants of the method, defined only here.
    """

    calibration_days: int
    onset_z: float
    flat_z: float
    flat_min_repeats: int
    level_shift_min_minutes: float
    max_run_hours: float
    min_calibration_points: int = 28
    max_gap_steps: int = 4
    end_z: float = 3.0
    anchor_points: int = 1
    shift_z: float
    recent_days: int = 3
    bias_alpha: float = 0.3
    sigma_floor_frac: float = 0.001
    sigma_cap_frac: float = 0.0075
    # lone exact repeats a week above which one is chance, not a stuck feed: the whole detector's false-alarm
    # budget, twice France's rate (README, *Spain, and values that repeat by chance*; 2 a week was worse on NL)
    max_chance_repeats_per_week: float = 1.0

    def level_shift_min_steps(self, step_min: int) -> int:
        """Steps an anomalous run lasts before it is a level shift, at a resolution of ``step_min`` minutes.

        A time, not a step count: counted in steps, the 15-min series' two hours became eight hours of an
        hourly series, where a six-hour shift was then called a dip."""
        return max(2, math.ceil(self.level_shift_min_minutes / step_min))

    @classmethod
    def from_settings(cls, settings: Settings) -> ResidualParams:
        """The detector's parameters from a Settings object (the only place their defaults live)."""
        return cls(**{name: getattr(settings, attr) for name, attr in _FROM_SETTINGS.items()})


def regular_grid(series: pd.DataFrame, step_min: int | None = None) -> pd.Series:
    """Actuals (``ts``, ``value``) on a regular UTC grid; absent points are NaN. Step inferred if None."""
    s = series.dropna(subset=["ts"]).drop_duplicates("ts", keep="last").set_index("ts")["value"].astype(float)
    s = s.sort_index()
    if s.empty:
        return s
    step = step_min or infer_step_min(s.index)
    grid = pd.date_range(s.index[0], s.index[-1], freq=f"{step}min")
    return s.reindex(grid)


def infer_step_min(index: pd.DatetimeIndex) -> int:
    """Most common spacing in minutes (15 for eco2mix 2020+, 30 for definitive 2012–2019)."""
    if len(index) < 3:
        return 15
    diffs = np.diff(index.asi8) // 60_000_000_000
    diffs = diffs[diffs > 0]
    return int(pd.Series(diffs).mode().iloc[0]) if len(diffs) else 15


def profile_delta(x: pd.Series, n_days: int = 4, search_days: int = 42,
                  day_types: pd.Series | None = None, calendar: Calendar = FRANCE) -> pd.Series:
    """Expected change per step (see :func:`profile`)."""
    return profile(x, n_days, search_days, day_types, calendar)[0]


def profile_level(x: pd.Series, n_days: int = 4, search_days: int = 42, calendar: Calendar = FRANCE) -> pd.Series:
    """Expected level per step (see :func:`profile`)."""
    return profile(x, n_days, search_days, calendar=calendar)[1]


def profile(x: pd.Series, n_days: int = 4, search_days: int = 42,
            day_types: pd.Series | None = None, calendar: Calendar = FRANCE) -> tuple[pd.Series, pd.Series]:
    """Expected change per step from a seasonal profile: the median, over the ``n_days`` most recent
    earlier days of the same day type (see :func:`day_type`), of that day's change at the same local
    wall-clock time.

    Only past days are used, so for any lead below one day it is what a forecast issued before t
    could have known. The median of changes (not of levels) keeps one odd day — a glitch, an
    interpolated stretch, a missing block — from echoing into today's expectation. Used where the
    forecasts table has nothing for a point, and in the evaluation when no product forecaster is used.

    A reference day across a DST change is read at the same wall-clock time, or, for a time of day where that has
    done worse, at the same instant on the fixed clock (:data:`FIXED_CLOCK_GAIN`): loads switched by a clock that
    keeps standard time all year move an hour on the wall clock at each change.

    ``day_types``: the day type per local date (naive midnight → :func:`day_type` class), as detect reads it
    from featurize's calendar columns; dates it lacks (the search before the data starts) take
    :func:`day_type`, the same definition. ``calendar``: the series' local zone and holidays (France's, the
    product's series, by default; the evaluation of another series passes its own).
    """
    if x.empty:
        return x.copy(), x.copy()
    naive = wall_clock(x.index, calendar.tz)
    by_wall = pd.Series(x.to_numpy(dtype=float), index=naive)
    # fall-back day: the wall hour 02:00–02:45 exists twice; keep the occurrence with data (the last)
    by_wall = by_wall[~by_wall.index.duplicated(keep="last")]
    step = x.index[1] - x.index[0] if len(x) > 1 else pd.Timedelta(minutes=15)
    # the previous step's wall time, so a DST night compares like with like (01:45 -> 03:00 local)
    naive_prev = wall_clock(x.index - step, calendar.tz)
    dates = naive.normalize()
    all_days = pd.date_range(dates.min() - pd.Timedelta(days=search_days), dates.max(), freq="D")
    types = pd.Series(day_type(all_days, calendar.holidays), index=all_days)
    if day_types is not None and len(day_types):
        known = day_types[day_types.index.isin(all_days)]
        types[known.index] = known.to_numpy()
    # lag (in days) of the k-th most recent same-type day, per local date
    lag_table: dict[pd.Timestamp, list[int]] = {}
    for d in dates.unique():
        t = types[d]
        lags = [k for k in range(1, search_days + 1) if types.get(d - pd.Timedelta(days=k)) == t][:n_days]
        lag_table[d] = lags + [0] * (n_days - len(lags))
    lag_matrix = np.array([lag_table[d] for d in dates]).T  # n_days x n
    deltas = np.full(lag_matrix.shape, np.nan)
    levels = np.full(lag_matrix.shape, np.nan)
    # the same reference day read on the clock that does not change with DST (the same instant `lag` days
    # earlier): where the reference day's UTC offset differs from the target's, it is another candidate
    by_utc = x.astype(float)
    offset = _utc_offset_minutes(x.index, calendar.tz)
    fixed_deltas = np.full(lag_matrix.shape, np.nan)
    fixed_levels = np.full(lag_matrix.shape, np.nan)
    across = np.zeros(lag_matrix.shape, dtype=bool)
    for r in range(n_days):
        lag = pd.to_timedelta(lag_matrix[r], unit="D")
        now_lag = by_wall.reindex(naive - lag).to_numpy()
        prev_lag = by_wall.reindex(naive_prev - lag).to_numpy()
        deltas[r] = np.where(lag_matrix[r] > 0, now_lag - prev_lag, np.nan)
        levels[r] = np.where(lag_matrix[r] > 0, now_lag, np.nan)
        ref = x.index - lag
        across[r] = (lag_matrix[r] > 0) & (_utc_offset_minutes(ref, calendar.tz) != offset)
        if across[r].any():
            now_fixed = by_utc.reindex(ref).to_numpy()
            fixed_deltas[r] = np.where(across[r], now_fixed - by_utc.reindex(ref - step).to_numpy(), np.nan)
            fixed_levels[r] = np.where(across[r], now_fixed, np.nan)
    if across.any():
        actual = by_utc.to_numpy() - by_utc.reindex(x.index - step).to_numpy()
        fixed = _fixed_clock_slots(naive, actual, deltas, fixed_deltas, across)
        use = across & fixed[None, :]
        deltas = np.where(use, fixed_deltas, deltas)
        levels = np.where(use, fixed_levels, levels)
    return pd.Series(_nanmedian(deltas), index=x.index), pd.Series(_nanmedian(levels), index=x.index)


# A time of day reads reference days across a DST change on the clock that does not change (standard time) once
# it has done better there than the wall clock: by this factor in summed absolute error, over at least this many
# earlier cross-DST readings of that time of day. Victoria's load (Australia) switches off-peak water heating on at
# 23:00 standard time all year, a 270 MW step, while its people follow the wall clock: read on the wall clock the
# step moves an hour at each change, and the weeks after were the detector's densest false alarms (evaluate-anomalies
# 2014: 46 of its 86 clean-period alarms in April and October). France's load follows the wall clock.
FIXED_CLOCK_GAIN = 0.8
FIXED_CLOCK_MIN_READINGS = 8


def _utc_offset_minutes(index: pd.DatetimeIndex, tz: str) -> np.ndarray:
    """The UTC offset (minutes) of each instant in ``tz``."""
    local = index.tz_convert(tz)
    return np.asarray((local.tz_localize(None) - index.tz_convert("UTC").tz_localize(None)) // pd.Timedelta(minutes=1))


def _fixed_clock_slots(naive: pd.DatetimeIndex, actual: np.ndarray, wall: np.ndarray, fixed: np.ndarray,
                       across: np.ndarray) -> np.ndarray:
    """Per point: whether its time of day reads cross-DST reference days on the fixed clock (see
    :data:`FIXED_CLOCK_GAIN`), decided from the earlier points of that time of day only (causal)."""
    ok = across & np.isfinite(wall) & np.isfinite(fixed) & np.isfinite(actual)[None, :]
    err_wall = np.where(ok, np.abs(actual[None, :] - wall), 0.0).sum(axis=0)
    err_fixed = np.where(ok, np.abs(actual[None, :] - fixed), 0.0).sum(axis=0)
    frame = pd.DataFrame({"slot": naive.hour * 60 + naive.minute, "wall": err_wall, "fixed": err_fixed,
                          "n": ok.sum(axis=0)})
    before = frame.groupby("slot")[["wall", "fixed", "n"]].cumsum() - frame[["wall", "fixed", "n"]]
    return np.asarray((before["n"] >= FIXED_CLOCK_MIN_READINGS)
                      & (before["fixed"] < FIXED_CLOCK_GAIN * before["wall"]))


def _nanmedian(a: np.ndarray) -> np.ndarray:
    """Column medians ignoring NaN; NaN where a column has no value."""
    have = np.any(~np.isnan(a), axis=0)
    out = np.full(a.shape[1], np.nan)
    out[have] = np.nanmedian(a[:, have], axis=0)
    return out


def detect_residual(
    x: pd.Series,
    expected_delta: pd.Series,
    params: ResidualParams | None = None,
    detect_from: pd.Timestamp | None = None,
    tz: str = TZ,
) -> pd.DataFrame:
    """Run the residual detector over a regular grid.

    ``x``: actuals on a regular UTC grid (NaN = absent). ``expected_delta``: expected change from the
    previous step to each step (Δ of the forecast), same index, NaN where unknown. Points before
    ``detect_from`` only calibrate. ``params`` default to the settings' ``detect_*`` values. Returns one
    row per flagged point (``ROW_COLUMNS``); ``decided_ts`` is the grid time of the point whose arrival
    decided the row, ``superseded`` marks spike/dip rows later reclassified as a level shift. Missing
    points are not reported here. ``tz``: the series' local zone (its hours calibrate separately).
    """
    p = params or ResidualParams.from_settings(get_settings())
    if len(x) == 0:
        return pd.DataFrame(columns=ROW_COLUMNS)
    state = _ResidualState.start(x, expected_delta, p, detect_from, tz)
    for i in range(len(x)):
        state.step(i)
    out = pd.DataFrame(state.rows, columns=ROW_COLUMNS)
    if not out.empty:
        out = out.drop_duplicates(["ts", "kind"], keep="first").reset_index(drop=True)
    return out


@dataclass
class _Calibration:
    """Per local hour, the median and robust scale (MAD) of the test residual at normal points.

    Residuals of the current local day are buffered and enter the pooled history when the day closes,
    so a point is never judged against a scale that already contains itself. ``typical`` is the series' own
    scale relative to its level: the median over hours of each hour's long scale divided by its median level
    (France's 15-minute load: ~0.5 %; a noisy hourly series such as Switzerland's total load: ~6 %).
    """

    p: ResidualParams
    history: list[deque[np.ndarray]]
    levels: list[deque[np.ndarray]]
    day_buffer: list[list[tuple[float, float]]]
    med: np.ndarray
    sig: np.ndarray
    typical: float = 0.0  # 0 until an hour is calibrated: the cap is then the configured one

    @classmethod
    def empty(cls, p: ResidualParams) -> _Calibration:
        return cls(p, [deque(maxlen=p.calibration_days) for _ in range(24)],
                   [deque(maxlen=p.calibration_days) for _ in range(24)], [[] for _ in range(24)],
                   np.full(24, np.nan), np.full(24, np.nan))

    def add(self, hour: int, residual: float, level: float) -> None:
        """A normal point's residual and observed level (enter the scales when its day closes)."""
        self.day_buffer[hour].append((residual, level))

    def close_day(self) -> None:
        """Move the day's residuals into the history and recompute every hour's median and scale."""
        p = self.p
        relative = np.full(24, np.nan)
        for h in range(24):
            if self.day_buffer[h]:
                day = np.asarray(self.day_buffer[h])
                self.history[h].append(day[:, 0])
                self.levels[h].append(np.abs(day[:, 1]))
                self.day_buffer[h] = []
            pooled = np.concatenate(list(self.history[h])) if self.history[h] else np.empty(0)
            if pooled.size >= p.min_calibration_points:
                m = float(np.median(pooled))
                s_long = float(np.median(np.abs(pooled - m)) * 1.4826)
                # the last few days alone: a scale that reacts within days when the expectation gets
                # worse (a DST switch moves the lighting ramps against wall-clock profiles)
                recent = np.concatenate(list(self.history[h])[-p.recent_days :])
                s_recent = float(np.median(np.abs(recent - m)) * 1.4826) if recent.size >= 8 else 0.0
                self.med[h], self.sig[h] = m, max(s_long, s_recent)
                level = float(np.median(np.concatenate(list(self.levels[h]))))
                relative[h] = s_long / level if level > 0 else np.nan
            else:
                self.med[h], self.sig[h] = np.nan, np.nan
        have = relative[~np.isnan(relative)]
        self.typical = float(np.median(have)) if have.size else 0.0


@dataclass
class _Run:
    """An open spike/dip/level-shift run (``sign`` 0: none)."""

    sign: int = 0
    jump: float = 0.0  # the residual of the onset
    rel: float = 0.0  # the onset's size relative to the expectation
    length: int = 0
    last: float = math.nan  # the last (anomalous) observation: the run's reference
    acc: float = 0.0  # expected change accumulated since ``last``
    rows: list[int] = field(default_factory=list)  # row numbers of the run's points (reclassified together)


@dataclass
class _Point:
    """What the detector knows about point i when it arrives."""

    i: int
    hour: int
    x: float
    d: float  # expected change into this step
    anchor: float
    have_anchor: bool
    calibrated: bool
    sigma: float  # scale of this hour (NaN when not calibrated)
    m: float  # median residual of this hour (0 when not calibrated)
    expected: float
    e: float  # residual
    z: float


@dataclass
class _ResidualState:
    """The detector's state between points and its named transitions (see the module docstring)."""

    p: ResidualParams
    idx: pd.DatetimeIndex
    vals: np.ndarray
    dexp: np.ndarray
    hours: np.ndarray
    day_codes: np.ndarray
    start_i: int
    max_run: int
    shift_min: int  # level_shift_min_steps at this series' resolution
    steps_per_week: float
    cal: _Calibration
    path_at: np.ndarray  # the expected path at every step (the return test rebuilds old expectations)
    rows: list[dict[str, Any]] = field(default_factory=list)
    path: float = 0.0  # cumulative expected change (the forecast's shape) since the path started
    path_ok: bool = False
    levels: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=8))  # (i, x - path), normal pts
    long_levels: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=2 * SLOW_STEPS))
    gap: int = 0  # steps since the last normal point
    absent: int = 0  # consecutive steps without a usable observation (missing or stuck)
    reps: int = 0  # repeats of the same raw value in a row
    pairs: int = 0  # consecutive observed pairs seen so far
    lone_repeats: int = 0  # of which ended a run of exactly one repeat
    bias: float = 0.0  # smoothed residual change per step at recent normal points
    flat_flagged: set[int] = field(default_factory=set)
    run: _Run = field(default_factory=_Run)
    current_day: int = -1

    @classmethod
    def start(
        cls, x: pd.Series, expected_delta: pd.Series, p: ResidualParams, detect_from: pd.Timestamp | None,
        tz: str = TZ,
    ) -> _ResidualState:
        idx = x.index
        n = len(x)
        step_min = max(1, int((idx[1] - idx[0]).total_seconds() // 60)) if n > 1 else 15
        wall = wall_clock(idx, tz)
        day_codes, _ = pd.factorize(wall.normalize(), sort=True)
        dexp = expected_delta.reindex(idx).to_numpy(dtype=float)
        # no expected change across a clock change: the path restarts at the first value after it. The profile's
        # change into 03:00 on the spring-forward night is a wall-clock drop of 3 GW the load does not make; once
        # a source line before it was left out (it used to hide it), it raised a 'level shift' of 33 h (2023-03-26)
        offset = _utc_offset_minutes(idx, tz)
        change = np.flatnonzero(offset[1:] != offset[:-1]) + 1
        dexp[change] = np.nan
        # and none across the end of a fall-back night's repeated hour where the source published it once (RTE
        # publishes only its second occurrence, data/eco2mix/README.upstream.md): on 2023-10-29 the published night
        # ran 4–5 GW above RTE's own forecasts up to that hour's end, then stepped 3.4 GW down onto them at 02:00Z;
        # anchored on the repeated hour, that true value was a level shift held all day (83 points against RTE's
        # intraday forecast). A source that publishes both occurrences (NESO, ENTSO-E, PJM) keeps its expectation
        vals = x.to_numpy(dtype=float)
        for k in change[offset[change] < offset[change - 1]]:
            repeated = pd.Timedelta(minutes=int(offset[k - 1] - offset[k]))  # an hour, or 30 min (Lord Howe)
            if np.isfinite(vals[idx.searchsorted(idx[k] - repeated):k]).any():
                continue  # its first occurrence was published
            after = idx.searchsorted(idx[k] + repeated)
            if after < n:
                dexp[after] = np.nan
        return cls(
            p=p, idx=idx, vals=vals, dexp=dexp,
            hours=wall.hour.to_numpy(), day_codes=day_codes,
            start_i=0 if detect_from is None else int(idx.searchsorted(detect_from)),
            max_run=int(p.max_run_hours * 60 / step_min), cal=_Calibration.empty(p), path_at=np.zeros(n),
            shift_min=p.level_shift_min_steps(step_min), steps_per_week=7 * 24 * 60 / step_min,
        )

    # --- transitions --------------------------------------------------------------------------------
    def flag(self, i: int, kind: str, expected: float, sigma: float, z: float, thr: float, decided: int) -> int:
        """Append a flagged row; returns its row number."""
        self.rows.append(
            {
                "ts": self.idx[i],
                "kind": kind,
                "value": self.vals[i],
                "expected": expected,
                "lower": expected - thr * sigma,
                "upper": expected + thr * sigma,
                "score": z,
                "threshold": thr,
                "decided_ts": self.idx[decided],
                "superseded": False,
            }
        )
        return len(self.rows) - 1

    def drop_anchor(self) -> None:
        """Forget the anchored levels (the next observation re-anchors)."""
        self.levels.clear()
        self.long_levels.clear()

    def end_run(self) -> None:
        self.run = _Run()

    def reanchor(self, i: int, xi: float) -> None:
        """Take point i as the new reference level without judging it, ending any run."""
        self.drop_anchor()
        self.levels.append((i, xi - self.path))
        self.gap = 0
        self.end_run()

    def restart_path(self, i: int, xi: float, di: float) -> None:
        """Start the expected path afresh at point i (after steps without an expectation)."""
        self.path, self.path_ok = 0.0, not np.isnan(di)
        self.reps = 0
        self.reanchor(i, xi)

    def unobserved(self, di: float) -> None:
        """A step without a usable observation (absent or stuck): anchors, calibration and runs skip it."""
        self.run.acc += 0.0 if np.isnan(di) else di
        self.gap += 1
        self.absent += 1

    def accept_normal(self, pt: _Point) -> None:
        """A normal point: calibrate on it, update the anchor and the short-term bias of the forecast's
        changes (a ramp steeper than forecast shows up as several same-sign residual changes)."""
        i, xi = pt.i, pt.x
        if self.gap == 0:
            self.cal.add(pt.hour, xi - self.path - pt.anchor, xi)
            if self.levels and self.levels[-1][0] == i - 1 and pt.calibrated:
                # clipped, so one undetected excursion cannot bend the expected path
                change = float(np.clip((xi - self.path) - self.levels[-1][1] + self.bias, -2 * pt.sigma, 2 * pt.sigma))
                self.bias = (1 - self.p.bias_alpha) * self.bias + self.p.bias_alpha * change
        self.levels.append((i, xi - self.path))
        self.long_levels.append((i, xi - self.path))
        self.gap = 0

    def start_run(self, pt: _Point) -> None:
        """A jump of |z| >= onset_z: a spike or dip run starts here."""
        sign = 1 if pt.e > 0 else -1
        self.run = _Run(sign=sign, jump=pt.e, rel=pt.e / pt.expected, length=1, last=pt.x, acc=0.0)
        kind = "spike" if sign > 0 else "dip"
        self.run.rows = [self.flag(pt.i, kind, pt.expected, pt.sigma, float(pt.z), self.p.onset_z, pt.i)]
        self.gap += 1

    def continue_run(self, pt: _Point) -> bool:
        """Inside a run the last (anomalous) observation is the reference, so forecast drift does not
        accumulate: the run ends on a jump back by about the onset's relative size, or, while the run is
        short enough for the frozen anchor to be trusted, when the value is nearer the old level.
        Returns True when the point extends the run (flagged), False when the run is over."""
        p, run = self.p, self.run
        run.acc += pt.d
        step_e = pt.x - (run.last + run.acc * (1 + run.rel))
        back = -run.rel / (1 + run.rel) * (run.last + run.acc)
        returned = bool(np.sign(back) * step_e / pt.sigma >= p.end_z and abs(step_e - back) <= 0.5 * abs(back))
        if run.length < self.shift_min and run.sign * pt.e < abs(run.jump) / 2:
            returned = True
        if returned or run.length >= self.max_run:
            return False
        run.length += 1
        short = run.length < self.shift_min
        kind = ("spike" if run.sign > 0 else "dip") if short else "level_shift"
        if run.length == self.shift_min:
            self.reclassify_run(pt.i)
        run.rows.append(self.flag(pt.i, kind, pt.expected, pt.sigma, float(pt.z), p.end_z, pt.i))
        run.last, run.acc = pt.x, 0.0
        self.gap += 1
        return True

    def reclassify_run(self, decided: int) -> None:
        """The run has lasted level_shift_min_minutes: its spike/dip rows become level-shift rows."""
        for r in self.run.rows:
            old = self.rows[r]
            old["superseded"] = True
            self.flag(
                self.idx.get_loc(old["ts"]),
                "level_shift",
                float(old["expected"]),
                (float(old["upper"]) - float(old["expected"])) / float(old["threshold"]),
                float(old["score"]),
                float(old["threshold"]),
                decided,
            )

    def flag_flatline(self, pt: _Point) -> None:
        """The value did not move although the expectation did (or repeated too often)."""
        # the full expected move of this step, in a series where one exact repeat is news
        moved = abs(pt.d + self.bias + pt.m) / pt.sigma >= self.p.flat_z and self.lone_repeats_rare()
        if self.reps >= self.p.flat_min_repeats or moved:
            first = pt.i - self.reps + 1 if self.reps >= self.p.flat_min_repeats else pt.i
            for j in range(first, pt.i + 1):
                if j not in self.flat_flagged:
                    self.flat_flagged.add(j)
                    self.flag(j, "flatline", pt.expected, pt.sigma, float(pt.z), self.p.flat_z, pt.i)

    def lone_repeats_rare(self) -> bool:
        """Are single exact repeats rare enough in this series' past to mean a stuck feed? France's integer-MW
        15-min load repeats a value by chance ~0.5 times a week, Spain's (ENTSO-E, smaller steps between values)
        ~6 times: there a lone repeat is the series, not the feed, and only a run of ``flat_min_repeats`` counts.
        Decided from the points before this one; with under a week of them, as if rare."""
        if self.pairs < self.steps_per_week:
            return True
        return self.lone_repeats / self.pairs * self.steps_per_week <= self.p.max_chance_repeats_per_week

    def flag_return(self, pt: _Point) -> bool:
        """Is this jump the *return* from a short excursion that stayed under the threshold (and so became
        the anchor)? Then the current point agrees with the older normal points, and the excursion is what
        gets flagged (decided now), not the return. Returns True when it was (the anchor restarts here)."""
        p, i = self.p, pt.i
        olds = [lv for j, lv in self.levels if i - j > p.anchor_points + 1]
        recent = [(j, lv) for j, lv in self.levels if i - j <= p.anchor_points + 1]
        if not (olds and recent):
            return False
        old_anchor = float(np.median(olds))
        if abs(pt.x - self.path - old_anchor - pt.m) >= abs(pt.e) / 2:
            return False
        for j, lv in recent:
            dev = lv - old_anchor
            if np.sign(dev) != np.sign(pt.e) and abs(dev) >= abs(pt.e) / 2:
                kind = "spike" if dev > 0 else "dip"
                self.flag(j, kind, old_anchor + self.path_at[j] + pt.m, pt.sigma, float(dev / pt.sigma), p.onset_z, i)
        self.reanchor(i, pt.x)
        return True

    def start_slow_shift(self, pt: _Point, shift: tuple[int, float, float]) -> None:
        """A step too small to alarm at once but lasting two hours: a level shift from the step on."""
        start_j, base, jump = shift
        length = max(pt.i - start_j + 1, self.shift_min)
        self.run = _Run(sign=int(np.sign(jump)), jump=jump, rel=jump / (pt.x - jump), length=length, last=pt.x)
        for j, lv in self.long_levels:
            if j >= start_j:
                exp_j = base + self.path_at[j] + pt.m
                self.flag(j, "level_shift", exp_j, pt.sigma, float((lv - base) / pt.sigma), self.p.shift_z, pt.i)
        self.drop_anchor()

    # --- one point ------------------------------------------------------------------------------------
    def observe(self, i: int) -> _Point:
        """Expectation, scale and residual of point i from the state before it."""
        p, xi, h = self.p, self.vals[i], int(self.hours[i])
        have_anchor = bool(self.levels)
        if have_anchor:
            anchor = float(np.median([lv for _, lv in list(self.levels)[-p.anchor_points :]]))
        else:
            anchor = xi - self.path
        calibrated = i >= self.start_i and not np.isnan(self.cal.sig[h]) and have_anchor
        # floor: never alarm on sub-0.1 % wiggles; cap: a move of onset_z x cap (6 % by default) is always
        # significant, however noisy the last days were — unless the series is noisier than that all the
        # time: the cap is never below its own typical scale (France's 15-min load ~0.5 % never reaches the 0.75 %
        # cap; Switzerland's hourly total load is ~6 %, where a fixed 0.75 % made one alarm of every five hours)
        sig = self.cal.sig[h]
        cap = max(p.sigma_cap_frac, self.cal.typical) * abs(xi)
        s_h = float(np.clip(sig, p.sigma_floor_frac * abs(xi), cap)) if calibrated else np.nan
        m_h = self.cal.med[h] if calibrated else 0.0
        expected = self.path + anchor + m_h
        e = xi - expected
        z = e / (s_h * np.sqrt(self.gap + 1)) if calibrated else 0.0
        return _Point(i, h, xi, self.dexp[i], anchor, have_anchor, calibrated, s_h, m_h, expected, e, z)

    def step(self, i: int) -> None:
        """Advance the state by grid point i."""
        if self.day_codes[i] != self.current_day:
            if self.current_day >= 0:
                self.cal.close_day()
            self.current_day = self.day_codes[i]
        xi, di = self.vals[i], self.dexp[i]
        if np.isnan(di):
            self.path_ok = False  # no expectation for this step: restart the path at the next observation
            self.levels.clear()
        else:
            if self.run.length >= self.shift_min:
                # a level shift: the bias (a ramp steeper than forecast, learnt at the normal points before it) is
                # dropped; carried on through a two-day run it had pulled the expectation to 13 GW (review D2)
                self.bias = 0.0
            self.path += di + self.bias
        self.path_at[i] = self.path
        if np.isnan(xi):
            self.reps = 0
            self.unobserved(di)
            return
        if not self.path_ok:
            self.restart_path(i, xi, di)
            return
        # repeats are counted on the raw values, whatever the anchor state
        previous_reps = self.reps
        self.reps = self.reps + 1 if i > 0 and xi == self.vals[i - 1] else 0
        if i > 0 and not np.isnan(self.vals[i - 1]):
            self.pairs += 1
            if previous_reps == 1 and self.reps == 0:
                self.lone_repeats += 1  # a run of exactly one repeat ended: how often the series repeats by chance
        pt = self.observe(i)
        if self.reps and pt.calibrated:
            self.flag_flatline(pt)
            self.unobserved(di)  # a repeated value is no observation
            return
        stale = self.absent > self.p.max_gap_steps or (self.gap > self.p.max_gap_steps and not self.run.sign)
        self.absent = 0
        if not pt.have_anchor or stale:
            self.reanchor(i, xi)  # after a long gap or stuck stretch the anchor is stale
            return
        if self.run.sign and not pt.calibrated:
            self.end_run()
        if self.run.sign:
            if not self.continue_run(pt):
                self.reanchor(i, xi)  # back to normal (or, after max_run, a new level accepted)
            return
        if pt.calibrated and abs(pt.z) >= self.p.onset_z:
            if not self.flag_return(pt):
                self.start_run(pt)
            return
        self.accept_normal(pt)
        shift = _slow_step(self.long_levels, i, pt.sigma, self.p) if pt.calibrated else None
        if shift is not None:
            self.start_slow_shift(pt, shift)


def _slow_step(
    seg: deque[tuple[int, float]], i: int, sigma: float, p: ResidualParams
) -> tuple[int, float, float] | None:
    """A lasting step in the anchored levels of the last ``2 * SLOW_STEPS`` points that the onset test missed.

    Levels (x - expected path) of normal points random-walk slowly; a level shift shows as one step
    (>= 60 % of the change) after which every level stays shifted, and the change between the older
    and the newer two hours exceeds ``shift_z`` times the two-hour spread. Returns (first shifted
    index, old level, change) or None.
    """
    if len(seg) < SLOW_STEPS + SLOW_STEPS // 2 or i - seg[0][0] > 2 * SLOW_STEPS + 4:
        return None
    old = [lv for j, lv in seg if i - j >= SLOW_STEPS]
    new = [lv for j, lv in seg if i - j < SLOW_STEPS]
    if len(old) < SLOW_STEPS // 2 or len(new) < SLOW_STEPS - 2:
        return None
    base = float(np.median(old))
    change = float(np.median(new)) - base
    if abs(change) < p.shift_z * sigma:
        return None
    sign = np.sign(change)
    items = list(seg)
    k = max(range(1, len(items)), key=lambda m: sign * (items[m][1] - items[m - 1][1]))
    if sign * (items[k][1] - items[k - 1][1]) < 0.6 * abs(change):
        return None
    if any(sign * (lv - base) < abs(change) / 2 for _, lv in items[k:]):
        return None
    if any(sign * (lv - base) >= abs(change) / 2 for _, lv in items[:k]):
        return None
    return items[k][0], base, change


def missing_points(
    x: pd.Series,
    now: pd.Timestamp,
    lag_min: float,
    detect_from: pd.Timestamp | None = None,
    ignore_fallback_gap: bool = True,
) -> pd.DataFrame:
    """Grid points without a value that were due by ``now`` (ts + step + lag <= now).

    The grid is extended to the last due step, so a feed that stopped is reported too.
    ``ignore_fallback_gap``: RTE publishes the fall-back day's repeated local hour once (as its second
    occurrence), so 00:00–00:45 UTC of that Sunday never exists in the source; it is not an anomaly.
    Columns: ts, decided_ts (when the point became due).
    """
    if x.empty:
        return pd.DataFrame(columns=["ts", "decided_ts"])
    step = x.index[1] - x.index[0] if len(x) > 1 else pd.Timedelta(minutes=15)
    last_due = (now - step - pd.Timedelta(minutes=lag_min)).floor(step)
    grid = pd.date_range(x.index[0], max(last_due, x.index[0]), freq=step)
    full = x.reindex(grid)
    miss = full.index[full.isna().to_numpy()]
    if detect_from is not None:
        miss = miss[miss >= detect_from]
    if ignore_fallback_gap and len(miss):
        miss = miss[~is_fallback_gap(miss)]
    return pd.DataFrame({"ts": miss, "decided_ts": miss + step + pd.Timedelta(minutes=lag_min)})

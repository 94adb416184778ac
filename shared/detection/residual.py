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
* ``level_shift``: such a run lasting >= level_shift_min_steps (its spike/dip rows are superseded), or a
  step of >= shift_z after which the anchored level stays shifted for four hours (too small to alarm
  at once). A run longer than max_run_hours is accepted as the new normal.
* ``flatline``: an exactly repeated value while the expectation moved (>= flat_z), or
  >= flat_min_repeats repeats in a row.
* ``missing``: a grid point without a value once it is due (see :func:`missing_points`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

TZ = "Europe/Paris"
SLOW_STEPS = 16  # four hours of 15-min steps: the span of the slow level-shift test
ROW_COLUMNS = ["ts", "kind", "value", "expected", "lower", "upper", "score", "threshold", "decided_ts", "superseded"]


@dataclass(frozen=True)
class ResidualParams:
    """Tunable thresholds (defaults mirror the settings' ``detect_*`` fields)."""

    calibration_days: int = 28
    onset_z: float = 8.0
    flat_z: float = 1.0
    flat_min_repeats: int = 2
    level_shift_min_steps: int = 8
    max_run_hours: float = 48.0
    min_calibration_points: int = 28
    max_gap_steps: int = 4
    end_z: float = 3.0
    anchor_points: int = 1
    shift_z: float = 7.0
    recent_days: int = 3
    bias_alpha: float = 0.3
    sigma_floor_frac: float = 0.001
    sigma_cap_frac: float = 0.0075

    @classmethod
    def from_settings(cls, settings: object) -> ResidualParams:
        """Build from a Settings object (``detect_*`` fields)."""
        return cls(
            calibration_days=int(getattr(settings, "detect_calibration_days", 28)),
            onset_z=float(getattr(settings, "detect_onset_z", 8.0)),
            flat_z=float(getattr(settings, "detect_flat_z", 1.0)),
            flat_min_repeats=int(getattr(settings, "detect_flat_min_repeats", 2)),
            level_shift_min_steps=int(getattr(settings, "detect_level_shift_min_steps", 8)),
            max_run_hours=float(getattr(settings, "detect_max_run_hours", 48.0)),
            shift_z=float(getattr(settings, "detect_level_shift_z", 7.0)),
        )


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


def wall_clock(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Local Paris wall-clock time (naive) of UTC instants."""
    return index.tz_convert(TZ).tz_localize(None)


def day_type(dates: pd.DatetimeIndex) -> np.ndarray:
    """Load-shape class of local dates: 0 Monday, 1 Tuesday–Thursday, 2 Friday, 3 Saturday,
    4 Sunday or French public holiday (a holiday's load looks like a Sunday's)."""
    import holidays

    years = sorted(set(dates.year))
    fr = holidays.country_holidays("FR", years=years) if years else {}
    dow = dates.dayofweek.to_numpy()
    kind = np.select([dow == 0, dow <= 3, dow == 4, dow == 5], [0, 1, 2, 3], 4)
    is_holiday = np.array([d in fr for d in dates.date], dtype=bool)
    return np.where(is_holiday, 4, kind)


def profile_delta(x: pd.Series, n_days: int = 4, search_days: int = 42) -> pd.Series:
    """Expected change per step (see :func:`profile`)."""
    return profile(x, n_days, search_days)[0]


def profile_level(x: pd.Series, n_days: int = 4, search_days: int = 42) -> pd.Series:
    """Expected level per step (see :func:`profile`)."""
    return profile(x, n_days, search_days)[1]


def profile(x: pd.Series, n_days: int = 4, search_days: int = 42) -> tuple[pd.Series, pd.Series]:
    """Expected change per step from a seasonal profile: the median, over the ``n_days`` most recent
    earlier days of the same day type (see :func:`day_type`), of that day's change at the same local
    wall-clock time.

    Only past days are used, so for any lead below one day it is what a forecast issued before t
    could have known. The median of changes (not of levels) keeps one odd day — a glitch, an
    interpolated stretch, a missing block — from echoing into today's expectation. Used where the
    forecasts table has nothing for a point, and in the evaluation when no product forecaster is used.
    """
    if x.empty:
        return x.copy(), x.copy()
    naive = wall_clock(x.index)
    by_wall = pd.Series(x.to_numpy(dtype=float), index=naive)
    # fall-back day: the wall hour 02:00–02:45 exists twice; keep the occurrence with data (the last)
    by_wall = by_wall[~by_wall.index.duplicated(keep="last")]
    step = x.index[1] - x.index[0] if len(x) > 1 else pd.Timedelta(minutes=15)
    # the previous step's wall time, so a DST night compares like with like (01:45 -> 03:00 local)
    naive_prev = wall_clock(x.index - step)
    dates = naive.normalize()
    all_days = pd.date_range(dates.min() - pd.Timedelta(days=search_days), dates.max(), freq="D")
    types = pd.Series(day_type(all_days), index=all_days)
    # lag (in days) of the k-th most recent same-type day, per local date
    lag_table: dict[pd.Timestamp, list[int]] = {}
    for d in dates.unique():
        t = types[d]
        lags = [k for k in range(1, search_days + 1) if types.get(d - pd.Timedelta(days=k)) == t][:n_days]
        lag_table[d] = lags + [0] * (n_days - len(lags))
    lag_matrix = np.array([lag_table[d] for d in dates]).T  # n_days x n
    deltas = np.full(lag_matrix.shape, np.nan)
    levels = np.full(lag_matrix.shape, np.nan)
    for r in range(n_days):
        lag = pd.to_timedelta(lag_matrix[r], unit="D")
        now_lag = by_wall.reindex(naive - lag).to_numpy()
        prev_lag = by_wall.reindex(naive_prev - lag).to_numpy()
        deltas[r] = np.where(lag_matrix[r] > 0, now_lag - prev_lag, np.nan)
        levels[r] = np.where(lag_matrix[r] > 0, now_lag, np.nan)
    return pd.Series(_nanmedian(deltas), index=x.index), pd.Series(_nanmedian(levels), index=x.index)


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
) -> pd.DataFrame:
    """Run the residual detector over a regular grid.

    ``x``: actuals on a regular UTC grid (NaN = absent). ``expected_delta``: expected change from the
    previous step to each step (Δ of the forecast), same index, NaN where unknown. Points before
    ``detect_from`` only calibrate. Returns one row per flagged point (``ROW_COLUMNS``);
    ``decided_ts`` is the grid time of the point whose arrival decided the row, ``superseded`` marks
    spike/dip rows later reclassified as a level shift. Missing points are not reported here.
    """
    p = params or ResidualParams()
    n = len(x)
    if n == 0:
        return pd.DataFrame(columns=ROW_COLUMNS)
    idx = x.index
    step_min = max(1, int((idx[1] - idx[0]).total_seconds() // 60)) if n > 1 else 15
    max_run = int(p.max_run_hours * 60 / step_min)
    vals = x.to_numpy(dtype=float)
    dexp = expected_delta.reindex(idx).to_numpy(dtype=float)
    wall = wall_clock(idx)
    hours = wall.hour.to_numpy()
    day_codes, _ = pd.factorize(wall.normalize(), sort=True)
    start_i = 0 if detect_from is None else int(idx.searchsorted(detect_from))

    # calibration: per local hour, a deque of per-day arrays of the test residual at normal points
    history: list[deque[np.ndarray]] = [deque(maxlen=p.calibration_days) for _ in range(24)]
    day_buffer: list[list[float]] = [[] for _ in range(24)]
    med = np.full(24, np.nan)
    sig = np.full(24, np.nan)

    rows: list[dict[str, Any]] = []
    path = 0.0  # cumulative expected change (the forecast's shape) since the path started
    path_ok = False
    levels: deque[tuple[int, float]] = deque(maxlen=8)  # (i, x - path) at the last normal points
    long_levels: deque[tuple[int, float]] = deque(maxlen=2 * SLOW_STEPS)  # the same over four hours
    gap = 0  # steps since the last normal point
    run_sign, run_jump, run_rel, run_len = 0, 0.0, 0.0, 0
    run_last, run_acc = np.nan, 0.0
    run_rows: list[int] = []
    path_at = np.zeros(n)
    bias = 0.0  # smoothed residual change per step at recent normal points
    absent = 0  # consecutive steps without a usable observation (missing or stuck)
    reps = 0
    flat_flagged: set[int] = set()
    current_day = -1

    def close_day() -> None:
        for h in range(24):
            if day_buffer[h]:
                history[h].append(np.asarray(day_buffer[h]))
                day_buffer[h] = []
            pooled = np.concatenate(list(history[h])) if history[h] else np.empty(0)
            if pooled.size >= p.min_calibration_points:
                m = float(np.median(pooled))
                s_long = float(np.median(np.abs(pooled - m)) * 1.4826)
                # the last few days alone: a scale that reacts within days when the expectation gets
                # worse (a DST switch moves the lighting ramps against wall-clock profiles)
                recent = np.concatenate(list(history[h])[-p.recent_days :])
                s_recent = float(np.median(np.abs(recent - m)) * 1.4826) if recent.size >= 8 else 0.0
                med[h], sig[h] = m, max(s_long, s_recent)
            else:
                med[h], sig[h] = np.nan, np.nan

    def add_row(i: int, kind: str, expected: float, sigma: float, z: float, thr: float, decided: int) -> int:
        rows.append(
            {
                "ts": idx[i],
                "kind": kind,
                "value": vals[i],
                "expected": expected,
                "lower": expected - thr * sigma,
                "upper": expected + thr * sigma,
                "score": z,
                "threshold": thr,
                "decided_ts": idx[decided],
                "superseded": False,
            }
        )
        return len(rows) - 1

    for i in range(n):
        if day_codes[i] != current_day:
            if current_day >= 0:
                close_day()
            current_day = day_codes[i]
        h = hours[i]
        xi, di = vals[i], dexp[i]
        if np.isnan(di):
            path_ok = False  # no expectation for this step: restart the path at the next observation
            levels.clear()
        else:
            path += di + bias
        path_at[i] = path
        if np.isnan(xi):
            reps = 0
            gap += 1
            absent += 1
            run_acc += 0.0 if np.isnan(di) else di
            continue
        if not path_ok:
            path, path_ok = 0.0, not np.isnan(di)
            levels.clear()
            long_levels.clear()
            levels.append((i, xi - path))
            gap, reps = 0, 0
            run_sign, run_len, run_rows = 0, 0, []
            continue
        # repeats are counted on the raw values, whatever the anchor state
        reps = reps + 1 if i > 0 and xi == vals[i - 1] else 0
        have_anchor = bool(levels)
        anchor = float(np.median([lv for _, lv in list(levels)[-p.anchor_points :]])) if have_anchor else xi - path
        e_raw = xi - path - anchor
        calibrated = i >= start_i and not np.isnan(sig[h]) and have_anchor
        # floor: never alarm on sub-0.1 % wiggles; cap: a move of onset_z x cap (6 % by default) is always
        # significant, however noisy the last days were
        s_h = float(np.clip(sig[h], p.sigma_floor_frac * abs(xi), p.sigma_cap_frac * abs(xi))) if calibrated else np.nan
        m_h = med[h] if calibrated else 0.0
        expected = path + anchor + m_h
        e = xi - expected
        z = e / (s_h * np.sqrt(gap + 1)) if calibrated else 0.0

        # --- flatline: the value did not move although the expectation did (or repeated too often)
        if reps and calibrated:
            moved = abs(di + bias + m_h) / s_h >= p.flat_z  # the full expected move of this step
            if reps >= p.flat_min_repeats or moved:
                first = i - reps + 1 if reps >= p.flat_min_repeats else i
                for j in range(first, i + 1):
                    if j not in flat_flagged:
                        flat_flagged.add(j)
                        add_row(j, "flatline", expected, s_h, float(z), p.flat_z, i)
            # a repeated value is no observation (anchor, calibration and any run's chain skip it)
            run_acc += di
            gap += 1
            absent += 1
            continue

        stale = absent > p.max_gap_steps or (gap > p.max_gap_steps and not run_sign)
        absent = 0
        if not have_anchor or stale:
            # after a long gap or stuck stretch the anchor is stale: re-anchor without judging
            levels.clear()
            long_levels.clear()
            levels.append((i, xi - path))
            gap = 0
            run_sign, run_len, run_rows = 0, 0, []
            continue

        if run_sign and not calibrated:
            run_sign, run_len, run_rows = 0, 0, []
        if run_sign:
            # Inside a run the last (anomalous) observation is the reference, so forecast drift does not
            # accumulate: the run ends on a jump back by about the onset's relative size, or, while the
            # run is short enough for the frozen anchor to be trusted, when the value is nearer the old level.
            run_acc += di
            step_e = xi - (run_last + run_acc * (1 + run_rel))
            back = -run_rel / (1 + run_rel) * (run_last + run_acc)
            returned = bool(np.sign(back) * step_e / s_h >= p.end_z and abs(step_e - back) <= 0.5 * abs(back))
            if run_len < p.level_shift_min_steps and run_sign * e < abs(run_jump) / 2:
                returned = True
            if not returned and run_len < max_run:
                run_len += 1
                kind = ("spike" if run_sign > 0 else "dip") if run_len < p.level_shift_min_steps else "level_shift"
                if run_len == p.level_shift_min_steps:
                    for r in run_rows:  # reclassify the run so far
                        old = rows[r]
                        old["superseded"] = True
                        add_row(
                            idx.get_loc(old["ts"]),
                            "level_shift",
                            float(old["expected"]),
                            (float(old["upper"]) - float(old["expected"])) / float(old["threshold"]),
                            float(old["score"]),
                            float(old["threshold"]),
                            i,
                        )
                run_rows.append(add_row(i, kind, expected, s_h, float(z), p.end_z, i))
                run_last, run_acc = xi, 0.0
                gap += 1
                continue
            # back to normal (or, after max_run, a new level accepted): restart the anchor here
            run_sign, run_len, run_rows = 0, 0, []
            levels.clear()
            long_levels.clear()
            levels.append((i, xi - path))
            gap = 0
            continue

        if calibrated and abs(z) >= p.onset_z:
            # Is this jump the *return* from a short excursion that stayed under the threshold (and so
            # became the anchor)? Then the current point agrees with the older normal points, and the
            # excursion is what gets flagged (decided now), not the return.
            olds = [lv for j, lv in levels if i - j > p.anchor_points + 1]
            recent = [(j, lv) for j, lv in levels if i - j <= p.anchor_points + 1]
            if olds and recent:
                old_anchor = float(np.median(olds))
                if abs(xi - path - old_anchor - m_h) < abs(e) / 2:
                    for j, lv in recent:
                        dev = lv - old_anchor
                        if np.sign(dev) != np.sign(e) and abs(dev) >= abs(e) / 2:
                            add_row(
                                j,
                                "spike" if dev > 0 else "dip",
                                old_anchor + path_at[j] + m_h,
                                s_h,
                                float(dev / s_h),
                                p.onset_z,
                                i,
                            )
                    levels.clear()
                    long_levels.clear()
                    levels.append((i, xi - path))
                    gap = 0
                    continue
            run_sign = 1 if e > 0 else -1
            run_jump, run_rel, run_len = e, e / expected, 1
            run_last, run_acc = xi, 0.0
            run_rows = [add_row(i, "spike" if run_sign > 0 else "dip", expected, s_h, float(z), p.onset_z, i)]
            gap += 1
            continue
        # normal point: calibrate on it, update the anchor and the short-term bias of the forecast's
        # changes (a ramp steeper than forecast shows up as several same-sign residual changes)
        if gap == 0:
            day_buffer[h].append(e_raw)
            if levels and levels[-1][0] == i - 1 and calibrated:
                # clipped, so one undetected excursion cannot bend the expected path
                change = float(np.clip((xi - path) - levels[-1][1] + bias, -2 * s_h, 2 * s_h))
                bias = (1 - p.bias_alpha) * bias + p.bias_alpha * change
        levels.append((i, xi - path))
        long_levels.append((i, xi - path))
        gap = 0
        shift = _slow_step(long_levels, i, s_h, p) if calibrated else None
        if shift is not None:
            # a step too small to alarm at once but lasting two hours: a level shift from the step on
            start_j, base, jump = shift
            run_sign, run_jump, run_rel = int(np.sign(jump)), jump, jump / (xi - jump)
            run_len, run_last, run_acc, run_rows = max(i - start_j + 1, p.level_shift_min_steps), xi, 0.0, []
            for j, lv in long_levels:
                if j >= start_j:
                    exp_j = base + path_at[j] + m_h
                    add_row(j, "level_shift", exp_j, s_h, float((lv - base) / s_h), p.shift_z, i)
            levels.clear()
            long_levels.clear()

    out = pd.DataFrame(rows, columns=ROW_COLUMNS)
    if not out.empty:
        out = out.drop_duplicates(["ts", "kind"], keep="first").reset_index(drop=True)
    return out


def _slow_step(
    seg: deque[tuple[int, float]], i: int, sigma: float, p: ResidualParams
) -> tuple[int, float, float] | None:
    """A lasting step in the anchored levels of the last 4 hours that the onset test missed.

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


def is_fallback_gap(ts: pd.DatetimeIndex) -> np.ndarray:
    """True for UTC instants in the first occurrence of the repeated local hour on fall-back days."""
    local = ts.tz_convert(TZ)
    after = (ts + pd.Timedelta(hours=1)).tz_convert(TZ)
    # the first occurrence is summer time (+02:00) and one hour later the wall clock shows the same hour
    same_wall = (local.hour == after.hour) & (local.minute == after.minute)
    return np.asarray(same_wall)

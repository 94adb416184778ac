"""One definition of the weather features the load model consumes (pure functions over DataFrames).

Used by featurize (production: realised temperature before the origin, the stored forecast after it), by the
model's training (realised temperature) and by the backtest (``make evaluate --weather``) alike, so that training,
prediction and evaluation derive the same columns from the same national temperature.

Constants and where they come from (no citable published value was found for RTE's or Enedis's smoothing
constant — searched Enedis's open-data documentation and RTE's material — so both were **learnt on training
years only**, never on 2023, the reported test year):

* ``SMOOTHING_TAU_H = 24``: Enedis publishes a "température réalisée lissée" (exponentially smoothed realised
  temperature; ``data/weather/README.md``). An exponential smoothing with time constant τ of the RTE-weighted
  SYNOP national mean (``synop_temperature_metropole_2022``, Aug 2022, the 23 of 35 RTE stations present, weights
  renormalised, 3-hourly interpolated to 30 min) matches Enedis's smoothed series best at τ = 24 h (debiased RMSE
  1.18 °C; raw 2.57, τ = 6 h 1.56, 12 h 1.28, 36 h 1.20, 48 h 1.25). So the smoothed temperature here is the one
  Enedis (and, per issue #12, RTE) relate load to.
* ``HDD_BASE_C = 15`` / ``CDD_BASE_C = 18``: least squares of the daily mean load 2020-01-09 … 2022-12-31 on
  heating/cooling degrees of the Enedis smoothed temperature + day-of-week + year dummies: HDD base 15 °C gives
  daily MAPE 3.69 % against 4.42 % (13 °C) and 4.28 % (17 °C); CDD 18 vs 20 °C are within 0.03 pp, 18 kept (the
  value the product used before).

Gaps: ``temp_degc`` may be NaN. The smoothing runs forward only; a NaN step has NaN features and the smoothing
state is held across it (decayed by the elapsed time when the next value comes); after a gap longer than
``RESTART_GAP`` the smoothing restarts from the next value (a state that old says nothing).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

HDD_BASE_C = 15.0  # heating degrees below this (learnt, see module docstring)
CDD_BASE_C = 18.0  # cooling degrees above this (learnt, see module docstring)
SMOOTHING_TAU_H = 24.0  # time constant of the exponential smoothing, hours (learnt, see module docstring)
RESTART_GAP = pd.Timedelta(hours=72)  # a gap this long restarts the smoothing (3 time constants)
INTERP_LIMIT = pd.Timedelta(hours=3)  # known_at: longest gap inside one source filled by linear interpolation

WEATHER_COLUMNS: list[str] = ["temp_degc", "temp_smooth_degc", "hdd_smooth", "cdd_smooth"]


def smooth(ts: pd.DatetimeIndex | pd.Series, temp: np.ndarray | pd.Series,
           tau_h: float = SMOOTHING_TAU_H) -> np.ndarray:
    """Forward exponential smoothing of ``temp`` over (possibly irregular) instants ``ts``.

    ``s_i = s_prev + (1 - exp(-Δt/τ)) · (x_i - s_prev)`` with Δt the time since the previous *valid* value, so
    the result at ``ts[i]`` depends on values at or before ``ts[i]`` only. NaN in → NaN out (the state is held).
    ``tau_h = 0`` returns the input.
    """
    x = np.asarray(temp, dtype=float)
    t = pd.DatetimeIndex(ts).asi8.astype(np.float64) / 3.6e12  # hours
    out = np.full(len(x), np.nan)
    if tau_h <= 0:
        return x.copy()
    restart_h = RESTART_GAP / pd.Timedelta(hours=1)
    state, last_t = np.nan, np.nan
    for i in range(len(x)):
        xi = x[i]
        if xi != xi:  # NaN: unknown stays unknown, the state is held
            continue
        dt = t[i] - last_t
        if state != state or dt > restart_h:
            state = xi
        else:
            state += (1.0 - np.exp(-dt / tau_h)) * (xi - state)
        last_t = t[i]
        out[i] = state
    return out


def derive(frame: pd.DataFrame, smoothed_input: bool = False) -> pd.DataFrame:
    """The weather features of ``frame`` (``ts`` UTC sorted, ``temp_degc`` national temperature, NaN allowed).

    Returns the same rows (``ts`` and every column of ``frame``) with all :data:`WEATHER_COLUMNS`. Pure; the
    smoothing runs forward in time only, so no feature at ``t`` reads a temperature after ``t``.

    ``smoothed_input``: ``temp_degc`` is already an exponentially smoothed series (the shipped Enedis
    "température réalisée lissée", whose smoothing ≈ ``SMOOTHING_TAU_H``): it is used as the smoothed
    temperature instead of being smoothed twice.
    """
    out = frame.copy()
    out["ts"] = pd.DatetimeIndex(out["ts"]).tz_convert("UTC")
    out = out.sort_values("ts", kind="stable").reset_index(drop=True)
    temp = out["temp_degc"].to_numpy(dtype=float)
    sm = temp.copy() if smoothed_input else smooth(pd.DatetimeIndex(out["ts"]), temp)
    out["temp_degc"] = temp
    out["temp_smooth_degc"] = sm
    out["hdd_smooth"], out["cdd_smooth"] = degrees(sm)
    return out


def degrees(smoothed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heating degrees below :data:`HDD_BASE_C` and cooling degrees above :data:`CDD_BASE_C` of a smoothed
    temperature (NaN where it is NaN)."""
    sm = np.asarray(smoothed, dtype=float)
    with np.errstate(invalid="ignore"):
        hdd = np.where(np.isfinite(sm), np.clip(HDD_BASE_C - sm, 0, None), np.nan)
        cdd = np.where(np.isfinite(sm), np.clip(sm - CDD_BASE_C, 0, None), np.nan)
    return hdd, cdd


def interpolate_on(frame: pd.DataFrame, idx: pd.DatetimeIndex) -> pd.Series:
    """``temp_degc`` of ``frame`` at the grid instants ``idx``: exact values, short gaps linearly interpolated.

    Interpolation runs inside one source's own values only (between two instants both known to the caller);
    a gap longer than :data:`INTERP_LIMIT` or outside the source's span stays NaN.
    """
    if frame is None or len(frame) == 0 or len(idx) == 0:
        return pd.Series(np.nan, index=idx)
    s = (frame.assign(ts=pd.DatetimeIndex(frame["ts"]).tz_convert("UTC")).dropna(subset=["temp_degc"])
         .drop_duplicates("ts", keep="last").set_index("ts")["temp_degc"].astype(float).sort_index())
    # only values within INTERP_LIMIT of the window can reach it: a short window of a long series (detect's and the
    # forecast stage's features of four years of shipped temperature) costs milliseconds, not half a second
    s = s[(s.index >= idx.min() - INTERP_LIMIT) & (s.index <= idx.max() + INTERP_LIMIT)]
    if len(s) == 0:
        return pd.Series(np.nan, index=idx)
    both = s.index.union(idx)
    full = s.reindex(both)
    known = pd.Series(both.where(full.notna()), index=both)
    prev_t, next_t = known.ffill(), known.bfill()
    gap = pd.Series(next_t.to_numpy() - prev_t.to_numpy(), index=both)
    interp = full.interpolate(method="time", limit_area="inside")
    interp[~(gap <= INTERP_LIMIT)] = np.nan
    interp[full.notna()] = full[full.notna()]
    return interp.reindex(idx)


def known_at(realised: pd.DataFrame, forecast: pd.DataFrame, origin: pd.Timestamp,
             resolution_min: int = 30, smoothed_input: bool = False) -> pd.DataFrame:
    """The temperature path as known at ``origin``, derived (columns ``ts`` + :data:`WEATHER_COLUMNS`).

    ``realised`` (``ts, temp_degc``) is used strictly before ``origin``, ``forecast`` (``ts, temp_degc``) from
    ``origin`` on; both are put on the ``resolution_min`` grid (short gaps interpolated within each source) from
    the first realised instant to the last forecast instant, then :func:`derive`d, so the smoothing continues
    from the realised past into the forecast future. Nothing realised at or after ``origin`` and nothing
    forecast before it is read: a later change of either cannot alter what is returned.
    """
    origin = pd.Timestamp(origin).tz_convert("UTC")
    freq = pd.Timedelta(minutes=resolution_min)
    past = realised[pd.DatetimeIndex(realised["ts"]).tz_convert("UTC") < origin] if len(realised) else realised
    fut = forecast[pd.DatetimeIndex(forecast["ts"]).tz_convert("UTC") >= origin] if len(forecast) else forecast
    starts = [pd.DatetimeIndex(f["ts"]).tz_convert("UTC").min() for f in (past, fut) if len(f)]
    ends = [pd.DatetimeIndex(f["ts"]).tz_convert("UTC").max() for f in (past, fut) if len(f)]
    if not starts:
        return derive(pd.DataFrame({"ts": pd.DatetimeIndex([], tz="UTC"), "temp_degc": np.array([], float)}),
                      smoothed_input)[["ts", *WEATHER_COLUMNS]]
    lo, hi = min(starts).ceil(freq), max(ends)
    idx = pd.date_range(lo, hi, freq=freq, tz="UTC")
    before, after = idx[idx < origin], idx[idx >= origin]
    temp = pd.concat([interpolate_on(past, before), interpolate_on(fut, after)])
    frame = pd.DataFrame({"ts": idx, "temp_degc": temp.to_numpy()})
    return derive(frame, smoothed_input)[["ts", *WEATHER_COLUMNS]]


WARMUP = pd.Timedelta(days=15)  # realised history read before an origin: e^-15 of the smoothing state is left


def features_for_origins(realised: pd.DataFrame, forecasts: pd.DataFrame, origins: pd.DatetimeIndex,
                         resolution_min: int = 30, smoothed_input: bool = False) -> pd.DataFrame:
    """:func:`known_at` for many origins: the long frame ``origin, ts, *WEATHER_COLUMNS`` (targets ``ts >= origin``).

    ``realised``: ``ts, temp_degc``; ``forecasts``: ``origin, ts, temp_degc`` (each origin's own forecast run, as a
    :data:`WeatherProvider`-like frame). Only the :data:`WARMUP` before each origin is read from ``realised`` (the
    smoothing has forgotten anything older to e^-15). An origin whose rows in ``forecasts`` also run before it
    brings its own past — the temperature as it was known at that origin (the store's provider:
    :func:`shared.weather.provider.store_provider`) — and ``realised`` is not read for it.
    """
    if len(origins) == 0:
        return pd.DataFrame(columns=["origin", "ts", *WEATHER_COLUMNS])
    r = realised[["ts", "temp_degc"]].assign(ts=pd.DatetimeIndex(realised["ts"]).tz_convert("UTC"))
    r = r.dropna(subset=["temp_degc"]).sort_values("ts").reset_index(drop=True)
    rts = pd.DatetimeIndex(r["ts"]).asi8
    f = forecasts.assign(origin=pd.DatetimeIndex(forecasts["origin"]).tz_convert("UTC"))
    groups = f.groupby("origin").indices
    out = []
    for o in pd.DatetimeIndex(origins).tz_convert("UTC"):
        lo, hi = np.searchsorted(rts, (o - WARMUP).value), np.searchsorted(rts, o.value)
        fo = f.iloc[groups[o]][["ts", "temp_degc"]] if o in groups else f.iloc[:0][["ts", "temp_degc"]]
        fts = pd.DatetimeIndex(fo["ts"]).tz_convert("UTC")
        own_past = fo[(fts < o) & (fts >= o - WARMUP)]
        k = known_at(own_past if len(own_past) else r.iloc[lo:hi], fo, o, resolution_min, smoothed_input)
        out.append(k[k["ts"] >= o].assign(origin=o))
    res = pd.concat(out, ignore_index=True)
    return res[["origin", "ts", *WEATHER_COLUMNS]]


# A WeatherProvider answers "which temperature forecast was known at each origin": origins → long frame
# ``origin, ts, temp_degc`` (the backtests' (a)/(b) providers, the store's, and a weather model's training holdout).
WeatherProvider = Callable[[pd.DatetimeIndex], pd.DataFrame]


def provider_targets(origins: pd.DatetimeIndex, horizon: pd.Timedelta, step: pd.Timedelta) -> pd.DataFrame:
    """``origin, ts``: every target step of every origin over ``horizon`` (what a provider answers for)."""
    n = int(horizon / step)
    o = np.repeat(pd.DatetimeIndex(origins).tz_convert("UTC"), n)
    ts = pd.DatetimeIndex(o) + np.tile(np.arange(n), len(origins)) * step
    return pd.DataFrame({"origin": o, "ts": ts})


def perfect_provider(realised: pd.DataFrame, horizon: pd.Timedelta, step: pd.Timedelta,
                     fill: pd.DataFrame | None = None) -> WeatherProvider:
    """(a) the realised temperature served as the forecast known at every origin (LOOK-AHEAD: an upper bound).

    ``fill`` (``ts, temp_degc``): stands in where no realised value exists (after the shipped data ends; only
    targets after the test year, never scored)."""
    r = realised.dropna(subset=["temp_degc"]).set_index("ts")["temp_degc"]
    f = fill.set_index("ts")["temp_degc"] if fill is not None else None

    def provide(origins: pd.DatetimeIndex) -> pd.DataFrame:
        t = provider_targets(origins, horizon, step)
        v = r.reindex(pd.DatetimeIndex(t["ts"])).to_numpy()
        if f is not None:
            v = np.where(np.isnan(v), f.reindex(pd.DatetimeIndex(t["ts"])).to_numpy(), v)
        return t.assign(temp_degc=v)

    return provide

"""Adaptive conformal intervals (issue 10, shared/forecasting/combine.py: adaptive_calibration): age-weighted
error quantiles and the coverage integrator — they adapt after a run of misses, stay bounded, weigh recent
errors (and recent misses) more, and what production recomputes from stored issued forecasts equals what the
backtest issued origin after origin. Synthetic series only for edge cases; one check on real 2023 load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.features import build_grid
from shared.forecasting import baseline, combine
from shared.forecasting.evaluate import adaptive_intervals
from tests.fixtures_forecast import history

STEP = pd.Timedelta(minutes=30)
AS_OF = pd.Timestamp("2023-03-01 11:00", tz="UTC")


def _synthetic(days: int, rel_error: np.ndarray | float, lead_days: int = 2, seed: int = 0,
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Daily origins before ``AS_OF``, a flat 50 GW actual and forecasts off by ``rel_error`` (per origin) plus
    noise: (issued forecasts ``origin, ts, yhat, lead_day``, actual ``ts, value``)."""
    rng = np.random.default_rng(seed)
    origins = AS_OF - pd.Timedelta(days=1) * np.arange(days, 0, -1)
    rows = []
    err = np.broadcast_to(np.asarray(rel_error, dtype=float), (days,))
    for i, o in enumerate(origins):
        ts = o + STEP * np.arange(1, 48 * lead_days + 1)
        e = err[i] * rng.standard_normal(len(ts))
        rows.append(pd.DataFrame({"origin": o, "ts": ts, "yhat": 50_000.0 / (1 + e),
                                  "lead_day": baseline.lead_days(o, pd.DatetimeIndex(ts), STEP)}))
    fc = pd.concat(rows, ignore_index=True)
    actual = pd.DataFrame({"ts": pd.date_range(origins[0], AS_OF + pd.Timedelta(days=10), freq=STEP)})
    actual["value"] = 50_000.0
    return fc, actual


def test_weighted_quantiles() -> None:
    x = np.array([4.0, 1.0, 3.0, 2.0])
    # equal weights: Hazen's plotting positions (i − 0.5)/n, linear in between, clamped at the ends
    assert combine.weighted_quantiles(x, np.ones(4), [0.125, 0.5, 0.875]).tolist() == [1.0, 2.5, 4.0]
    assert combine.weighted_quantiles(x, np.ones(4), [0.0, 1.0]).tolist() == [1.0, 4.0]
    # weight on the large values moves every quantile up
    w = np.array([10.0, 1.0, 10.0, 1.0])
    heavy, equal = combine.weighted_quantiles(x, w, [0.25, 0.5]), combine.weighted_quantiles(x, np.ones(4), [0.25, 0.5])
    assert (heavy > equal).all()


def test_recent_errors_weigh_more() -> None:
    """Old large errors and recent small ones: the age-weighted bounds are narrower than equal weights'."""
    err = np.where(np.arange(60) < 40, 0.08, 0.02)  # the last 20 origins err by 2 %, the 40 before by 8 %
    fc, actual = _synthetic(60, err)
    weighted = combine.adaptive_calibration(fc, actual, AS_OF, 0.8, 91, {}, gamma=0.0)
    equal = combine.adaptive_calibration(fc, actual, AS_OF, 0.8, 91, {}, gamma=0.0, half_life_days=None)
    for k in weighted:
        w_width, e_width = weighted[k][1] - weighted[k][0], equal[k][1] - equal[k][0]
        assert w_width < 0.6 * e_width, k
        assert w_width == pytest.approx(2 * 1.2816 * 0.02, rel=0.35)  # the recent errors' own 80 % range


def _with_issued(fc: pd.DataFrame, width: float) -> pd.DataFrame:
    return baseline.apply_intervals(fc, {str(k): [-width, width] for k in fc["lead_day"].unique()})


def test_a_run_of_misses_widens_a_run_of_hits_narrows_and_the_factor_is_bounded() -> None:
    fc, actual = _synthetic(30, 0.03)
    base = combine.adaptive_calibration(fc, actual, AS_OF, 0.8, 91, {}, gamma=0.0)
    # the issued intervals were far too narrow (±0.5 %): nearly every block missed → wider than the base quantiles
    missed = combine.adaptive_calibration(_with_issued(fc, 0.005), actual, AS_OF, 0.8, 91, {})
    # far too wide (±50 %): every block covered → narrower
    covered = combine.adaptive_calibration(_with_issued(fc, 0.5), actual, AS_OF, 0.8, 91, {})
    for k in base:
        b = base[k][1] - base[k][0]
        assert missed[k][1] - missed[k][0] > 1.5 * b
        assert covered[k][1] - covered[k][0] < 0.8 * b
        # the width factor is bounded (ACI_SCALE), around the base median
        assert missed[k][1] - missed[k][0] <= combine.ACI_SCALE[1] * b + 1e-12
        assert covered[k][1] - covered[k][0] >= combine.ACI_SCALE[0] * b - 1e-12
    # a lead day whose blocks are not yet observed has no coverage to learn from; too few origins → fallback
    few, act = _synthetic(5, 0.03)
    assert combine.adaptive_calibration(few, act, AS_OF, 0.8, 91, {"1": [-0.1, 0.1]}) == {"1": [-0.1, 0.1]}


def _issued_by_origin(fc: pd.DataFrame, narrow: set[int]) -> pd.DataFrame:
    """Issued bounds per origin: none wide at the ``narrow`` origins' positions (every actual missed), ±50 % at
    the others (every actual covered)."""
    pos = fc["origin"].map({o: i for i, o in enumerate(sorted(fc["origin"].unique()))})
    width = np.where(pos.isin(narrow), 0.0, 0.5)
    return fc.assign(lower=fc["yhat"] * (1 - width), upper=fc["yhat"] * (1 + width))


def test_old_misses_count_less_than_recent_ones() -> None:
    """The integrator is leaky: ten missed origins two months back widen the interval less than the same ten
    missed origins last month; with equal terms (no leak) both sums, hence both intervals, are the same."""
    fc, actual = _synthetic(60, 0.03)
    old, recent = _issued_by_origin(fc, set(range(0, 10))), _issued_by_origin(fc, set(range(40, 50)))
    # a small step keeps the factor inside ACI_SCALE (unclipped), so any difference of the sums shows
    leaky_old = combine.adaptive_calibration(old, actual, AS_OF, 0.8, 91, {}, gamma=0.05)
    leaky_recent = combine.adaptive_calibration(recent, actual, AS_OF, 0.8, 91, {}, gamma=0.05)
    flat_old = combine.adaptive_calibration(old, actual, AS_OF, 0.8, 91, {}, gamma=0.05, leak_half_life_days=None)
    flat_recent = combine.adaptive_calibration(recent, actual, AS_OF, 0.8, 91, {}, gamma=0.05,
                                               leak_half_life_days=None)
    assert leaky_old.keys() == leaky_recent.keys() and {"1", "2"} <= leaky_old.keys()
    for k in leaky_old:
        assert leaky_recent[k][1] - leaky_recent[k][0] > 1.02 * (leaky_old[k][1] - leaky_old[k][0]), k
        assert flat_recent[k] == pytest.approx(flat_old[k], rel=1e-12), k
    # the rate: each fully observed origin's excess (1 − 0.2 missed, 0 − 0.2 covered) weighs 0.5 ** (age / 180 days)
    base = combine.adaptive_calibration(recent, actual, AS_OF, 0.8, 91, {}, gamma=0.0)
    origins = sorted(fc["origin"].unique())
    for k in ("1", "2"):
        excess = sum(0.5 ** ((AS_OF - o) / pd.Timedelta(days=combine.ACI_LEAK_HALF_LIFE_DAYS))
                     * ((1.0 if i in range(40, 50) else 0.0) - 0.2)
                     for i, o in enumerate(origins) if o + pd.Timedelta(days=int(k)) <= AS_OF)
        factor = (leaky_recent[k][1] - leaky_recent[k][0]) / (base[k][1] - base[k][0])
        assert factor == pytest.approx(np.exp(0.05 * excess), rel=1e-9), k


def test_stateless_replay_equals_the_incremental_intervals() -> None:
    """adaptive_intervals issues origin after origin, each from the intervals it issued before; production
    recomputes one origin from the stored rows (forecasts + issued bounds) — the same numbers."""
    err = 0.02 + 0.04 * (np.arange(50) >= 30)  # a change of regime: the intervals must widen
    fc, actual = _synthetic(50, err, seed=1)
    fallback = {"0": [-0.01, 0.01], "1": [-0.01, 0.01], "2": [-0.01, 0.01]}
    issued = adaptive_intervals(fc.assign(fallback_cal=[fallback] * len(fc)), None, actual, 0.8, 91)
    for o in sorted(issued["origin"].unique())[-3:]:
        o = pd.Timestamp(o)
        mine = issued[issued["origin"] == o]
        cal = combine.adaptive_calibration(issued[issued["origin"] < o], actual, o, 0.8, 91, fallback)
        replay = baseline.apply_intervals(mine[["yhat", "lead_day"]], cal)
        np.testing.assert_allclose(replay[["lower", "upper"]].to_numpy(), mine[["lower", "upper"]].to_numpy())
    # after the regime change the issued intervals cover again (about 80 % over the last 10 origins)
    last = issued[issued["origin"] >= issued["origin"].unique()[-10]].merge(actual, on="ts")
    inside = ((last["value"] >= last["lower"]) & (last["value"] <= last["upper"])).mean()
    assert 0.65 <= inside <= 0.95


def test_seasonal_naive_of_real_load_is_covered_near_80_percent() -> None:
    """Real 2023 load, seasonal naive as the issued forecast (daily origins, Jan–Jun): over the origins once the
    window holds two months of forecasts, the adaptive 80 % intervals cover 70–90 % at every lead day."""
    g = build_grid(history("2022-12-01", "2023-07-10")[["ts", "value"]], 30, max_interp_steps=0)[["ts", "value"]]
    origins = pd.date_range("2023-01-01 11:00", "2023-06-30 11:00", freq="D", tz="UTC")
    fc = baseline.seasonal_naive_many(g, origins, 8 * 48, STEP)
    fallback = {str(k): [-0.05, 0.05] for k in range(8)}
    issued = adaptive_intervals(fc.assign(fallback_cal=[fallback] * len(fc)), None, g, 0.8, 91)
    j = issued[issued["origin"] >= pd.Timestamp("2023-03-01", tz="UTC")].merge(g, on="ts").dropna()
    cov = ((j["value"] >= j["lower"]) & (j["value"] <= j["upper"])).groupby(j["lead_day"]).mean()
    assert cov.between(0.70, 0.90).all(), cov.round(3).to_dict()

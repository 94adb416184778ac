"""Never worse than naive, promotion and adaptive intervals, pinned at their edges (found by hand-made mutation
testing: each test fails on a plausible one-line change that every other test let through). Real 2023 load; the
"model" forecasts are labelled synthetic distortions of it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.features import build_grid
from shared.forecasting import baseline, combine
from shared.forecasting.service import promotion_decision
from tests.fixtures_forecast import history

STEP = pd.Timedelta(minutes=30)


@pytest.fixture(scope="module")
def grid() -> pd.DataFrame:
    h = history("2023-01-01", "2023-04-01")
    return build_grid(h[["ts", "value"]], 30, max_interp_steps=0)[["ts", "value"]]


def _naive_fc(grid: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    origins = pd.date_range("2023-02-01 11:00", periods=28, freq="D", tz="UTC")
    fc = baseline.seasonal_naive_many(grid, origins, 8 * 48, STEP)
    actual = fc.merge(grid, on="ts", how="left")["value"].to_numpy()
    return fc, fc["yhat"].to_numpy(), actual


def test_a_model_much_worse_than_naive_is_not_issued_at_all(grid: pd.DataFrame) -> None:
    """A model that errs like naive, 30 % of the load further, gets weight 0 (every w > 0 is strictly worse):
    the issued forecast is seasonal naive itself, and mape_naive is naive's own MAPE."""
    fc, naive, actual = _naive_fc(grid)
    model = naive + np.sign(naive - actual) * 0.3 * actual
    w = combine.learn_weights(fc.assign(yhat=model), naive, grid)
    ok = np.isfinite(actual) & np.isfinite(naive)
    for k, v in w.items():
        sel = ok & (fc["lead_day"].to_numpy() == int(k))
        own = float(np.mean(np.abs(naive[sel] - actual[sel]) / actual[sel]) * 100)
        assert v["weight"] == 0.0 and v["mape_naive"] == pytest.approx(own, abs=1e-3), k
    issued = combine.apply_weights(fc.assign(yhat=model), naive, w)
    assert set(issued["yhat_source"]) == {"seasonal_naive"}
    np.testing.assert_allclose(issued["yhat"].to_numpy(), naive)


def test_where_naive_has_no_value_the_model_is_issued_unscaled(grid: pd.DataFrame) -> None:
    """A lead day weighted 0 towards the model, a row without a naive value: the model's value is issued
    (not 0 × model + 1 × nan_to_num(NaN) = 0)."""
    fc, naive, _ = _naive_fc(grid)
    naive = naive.copy()
    naive[5] = np.nan
    out = combine.apply_weights(fc, naive, {"1": {"weight": 0.0}})
    assert out["yhat"].iloc[5] == fc["yhat"].iloc[5] and out["yhat_source"].iloc[5] == "model"


def test_rows_without_a_naive_value_do_not_decide_the_weight(grid: pd.DataFrame) -> None:
    """A perfect model keeps weight 1 even when a few naive values are missing (a gap four weeks back)."""
    fc, naive, actual = _naive_fc(grid)
    naive = naive.copy()
    naive[::97] = np.nan
    w = combine.learn_weights(fc.assign(yhat=actual), naive, grid)
    assert w and all(v["weight"] == 1.0 for v in w.values()), w


def test_a_model_worse_than_naive_is_rejected_even_when_it_beats_the_current_one() -> None:
    """Seasonal naive is a permanent challenger, current model or not."""
    decision, why = promotion_decision(5.0, 6.0, 4.0, 0.0, "v1")
    assert decision == "rejected" and "seasonal naive" in why


def _issued(grid: pd.DataFrame, origins: pd.DatetimeIndex, width: float) -> pd.DataFrame:
    fc = baseline.seasonal_naive_many(grid, origins, 3 * 48, STEP)
    return baseline.apply_intervals(fc, {str(k): [-width, width] for k in range(1, 4)})


def test_origins_older_than_the_window_do_not_count(grid: pd.DataFrame) -> None:
    """Production's SQL reads only the window; the backtest's pool holds every origin: the calibration bounds it."""
    as_of = pd.Timestamp("2023-03-20 11:00", tz="UTC")
    recent = _issued(grid, pd.date_range("2023-02-21 11:00", "2023-03-19 11:00", freq="D", tz="UTC"), 0.05)
    old = _issued(grid, pd.date_range("2023-01-10 11:00", "2023-02-15 11:00", freq="D", tz="UTC"), 0.001)
    only_recent = combine.adaptive_calibration(recent, grid, as_of, 0.8, 28, {})
    with_old = combine.adaptive_calibration(pd.concat([old, recent], ignore_index=True), grid, as_of, 0.8, 28, {})
    assert only_recent and with_old == only_recent


def test_a_block_not_yet_fully_observed_does_not_move_the_width(grid: pd.DataFrame) -> None:
    """A run issued half an hour later in the day than the past ones sees the first half-hour of each past
    origin's next block: a block not yet over does not count."""
    as_of = pd.Timestamp("2023-03-20 11:30", tz="UTC")
    past = _issued(grid, pd.date_range("2023-02-21 11:00", "2023-03-19 11:00", freq="D", tz="UTC"), 0.05)
    partial = (past["origin"] + pd.Timedelta(hours=24) * past["lead_day"]) > as_of
    narrow = past.copy()
    narrow.loc[partial, ["lower", "upper"]] = narrow.loc[partial, ["yhat", "yhat"]].to_numpy()  # always missed
    # a small gamma keeps the width factor inside ACI_SCALE (unclipped), so any change of the misses shows
    assert combine.adaptive_calibration(narrow, grid, as_of, 0.8, 28, {}, gamma=0.02) == \
        combine.adaptive_calibration(past, grid, as_of, 0.8, 28, {}, gamma=0.02)

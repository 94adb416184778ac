"""The backtest harness: no look-ahead (a test that fails if future data leaks), and the CLI on a
generic ``timestamp,value`` CSV producing the documented report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared import settings as settings_mod
from shared.features import build_grid
from shared.forecasting.evaluate import backtest, local_midnight, main
from shared.settings import Settings
from tests.fixtures_forecast import FAST_MODEL_ENV, history

FAST = FAST_MODEL_ENV | {"POWERSENSE_FORECAST_TRAIN_DAYS": "90"}


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    settings_mod.get_settings.cache_clear()
    yield settings_mod.get_settings()
    settings_mod.get_settings.cache_clear()


@pytest.fixture(scope="module")
def grid() -> pd.DataFrame:
    h = history("2022-11-25", "2023-02-08")
    return build_grid(h[["ts", "value"]], 30, max_interp_steps=0)[["ts", "value"]]


@pytest.mark.slow
def test_backtest_forecasts_ignore_data_after_their_origin(grid: pd.DataFrame, fast: Settings) -> None:
    train_start, test_start, test_end = (local_midnight(d) for d in ("2022-11-25", "2023-01-20", "2023-02-06"))
    cut = pd.Timestamp("2023-01-27 12:00", tz="Europe/Paris").tz_convert("UTC")  # one of the daily origins
    leaked = grid.copy()
    after = leaked["ts"] >= cut
    leaked.loc[after, "value"] = leaked.loc[after, "value"] * 1.5 + 5000  # the future, made very different
    a = backtest(grid, None, train_start, test_start, test_end, fast, progress=False)["_frames"]
    b = backtest(leaked, None, train_start, test_start, test_end, fast, progress=False)["_frames"]
    for name in ("powersense", "seasonal_naive"):
        fa, fb = a[name], b[name]
        before = fa["origin"] <= cut
        assert before.sum() > 0 and (~before).sum() > 0
        np.testing.assert_allclose(fa.loc[before, "yhat"], fb.loc[before, "yhat"], rtol=1e-9)
        # the perturbation is visible to later origins, so the comparison above is not vacuous
        assert not np.allclose(fa.loc[~before, "yhat"], fb.loc[~before, "yhat"], rtol=1e-3)


@pytest.mark.slow
def test_cli_on_a_generic_csv_writes_the_report(grid: pd.DataFrame, fast: Settings, tmp_path: Path) -> None:
    csv = tmp_path / "load.csv"
    g = grid.dropna().copy()
    # a SYNTHETIC source glitch on the real series: 36 h of zeros inside the test period (eco2mix once published
    # consommation = 0 for ~33 h): skipped in scoring and counted, and the report stays strict JSON
    glitch = (g["ts"] >= pd.Timestamp("2023-01-28", tz="UTC")) & (g["ts"] < pd.Timestamp("2023-01-29 12:00", tz="UTC"))
    g.loc[glitch, "value"] = 0.0
    pd.DataFrame({"timestamp": g["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": g["value"]}).to_csv(csv, index=False)
    out = tmp_path / "report"
    assert main(["--data", str(csv), "--train-start", "2022-11-25", "--test-start", "2023-01-25",
                 "--test-end", "2023-02-06", "--out", str(out), "--no-progress", "--retrain-days", "7",
                 # French load written as a generic CSV: its calendar is given (a generic CSV defaults to UTC, none)
                 "--timezone", "Europe/Paris", "--holidays", "FR"]) == 0

    def no_constants(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    report = json.loads((out / "forecast_eval.json").read_text(), parse_constant=no_constants)
    assert report["skipped_invalid_actuals"]["count"] == int(glitch.sum()) == 72
    for res in report["models"].values():
        assert all(m["mape"] is not None and m["mape"] < 50 for m in res.values())
    # production's cadence: retrained inside the test period with the promotion rule, per-quarter tables
    assert len(report["retrains"]) == 2 and report["quarters"] and "checks" in report["quarters"]["2023-Q1"]
    assert set(report["models"]) == {"powersense", "seasonal_naive"}  # no RTE column in a generic CSV
    assert list(report["models"]["powersense"]) == [f"D+{k}" for k in range(1, 8)]
    assert {"mape", "mae", "rmse", "bias", "coverage"} <= set(report["models"]["powersense"]["D+1"])
    assert report["test_period"][0].startswith("2023-01-24T23:00") and len(report["train_window"]) == 2
    assert (out / "forecast_eval.png").stat().st_size > 10_000


def test_gated_instants_after_the_test_period_are_not_counted_as_its_training_inputs() -> None:
    from shared.forecasting.evaluate import gated_counts

    # one file spanning several test years: the 2023 glitches are not the 2021 report's
    gated = pd.DataFrame({"ts": pd.to_datetime(["2018-06-01T00:00Z", "2020-05-01T00:00Z", "2021-03-01T00:00Z",
                                                "2023-02-17T00:00Z", "2023-02-17T01:00Z"]),
                          "reason": ["flatline", "zero", "linear_ramp", "flatline", "flatline"]})
    counts = gated_counts(gated, pd.Timestamp("2017-01-01T00:00Z"), pd.Timestamp("2021-01-01T00:00Z"),
                          pd.Timestamp("2022-01-01T00:00Z"))
    assert counts == {"count": 1, "reasons": {"linear_ramp": 1}, "gated_in_training_and_inputs": 2}


def _releases(year: int) -> dict[str, object] | None:
    from shared.forecasting.evaluate import input_releases, load_data
    from shared.settings import REPO_ROOT

    files = [REPO_ROOT / "data" / "eco2mix" / f"eco2mix_national_{y}.csv.gz" for y in (year - 1, year)]
    grid, _ = load_data(files, 30, Settings())
    return input_releases(grid, pd.Timestamp(f"{year}-01-01T00:00Z"), pd.Timestamp(f"{year}-04-01T00:00Z"))


def test_a_backtest_on_definitive_figures_says_they_were_published_after_the_fact() -> None:
    # the shipped 2019 values are RTE's definitive figures (published about a year later): a 2019 origin's recent
    # inputs are better than production had, and the report says how many
    rel = _releases(2019)
    assert rel is not None
    assert rel["values"] == {"Données définitives": rel["published_later"]}
    assert rel["published_later"] == 90 * 48 and rel["share_published_later"] == 1.0  # every half hour of Q1


def test_a_backtest_on_real_time_figures_reports_none_published_later() -> None:
    rel = _releases(2021)
    assert rel is not None
    assert rel["published_later"] == 0 and rel["share_published_later"] == 0.0
    assert set(rel["values"]) == {"Données temps réel (API RTE short_term)"}

"""The generic ``timestamp,value`` path of ``make evaluate`` ("any series", issue 10): a time zone, a holiday
calendar and a resolution; the holdout sized from the history; below the documented minimum history a clear
one-line error; with too little history for the model, the best simple model, said so. The series are REAL
eco2mix load written as generic CSVs (no foreign series ships with the product)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared import settings as settings_mod
from shared.forecasting.evaluate import load_data, main
from shared.forecasting.service import (
    issue,
    short_holdout_warning,
    short_series,
    train_and_calibrate,
    trained_on_holdout,
)
from shared.settings import Settings
from tests.fixtures_forecast import ECO2MIX, FAST_MODEL_ENV, grid_2022, history


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for k, v in FAST_MODEL_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("POWERSENSE_FORECAST_HOLDOUT_DAYS", raising=False)  # the default 91, sized down by history
    monkeypatch.delenv("POWERSENSE_FORECAST_LEVEL_MIN_HISTORY_DAYS", raising=False)  # the default
    settings_mod.get_settings.cache_clear()
    yield settings_mod.get_settings()
    settings_mod.get_settings.cache_clear()


def _csv(tmp_path: Path, start: str, end: str, every: str = "30min") -> Path:
    h = history(start, end)
    h = h[h["ts"].dt.floor(every) == h["ts"]]
    path = tmp_path / "series.csv"
    frame = pd.DataFrame({"timestamp": h["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": h["value"]})
    frame.to_csv(path, index=False)
    return path


def _strict(path: Path) -> dict:
    def no_constants(name: str) -> None:
        raise ValueError(name)

    return json.loads(path.read_text(), parse_constant=no_constants)


@pytest.mark.parametrize(("history_days", "warned"), [(83.5, True), (363, True), (364, False), (1461, False)])
def test_a_holdout_cut_below_its_default_is_a_warning(fast: Settings, history_days: float, warned: bool) -> None:
    warning = short_holdout_warning(history_days, fast)
    assert (warning is not None) == warned
    if warned:
        assert f"holdout of {int(history_days // 4)} days" in warning and "bench.short_series" in warning


def test_a_short_series_gets_no_level_network(fast: Settings) -> None:
    # 69 days of real load, under POWERSENSE_FORECAST_LEVEL_MIN_HISTORY_DAYS: the level persists
    # (bench.short_series); its holdout of 17 days, below the default 91, is a warning of its own
    model, hold = train_and_calibrate(grid_2022("2022-03-15", start="2022-01-05"), fast)
    assert model.level is None and not model.config.level_network
    assert hold["metrics"]["warning"].startswith("holdout of 17 days")


def test_a_short_series_is_trained_again_on_its_whole_history_after_the_holdout(fast: Settings) -> None:
    # 69 days of real load, a 17-day holdout: the weights and calibration come from the holdout, then the model is
    # trained on every day, the holdout's included (bench.short_series: better at every D+k)
    grid = grid_2022("2022-03-15", start="2022-01-05")
    model, hold = train_and_calibrate(grid, fast)
    end = grid.dropna(subset=["value"])["ts"].max()
    assert pd.Timestamp(model.meta["train_end"]) >= end > pd.Timestamp(hold["holdout"][0])
    assert trained_on_holdout(model, pd.Timestamp(hold["holdout"][0]))
    assert model.blend == model.meta["blend"] and model.blend and model.calibration
    # the forecast issued from the holdout's first origin is no longer the holdout model's: the profile changed
    first = hold["forecasts"]["origin"].min()
    again = issue(model, grid, [first])
    mine = hold["forecasts"][hold["forecasts"]["origin"] == first]
    assert len(again) == len(mine) and not np.allclose(again["yhat"].to_numpy(), mine["yhat"].to_numpy())


def test_a_series_without_a_level_network_is_trained_again_with_its_full_holdout(fast: Settings) -> None:
    # 70 days, a full 14-day holdout, under the level network's minimum history: the refit is about the model
    # (bench.short_series: better at every D+k up to 400 days of history), not the holdout's size
    grid = grid_2022("2022-03-16", start="2022-01-05")
    settings = fast.model_copy(update={"forecast_holdout_days": 14})
    model, hold = train_and_calibrate(grid, settings)
    assert model.level is None and not short_series(70, settings)
    assert trained_on_holdout(model, pd.Timestamp(hold["holdout"][0]))


def test_a_model_with_a_level_network_is_not_trained_again(fast: Settings) -> None:
    grid = grid_2022("2022-03-16", start="2022-01-05")
    settings = fast.model_copy(update={"forecast_holdout_days": 14, "forecast_level_min_history_days": 60})
    model, hold = train_and_calibrate(grid, settings)
    assert model.level is not None
    assert pd.Timestamp(model.meta["train_end"]) <= pd.Timestamp(hold["holdout"][0])
    assert not trained_on_holdout(model, pd.Timestamp(hold["holdout"][0]))


def test_the_refit_keeps_the_holdout_models_yearly_seasonality(fast: Settings) -> None:
    # 374 days of real hourly load, a 14-day holdout: the holdout model trains on under a year (no yearly term);
    # the whole history spans more than a year, and the refit still adds no yearly term fitted on one cycle
    grid, _ = load_data([ECO2MIX / f"eco2mix_national_{y}.csv.gz" for y in (2021, 2022)], 60)
    grid = grid[(grid["ts"] >= "2021-12-01") & (grid["ts"] < "2022-12-10")].reset_index(drop=True)
    assert grid["ts"].max() - grid["ts"].min() > pd.Timedelta(days=365)
    settings = fast.model_copy(update={"forecast_holdout_days": 14, "forecast_resolution_min": 60})
    model, hold = train_and_calibrate(grid, settings)
    assert trained_on_holdout(model, pd.Timestamp(hold["holdout"][0]))
    assert model.config.yearly_order == 0


def test_the_level_network_follows_its_minimum_history_setting(fast: Settings) -> None:
    # the same 69 days with the minimum set below them: the network is trained (the holdout warning is separate)
    settings = fast.model_copy(update={"forecast_level_min_history_days": 60})
    model, hold = train_and_calibrate(grid_2022("2022-03-15", start="2022-01-05"), settings)
    assert model.level is not None and model.config.level_network
    assert hold["metrics"]["warning"].startswith("holdout of 17 days")


def test_too_little_history_is_one_clear_line(fast: Settings, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-03-01", "2023-03-20")
    rc = main(["--data", str(csv), "--train-start", "2023-03-01", "--test-start", "2023-03-11", "--test-end",
               "2023-03-19", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("evaluate: error: only ") and "days of valid history" in err and "at least 14" in err


def test_an_hourly_series_gets_an_hourly_grid(fast: Settings, tmp_path: Path) -> None:
    csv = _csv(tmp_path, "2023-01-10", "2023-03-10", every="60min")
    grid, _ = load_data([csv], None)  # no --resolution: the configured 30 minutes would leave half the grid empty
    assert grid.attrs["resolution_min"] == 60 and grid.attrs["series_step_min"] == 60
    assert (grid["ts"].diff().dropna() == pd.Timedelta(hours=1)).all()
    assert grid["value"].notna().mean() > 0.99


def test_a_grid_finer_than_the_series_is_one_clear_line(fast: Settings, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-01-10", "2023-03-10", every="60min")
    assert main(["--data", str(csv), "--resolution", "30", "--test-start", "2023-02-22", "--test-end", "2023-03-08",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the series' step is 60 min: a 30-minute grid" in err


def test_a_history_shorter_than_the_training_window_is_announced(fast: Settings, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("POWERSENSE_FORECAST_TRAIN_DAYS", "1461")  # the default window, four years
    settings_mod.get_settings.cache_clear()
    csv = _csv(tmp_path, "2023-01-10", "2023-03-10", every="60min")  # 6 weeks before the test: the simple model
    assert main(["--data", str(csv), "--test-start", "2023-02-22", "--test-end", "2023-03-01", "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: the data start")]
    assert notes == [f"note: the data start on 2023-01-10, {1461 - 43} days after the training window's start: the "
                     f"first model's history spans 43 days instead of 1461"]


@pytest.mark.parametrize(("args", "noted"), [([], True), (["--timezone", "Europe/Paris"], False),
                                             (["--holidays", "FR"], False)])
def test_a_series_without_its_calendar_is_told_how_to_give_it(fast: Settings, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture, args: list[str],
                                                              noted: bool) -> None:
    csv = _csv(tmp_path, "2023-01-10", "2023-03-10", every="60min")  # 6 weeks before the test: the simple model
    assert main(["--data", str(csv), "--test-start", "2023-02-22", "--test-end", "2023-03-01", "--out",
                 str(tmp_path / "r"), "--no-progress", *args]) == 0
    out = capsys.readouterr().out
    assert ("note: a timestamp,value series is read with UTC days and no public holidays" in out) is noted


def test_evaluate_reads_named_columns(fast: Settings, tmp_path: Path) -> None:
    csv = _csv(tmp_path, "2023-01-10", "2023-03-10", every="60min")
    renamed = tmp_path / "renamed.csv"
    pd.read_csv(csv).rename(columns={"timestamp": "datetime_utc", "value": "load_mw"}).to_csv(renamed, index=False)
    out = tmp_path / "r"
    assert main(["--data", str(renamed), "--columns", "datetime_utc,load_mw", "--test-start", "2023-02-22",
                 "--test-end", "2023-03-01", "--out", str(out), "--no-progress"]) == 0
    report = _strict(out / "forecast_eval.json")
    assert report["calendar"] == {"timezone": "UTC", "holidays": None} and report["resolution_min"] == 60
    assert report["models"]["powersense"]["D+1"]["mape"] is not None


@pytest.mark.parametrize("args", [["--timezone", "Mars/Olympus"], ["--holidays", "XX"]])
def test_unknown_calendar_is_one_clear_line(fast: Settings, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           args: list[str]) -> None:
    csv = _csv(tmp_path, "2023-03-01", "2023-03-03")
    assert main(["--data", str(csv), "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("evaluate: error: unknown ")


def test_short_history_degrades_to_the_best_simple_model(fast: Settings, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    csv = _csv(tmp_path, "2023-01-10", "2023-03-10", every="60min")  # 6 weeks before the test: < 56 days
    out = tmp_path / "r"
    assert main(["--data", str(csv), "--train-start", "2023-01-10", "--test-start", "2023-02-22", "--test-end",
                 "2023-03-08", "--timezone", "Europe/Paris", "--holidays", "FR", "--resolution", "60",
                 "--out", str(out), "--no-progress"]) == 0
    report = _strict(out / "forecast_eval.json")
    assert report["degraded"] and "best simple model" in report["degraded"][0]
    assert "degraded: " in capsys.readouterr().out
    assert report["calendar"] == {"timezone": "Europe/Paris", "holidays": "FR"} and report["resolution_min"] == 60
    # the simple models only (one per 24-hour lead day, service.best_simple_model: tests/test_simple_fallback.py)
    sources = {s for m in report["models"]["powersense"].values() for s in m["sources"]}
    assert sources <= {"seasonal_naive", "daily_naive"} and report["retrains"][0]["decision"] == "simple"


def test_a_series_too_short_for_the_model_has_an_interval_at_every_lead_day(fast: Settings, tmp_path: Path) -> None:
    # 34 days of valid history before the test: an 8-day holdout held no D+7 errors, so the backtest issued no
    # interval there while production's fallback (calibrated on daily origins before the data's end) did; now both
    # share one rule
    csv = _csv(tmp_path, "2023-01-18", "2023-03-10", every="60min")
    out = tmp_path / "r"
    assert main(["--data", str(csv), "--train-start", "2023-01-18", "--test-start", "2023-02-22", "--test-end",
                 "2023-03-08", "--resolution", "60", "--out", str(out), "--no-progress"]) == 0
    report = _strict(out / "forecast_eval.json")
    assert report["degraded"]
    assert "best simple model per 24-hour lead day over the last 28 days" in report["degraded"][0]
    by_lead = report["models"]["powersense"]
    assert [by_lead[f"D+{k}"]["coverage"] is not None for k in range(1, 8)] == [True] * 7


def test_a_run_without_a_model_says_so_instead_of_an_empty_timing(fast: Settings, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    # it printed "training + calibration per retrain: [] s"
    csv = _csv(tmp_path, "2023-01-10", "2023-03-10", every="60min")
    assert main(["--data", str(csv), "--train-start", "2023-01-10", "--test-start", "2023-02-22", "--test-end",
                 "2023-03-08", "--resolution", "60", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("no model trained (the simple model served every origin); wrote "), last


@pytest.mark.slow
def test_twelve_weeks_train_with_a_sized_holdout_and_never_lose_to_naive_on_it(fast: Settings, tmp_path: Path) -> None:
    csv = _csv(tmp_path, "2022-12-01", "2023-03-10")
    out = tmp_path / "r"
    assert main(["--data", str(csv), "--train-start", "2022-12-01", "--test-start", "2023-02-23", "--test-end",
                 "2023-03-08", "--timezone", "UTC", "--holidays", "none", "--out", str(out), "--no-progress"]) == 0
    report = _strict(out / "forecast_eval.json")
    first = report["retrains"][0]
    assert report["degraded"] is None and first["decision"] == "promoted"
    # 83.5 days of history before the first origin: a 20-day holdout (a quarter of it), not the default 91 that
    # would eat the series
    hold = [pd.Timestamp(x) for x in report["holdout_metrics"]["holdout"]]
    assert (hold[1] - hold[0]) == pd.Timedelta(days=20)
    assert first["holdout_mape"] <= first["holdout_naive_mape"]
    # ... and the user is told that weights learnt on 20 origins may not hold (bench.short_series measured it)
    assert report["warnings"] == [first["warning"]] and first["warning"].startswith("holdout of 20 days")
    assert report["calendar"] == {"timezone": "UTC", "holidays": None}


@pytest.mark.slow
def test_a_retrained_short_series_is_not_compared_with_a_model_that_saw_its_holdout(fast: Settings,
                                                                                     tmp_path: Path) -> None:
    # retrained weekly: the model of the week before was refit on all its history, the new holdout's days included,
    # so the promotion compares the new model with seasonal naive only, and says why
    csv = _csv(tmp_path, "2022-12-01", "2023-03-10")
    out = tmp_path / "r"
    assert main(["--data", str(csv), "--train-start", "2022-12-01", "--test-start", "2023-02-23", "--test-end",
                 "2023-03-08", "--timezone", "UTC", "--holidays", "none", "--retrain-days", "7", "--out", str(out),
                 "--no-progress"]) == 0
    first, second = _strict(out / "forecast_eval.json")["retrains"][:2]
    assert "not compared" not in first["reason"]  # nothing to compare with yet
    assert second["current_holdout_mape"] is None and "current model trained on this holdout" in second["reason"]

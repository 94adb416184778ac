"""The deployed path of the anomaly evaluation (``evaluate-anomalies --expectation deployed``): the real forecast
model (tiny configuration), issued on the forecast stage's cron from the series as published, read the way detect
reads the forecasts table. Real eco2mix data throughout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.detection import evaluate
from shared.detection.residual import regular_grid
from shared.detection.service import FORECAST_MAX_LEAD_HOURS
from shared.ingest.history import read_history
from shared.settings import Settings
from tests.fixtures_forecast import fast_model_settings

START, END = pd.Timestamp("2023-04-03", tz="UTC"), pd.Timestamp("2023-04-04", tz="UTC")


@pytest.fixture
def fc_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    yield from fast_model_settings(monkeypatch, tmp_path)


def _x(start: pd.Timestamp, end: pd.Timestamp, days: int) -> tuple[list[Path], pd.Series]:
    files = evaluate.default_files(start, end, days)
    hist = read_history(files, start - pd.Timedelta(days=days), end)
    return files, regular_grid(hist.rename(columns={"consommation": "value"})[["ts", "value"]])


def test_forecasts_are_issued_on_the_stack_schedule_from_the_past_only(fc_settings: Settings) -> None:
    files, x = _x(START, END, fc_settings.forecast_train_days + 1)
    model, info = evaluate.train_deployed(files, START, fc_settings)
    assert pd.Timestamp(info["train_start"]) >= START - pd.Timedelta(days=fc_settings.forecast_train_days)
    schedule = evaluate.forecast_schedule()
    assert schedule == "7 * * * *"  # openfaas-stack.yml's forecast cron
    rows, figures = evaluate.deployed_forecasts(model, x, START, END, fc_settings, "consommation", schedule, False)
    issued = pd.DatetimeIndex(rows["issued_at"].unique())
    assert figures["issues"] == len(issued) == 30 and (issued.minute == 7).all()  # 6 h before START, then hourly
    lead = pd.DatetimeIndex(rows["ts"]) - pd.DatetimeIndex(rows["issued_at"])
    assert lead.min() >= pd.Timedelta(0) and lead.max() <= pd.Timedelta(hours=FORECAST_MAX_LEAD_HOURS)
    assert np.isfinite(rows["yhat"]).all() and figures["fallback_issues"] == 0 and figures["model_issues"] == 30
    # causal: what happens after an issue (here a 10 % dip from 12:00) changes no forecast issued before it
    cut = START + pd.Timedelta(hours=12)
    changed = x.where(x.index < cut, x * 0.9)
    again, _ = evaluate.deployed_forecasts(model, changed, START, END, fc_settings, "consommation", schedule, False)
    before = rows["issued_at"] <= cut
    pd.testing.assert_frame_equal(again[again["issued_at"] <= cut].reset_index(drop=True),
                                  rows[before].reset_index(drop=True))
    assert before.any() and (~before).any()


def test_deployed_report_is_strict_json_with_the_profile_figure_beside_it(
        fc_settings: Settings, tmp_path: Path) -> None:
    files, _ = _x(START, END + pd.Timedelta(days=2), fc_settings.forecast_train_days + 1)
    code = evaluate.main(["--expectation", "deployed", "--data", *map(str, files), "--start", START.isoformat(),
                          "--end", (END + pd.Timedelta(days=2)).isoformat(), "--per-kind", "1", "--out", str(tmp_path)])
    assert code == 0 and (tmp_path / "anomaly_eval_deployed.png").stat().st_size > 0
    report = json.loads((tmp_path / "anomaly_eval_deployed.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert set(report["detectors"]) == {"powersense", "powersense_profile", "zscore_baseline"}
    for det in ("powersense", "powersense_profile"):
        assert {"precision", "recall", "f1"} <= set(report["detectors"][det]["overall"])
    assert report["detectors"]["powersense"]["false_alarms_per_week"] is None  # clean replay not asked for
    assert report["deployed"]["variants"]["injected"]["points_with_forecast"] > 0.9
    assert report["deployed"]["forecast_schedule"] == "7 * * * *" and report["deployed"]["approximations"]


def test_an_hourly_series_is_replayed_on_an_hourly_grid(fc_settings: Settings, tmp_path: Path) -> None:
    """Real load at its whole hours only, as a timestamp,value CSV (an hourly series such as an ENTSO-E export):
    the deployed model gets the finest grid the series fills (60 min), as evaluate gives it; a 30-minute grid was a
    one-line error before."""
    end = END + pd.Timedelta(days=2)
    _, x = _x(START, end, fc_settings.forecast_train_days + 1)
    hourly = x[(x.index.minute == 0) & x.notna()]
    csv = tmp_path / "hourly.csv"
    pd.DataFrame({"timestamp": hourly.index.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": hourly.to_numpy()}).to_csv(
        csv, index=False)
    assert evaluate.main(["--expectation", "deployed", "--data", str(csv), "--start", START.isoformat(),
                          "--end", end.isoformat(), "--per-kind", "1", "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "anomaly_eval_deployed.json").read_text())
    assert report["step_min"] == report["deployed"]["resolution_min"] == 60
    assert report["deployed"]["variants"]["injected"]["points_with_forecast"] > 0.9

"""The forecast stage with the weather (issue 12) on real data in chDB: the weather model is issued only with
fresh weather covering every target; stale, missing, short or disabled weather gives the weather-free model's
forecast, flagged in ``forecasts.weather_status`` (and the query API), never a failed run; one training per run.

Load: the shipped eco2mix consumption Jan – 15 Mar 2023. Realised temperature: the shipped Enedis series up to
13 March (the archive's lag); the temperature "forecast" stored at 06:20 = the same shipped values, as the demo's
replay serves them (a perfect forecast: this checks the data path, not what weather is worth).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared import clock
from shared.artifacts import LocalArtifactStore
from shared.forecasting import service
from shared.query.models import ForecastParams
from shared.query.service import forecast_run
from shared.settings import Settings
from shared.store import Store
from shared.weather.featurize import featurize_weather
from shared.weather.service import backfill
from tests.fixtures_forecast import assert_start_up_fails, fast_model_settings, history, insert_measurements
from tests.test_weather_featurize import ISSUED_1, forecast_window, store_forecast

NOW = datetime(2023, 3, 15, 10, 20, tzinfo=UTC)  # load data ends at 10:00 UTC
FEATURIZED = datetime(2023, 3, 15, 10, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def winter_2023() -> pd.DataFrame:
    return history("2023-01-01", "2023-03-15 10:00")


@pytest.fixture(scope="module")
def enedis() -> pd.DataFrame:
    from shared.weather.enedis import read_enedis
    from shared.weather.service import WEATHER_DIR

    frame = read_enedis(sorted(WEATHER_DIR.glob("enedis_temperature_lissee_nationale_2023.csv.gz")))
    return frame[["ts", "realised"]].rename(columns={"realised": "value"})


def _with_weather(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, winter_2023: pd.DataFrame,
                  enedis: pd.DataFrame, realised: list[tuple[date, date]]) -> Iterator[Settings]:
    """The load, the realised temperature over the ``realised`` spans (as backfilled on 13 March), the temperature
    forecast issued at 06:20 and featurize's weather run; the tests' fast model settings."""
    insert_measurements(store, winter_2023)
    gen = fast_model_settings(monkeypatch, tmp_path)
    settings = next(gen).model_copy(update={"poll_bootstrap": False})
    clock.install(clock.SimulatedClock(datetime(2023, 3, 13, 6, tzinfo=UTC), 0.0))
    try:
        for first, end in realised:
            backfill(store, settings, first, end, shipped=True)
    finally:
        clock.install(None)
    store_forecast(store, settings, forecast_window(enedis, ISSUED_1), ISSUED_1)
    assert featurize_weather(store, settings, FEATURIZED)["rows_out"] > 0
    yield settings
    next(gen, None)


@pytest.fixture
def wx_settings(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, winter_2023: pd.DataFrame,
                enedis: pd.DataFrame) -> Iterator[Settings]:
    yield from _with_weather(store, monkeypatch, tmp_path, winter_2023, enedis, [(date(2023, 1, 1), date(2023, 3, 13))])


def _rows(store: Store, run_id: str) -> pd.DataFrame:
    sql = "select * from {db:Identifier}.forecasts where run_id = {r:String} order by ts"
    return store.query_df(sql, {"r": run_id})


def _run(store: Store, settings: Settings, artifacts: LocalArtifactStore, run_id: str,
         now: datetime = NOW, train: bool = True) -> service.ForecastResult:
    return service.run_forecast(store, settings, lambda: artifacts, now, run_id, train=train)


@pytest.mark.slow
def test_weather_model_used_when_fresh_else_the_weather_free_model_flagged(store: Store, wx_settings: Settings,
                                                                           tmp_path: Path) -> None:
    artifacts = LocalArtifactStore(tmp_path / "models")
    # a fresh install trains the weather-free model first (the safety net); no weather model yet
    first = _run(store, wx_settings, artifacts, "run-1")
    assert first.trained is not None and first.trained["model"] == "weather_free"
    assert first.quality == "model" and set(_rows(store, "run-1")["weather_status"]) == {"no_model"}
    # the next run trains the weather model (one training per run) and issues it with the weather known now
    second = _run(store, wx_settings, artifacts, "run-2")
    assert second.trained is not None and second.trained["model"] == "weather"
    assert second.trained.get("decision") == "promoted", second.trained
    used = _rows(store, "run-2")
    assert set(used["weather_status"]) == {"used"} and set(used["quality"]) == {"model"}
    assert set(used["model_version"]) == {second.model_version}
    current = artifacts.current(service.weather_series_key(wx_settings))
    assert current is not None and current["version"] == second.model_version
    assert second.details["weather_issued_at"] == pd.Timestamp(ISSUED_1).isoformat()
    # its holdout was scored with forecast errors, not the realised temperature (the one stored forecast was issued
    # after every holdout origin, so the error is the simulated one at each)
    assert "simulated forecast errors" in current["backtest_metrics"]["holdout"]["holdout_weather"]
    assert "no stored forecast known at any" in current["backtest_metrics"]["holdout"]["holdout_weather"]
    # nothing is due two hours later: no training
    assert _run(store, wx_settings, artifacts, "run-3", NOW.replace(hour=12)).trained == {"trained": False}

    # the weather-free model's forecast, same run time: the reference of every degraded run
    off = _run(store, wx_settings.model_copy(update={"forecast_weather": False}), artifacts, "run-off", train=False)
    ref = _rows(store, "run-off")
    assert set(ref["weather_status"]) == {"off"} and off.quality == "model"
    assert not np.allclose(ref["yhat"], used["yhat"])  # the weather model's forecast is another one

    # stale: the newest temperature forecast (06:20) is older than the limit → weather-free, flagged
    stale = _run(store, wx_settings.model_copy(update={"weather_max_age_h": 2.0}), artifacts, "run-stale", train=False)
    rows = _rows(store, "run-stale")
    assert set(rows["weather_status"]) == {"stale"} and stale.quality == "model"
    assert "POWERSENSE_WEATHER_MAX_AGE_H" in stale.details["weather_reason"]
    np.testing.assert_allclose(rows["yhat"], ref["yhat"], rtol=1e-9)
    assert rows["model_version"].iloc[0] == ref["model_version"].iloc[0] != second.model_version

    # missing: no weather featurize run as of 09:50 (the first one was at 10:05)
    early = datetime(2023, 3, 15, 9, 50, tzinfo=UTC)
    miss = _run(store, wx_settings, artifacts, "run-missing", early, train=False)
    assert set(_rows(store, "run-missing")["weather_status"]) == {"missing"} and miss.quality == "model"
    assert miss.rows == len(_rows(store, "run-missing")) > 7 * 48

    # incomplete: a horizon past the stored forecast's last hour
    far = _run(store, wx_settings.model_copy(update={"forecast_horizon_days": 10}), artifacts, "run-short",
               train=False)
    assert set(_rows(store, "run-short")["weather_status"]) == {"incomplete"} and far.quality == "model"

    # failed: a weather model whose files do not load → the weather-free model, flagged
    key = service.weather_series_key(wx_settings)
    artifacts.save_version(key, "broken", {"model.json": b"not a model"}, {"trained_at": pd.Timestamp(NOW).isoformat()})
    artifacts.set_current(key, "broken")
    broken = _run(store, wx_settings, artifacts, "run-failed", train=False)
    rows = _rows(store, "run-failed")
    assert set(rows["weather_status"]) == {"failed"} and broken.quality == "model"
    np.testing.assert_allclose(rows["yhat"], ref["yhat"], rtol=1e-9)

    # the query API's forecast endpoint says which
    resp = forecast_run(store, ForecastParams(source=wx_settings.series_source, metric=wx_settings.series_metric,
                                              run_id="run-2"))
    assert resp.weather_status == "used"


def test_no_model_and_no_weather_gives_a_flagged_seasonal_naive(store: Store, wx_settings: Settings,
                                                                 tmp_path: Path) -> None:
    res = _run(store, wx_settings, LocalArtifactStore(tmp_path / "none"), "run-naive", train=False)
    rows = _rows(store, "run-naive")
    assert res.quality == "fallback" and set(rows["weather_status"]) == {"unused"}
    assert res.details["weather_status"] == "unused"


@pytest.mark.parametrize(("name", "value"), [
    ("POWERSENSE_WEATHER_MAX_AGE_H", "0"),
    ("POWERSENSE_WEATHER_MAX_AGE_H", "twelve"),
    ("POWERSENSE_WEATHER_MAX_AGE_H", "100"),
    ("POWERSENSE_FORECAST_WEATHER", "perhaps"),
    ("POWERSENSE_FORECAST_STANDBY_RETRAIN_HOURS", "-1"),
])
def test_bad_weather_settings_fail_at_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                   value: str) -> None:
    assert_start_up_fails(monkeypatch, name, value, name)


def test_training_plan_trains_one_model_per_run(store: Store, settings: Settings, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Which model a run trains (no training here: pointers to stored versions on the real local artifact store)."""
    # the stored versions hold no networks: the plan's check that the issued model loads (a damaged one is retrained
    # at once: tests/test_forecast_damaged_model.py) is taken as passed
    monkeypatch.setattr(service, "cached_model", lambda *args: None)
    art = LocalArtifactStore(tmp_path / "plan")
    now = pd.Timestamp(NOW)

    def promote(key: str, hours_old: float) -> None:
        version = f"v{hours_old:g}h"
        art.save_version(key, version, {"model.json": b"{}"},
                         {"trained_at": (now - pd.Timedelta(hours=hours_old)).isoformat()})
        art.set_current(key, version)

    def plan(fresh: bool = True, trainable: bool = True, **kw: object) -> tuple[bool, str] | None:
        s = settings.model_copy(update=kw) if kw else settings
        return service.training_plan(store, s, art, now, weather_fresh=fresh, weather_trainable=trainable)

    plain, weather = service.series_key(settings), service.weather_series_key(settings)
    assert plan() == (False, "no model")  # the safety net first, even with fresh weather
    promote(plain, 1)
    assert plan() == (True, "no model")  # then the weather model the run will issue
    assert plan(trainable=False) is None  # no realised weather to train it on: nothing to do
    assert plan(fresh=False) == (True, "standby: no model")  # feed down: the weather model is the standby
    promote(weather, 1)
    assert plan() is None and plan(fresh=False) is None
    promote(weather, 30)  # the model in use is older than forecast_retrain_hours (24 h)
    assert plan() == (True, "model older than 24 h")
    assert plan(fresh=False) is None  # as the standby it is young enough (168 h)
    promote(plain, 30)
    assert plan(fresh=False) == (False, "model older than 24 h")
    assert plan() == (True, "model older than 24 h")  # one model per run: the one in use first
    promote(weather, 1)
    assert plan() is None  # the weather-free standby is 30 h old < 168 h
    promote(plain, 200)
    assert plan() == (False, "standby: model older than 168 h")
    assert plan(forecast_weather=False) == (False, "model older than 24 h")  # weather off: as before
    # a weather model the promotion rule rejected an hour ago is not retried at every run
    art = LocalArtifactStore(tmp_path / "rejected")
    promote(plain, 1)
    art.save_version(weather, "rejected", {"model.json": b"{}"},
                     {"trained_at": (now - pd.Timedelta(hours=1)).isoformat(), "decision": "rejected"})
    assert plan() is None


def test_a_horizon_past_the_temperature_forecast_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # horizon 10 with Open-Meteo's 9 days: every run's weather was "incomplete", the weather-free model for good
    # and its alert firing, with no word at start-up
    from tests.fixtures_forecast import assert_start_up_fails

    assert_start_up_fails(monkeypatch, "POWERSENSE_FORECAST_HORIZON_DAYS", "10",
                          r"POWERSENSE_WEATHER_FORECAST_DAYS \(9\) does not cover the forecast horizon: "
                          r"POWERSENSE_FORECAST_HORIZON_DAYS \(10\) needs at least 12")


def test_a_longer_horizon_with_a_longer_temperature_forecast_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import settings as settings_mod

    monkeypatch.setenv("POWERSENSE_FORECAST_HORIZON_DAYS", "10")
    monkeypatch.setenv("POWERSENSE_WEATHER_FORECAST_DAYS", "12")
    settings_mod.get_settings.cache_clear()
    try:
        assert settings_mod.get_settings().forecast_horizon_days == 10
    finally:
        settings_mod.get_settings.cache_clear()


# Realised temperature with a hole (an archive outage longer than poll-weather's catch-up, never backfilled) inside
# the weather model's training holdout (its last 18 days): 1–4 March; 27 February – 8 March, most of its origins.
HOLE_1_4_MARCH = [(date(2023, 1, 1), date(2023, 3, 1)), (date(2023, 3, 5), date(2023, 3, 13))]
HOLE_27_FEB_8_MARCH = [(date(2023, 1, 1), date(2023, 2, 27)), (date(2023, 3, 9), date(2023, 3, 13))]


@pytest.fixture
def holed_settings(request: pytest.FixtureRequest, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                   winter_2023: pd.DataFrame, enedis: pd.DataFrame) -> Iterator[Settings]:
    """As ``wx_settings``, with the realised temperature over the spans the test names (indirect parameter)."""
    yield from _with_weather(store, monkeypatch, tmp_path, winter_2023, enedis, request.param)


@pytest.mark.slow
@pytest.mark.parametrize("holed_settings", [HOLE_1_4_MARCH], indirect=True)
def test_a_hole_in_the_realised_temperature_leaves_its_holdout_origins_out_not_the_weather_model(
        store: Store, holed_settings: Settings, tmp_path: Path) -> None:
    # the weather model's training failed at every hourly run ("weather model: no weather for N target steps") for
    # as long as the hole stayed in its holdout: no weather model, and a training's CPU spent each hour for nothing
    artifacts = LocalArtifactStore(tmp_path / "models")
    assert _run(store, holed_settings, artifacts, "run-1").trained["model"] == "weather_free"  # type: ignore[index]
    second = _run(store, holed_settings, artifacts, "run-2")
    assert second.trained is not None and second.trained["model"] == "weather", second.trained
    assert second.trained.get("decision") == "promoted", second.trained
    holdout = artifacts.current(service.weather_series_key(holed_settings))["backtest_metrics"]["holdout"]  # type: ignore[index]
    # every origin whose 8 days of targets meet the hole (1–4 March) is left out, and said so; the others are scored
    skipped = holdout["origins_without_weather"]
    assert skipped["count"] > 0 and skipped["first"].startswith("2023-02-2")
    assert set(_rows(store, "run-2")["weather_status"]) == {"used"}


@pytest.mark.slow
@pytest.mark.parametrize("holed_settings", [HOLE_27_FEB_8_MARCH], indirect=True)
def test_a_weather_training_that_cannot_be_scored_leaves_the_run_to_the_weather_free_model(
        store: Store, holed_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the failed weather training came first at every run, so the weather-free model was never retrained meanwhile
    artifacts = LocalArtifactStore(tmp_path / "models")
    settings = holed_settings.model_copy(update={"forecast_retrain_hours": 0.5})  # due again an hour later
    first = _run(store, settings, artifacts, "run-1")
    assert first.trained is not None and first.trained["model"] == "weather_free"
    second = _run(store, settings, artifacts, "run-2", NOW.replace(hour=11))
    assert second.trained is not None, second.details
    # the weather training stopped before any fit, naming the backfill; the run's training went to the other model
    assert "weather-backfill --archive --start 2023-02-" in second.trained["weather_error"]
    # said as a warning without a traceback: it is retried every run, for as long as the hole lies in the holdout
    held = [r for r in caplog.records if getattr(r, "event", "") == "training_failed"]
    assert [(r.levelno, r.exc_info) for r in held] == [(logging.WARNING, None)]
    assert second.trained["model"] == "weather_free" and second.trained["trained"] is True, second.trained
    assert second.trained["version"] != first.trained["version"]
    assert artifacts.current(service.weather_series_key(settings)) is None

"""The real-forecast backtest's weather provider (shared/weather/provider.py) on chDB: each origin gets the
temperature forecast as stored at that origin, never a later version; and ``python -m shared
evaluate-weather-store`` end to end on the shipped 2023 load (forecasts = the shipped Enedis values stored daily,
as the demo's replay serves them; the +3 °C revision is a synthetic edge case)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from shared import clock
from shared.errors import BadRequestError
from shared.forecasting.evaluate import TARGET_SPAN, local_midnight
from shared.settings import Settings
from shared.store import Store
from shared.weather import ENEDIS_SOURCE
from shared.weather.features import WARMUP, WEATHER_COLUMNS, features_for_origins
from shared.weather.featurize import featurize_weather, read_weather_run
from shared.weather.provider import evaluate_store, store_provider, uncovered_origins
from shared.weather.service import backfill, enedis_rows, upsert
from tests.fixtures_forecast import fast_model_settings, history, insert_measurements
from tests.test_weather_featurize import (  # noqa: F401
    ISSUED_1,
    ISSUED_2,
    REALISED_END,
    enedis,
    forecast_window,
    store_forecast,
)

HORIZON = pd.Timedelta(days=8, hours=12)


@pytest.fixture
def cfg(settings: Settings) -> Settings:
    return settings.model_copy(update={"poll_bootstrap": False})


def test_each_origin_reads_the_forecast_known_then(store: Store, cfg: Settings,
                                                   enedis: pd.DataFrame) -> None:  # noqa: F811
    store_forecast(store, cfg, forecast_window(enedis, ISSUED_1), ISSUED_1)
    store_forecast(store, cfg, forecast_window(enedis, ISSUED_2).assign(value=lambda f: f["value"] + 3.0), ISSUED_2)
    before, after = pd.Timestamp("2023-03-15T11:00Z"), pd.Timestamp("2023-03-15T12:00Z")
    early = pd.Timestamp("2023-03-15T05:00Z")  # before any poll
    got = store_provider(store, HORIZON, 30)(pd.DatetimeIndex([early, before, after]))
    truth = enedis.set_index("ts")["value"]
    ahead = got[got["ts"] >= got["origin"]]
    one = ahead[ahead["origin"] == before].set_index("ts")["temp_degc"]
    two = ahead[ahead["origin"] == after].set_index("ts")["temp_degc"]
    assert len(got[got["origin"] == early]) == 0
    assert one.index.min() == before and one.to_numpy() == pytest.approx(truth.reindex(one.index).to_numpy())
    assert two.index.min() == after and two.to_numpy() == pytest.approx(truth.reindex(two.index).to_numpy() + 3.0)
    # the first poll's forecast ends 9 days after its 06:00 hour: it covers 8.5 days from 11:00, not 9
    assert uncovered_origins(got, pd.DatetimeIndex([early, before, after]), HORIZON) == [early]
    assert uncovered_origins(got, pd.DatetimeIndex([before]), pd.Timedelta(days=9)) == [before]


ORIGIN = pd.Timestamp("2023-03-15T10:00Z")  # the hour test_weather_featurize's run at 10:20 splits at


@pytest.fixture
def known_then(store: Store, cfg: Settings, enedis: pd.DataFrame) -> Settings:  # noqa: F811
    """The archive stored up to 13 March (stored on the 13th), the 06:20 forecast of the 15th."""
    clock.install(clock.SimulatedClock(datetime(2023, 3, 13, 6, tzinfo=UTC), 0.0))
    try:
        backfill(store, cfg, date(2023, 1, 1), REALISED_END, shipped=True)
    finally:
        clock.install(None)
    store_forecast(store, cfg, forecast_window(enedis, ISSUED_1), ISSUED_1)
    return cfg


def test_the_past_before_an_origin_is_the_temperature_known_then_not_what_arrived_later(
        store: Store, known_then: Settings, enedis: pd.DataFrame) -> None:  # noqa: F811
    provider = store_provider(store, HORIZON, 30)
    first = provider(pd.DatetimeIndex([ORIGIN]))
    past = first[first["ts"] < ORIGIN].set_index("ts")["temp_degc"]
    assert past.index.min() == ORIGIN - WARMUP and past.index.max() == ORIGIN - pd.Timedelta(minutes=30)
    # after the newest realised value (12 March 23:30), the forecast's own hours, as featurize combines them
    truth = enedis.set_index("ts")["value"]
    hours = past.index[(past.index >= pd.Timestamp(REALISED_END, tz="UTC")) & (past.index.minute == 0)]
    assert len(hours) == 58 and past[hours].to_numpy() == pytest.approx(truth.reindex(hours).to_numpy())
    # the archive of 13–15 March arrives on the 20th, 2 °C warmer (a synthetic revision): not read for the origin
    late = enedis[(enedis["ts"] >= pd.Timestamp(REALISED_END, tz="UTC")) & (enedis["ts"] < ORIGIN)]
    rows = enedis_rows(late.rename(columns={"value": "realised"}).assign(realised=lambda f: f["realised"] + 2.0,
                                                                         normal=float("nan")))
    upsert(store, known_then, rows, source=ENEDIS_SOURCE, batch_id="test-late-archive",
           inserted_at=datetime(2023, 3, 20, tzinfo=UTC))
    pd.testing.assert_frame_equal(provider(pd.DatetimeIndex([ORIGIN])), first)
    # … while an origin after its arrival reads it
    later = pd.Timestamp("2023-03-20T01:00Z")
    store_forecast(store, known_then, forecast_window(enedis, later.to_pydatetime()), later.to_pydatetime())
    got = provider(pd.DatetimeIndex([later])).set_index("ts")["temp_degc"]
    assert got[hours].to_numpy() == pytest.approx(truth.reindex(hours).to_numpy() + 2.0)


def test_the_backtest_path_at_an_origin_is_featurizes_path_at_that_hour(
        store: Store, known_then: Settings) -> None:
    """One definition: the provider's past and forecast, derived by ``features_for_origins``, are the weather
    features featurize wrote for a run in the origin's hour (its smoothing started earlier: equal to 1e-4 °C)."""
    run_at = ORIGIN + pd.Timedelta(minutes=20)
    assert featurize_weather(store, known_then, run_at.to_pydatetime())["rows_out"] > 0
    run = read_weather_run(store, known_then, run_at.to_pydatetime(), ORIGIN)
    assert run is not None
    empty = pd.DataFrame({"ts": pd.DatetimeIndex([], tz="UTC"), "temp_degc": pd.Series(dtype=float)})
    got = features_for_origins(empty, store_provider(store, HORIZON, 30)(pd.DatetimeIndex([ORIGIN])),
                               pd.DatetimeIndex([ORIGIN]), 30, False)
    both = got.merge(run.path, on="ts", suffixes=("", "_featurize"))
    assert len(both) == len(got) > 24 * 2 * 8
    for column in WEATHER_COLUMNS:
        assert both[column].to_numpy() == pytest.approx(both[f"{column}_featurize"].to_numpy(), abs=1e-4)


def test_training_holdout_reads_stored_forecasts_where_known_and_simulated_errors_elsewhere(
        store: Store, cfg: Settings, enedis: pd.DataFrame) -> None:  # noqa: F811
    """Production's training holdout (``service.holdout_weather``): the forecast stored as known at an origin where
    one covers it, else the realised temperature plus the simulated forecast error — never the realised one alone."""
    from shared.forecasting.service import holdout_weather

    store_forecast(store, cfg, forecast_window(enedis, ISSUED_1).assign(value=lambda f: f["value"] + 3.0), ISSUED_1)
    realised = enedis.rename(columns={"value": "temp_degc"})
    early, later = pd.Timestamp("2023-03-15T05:00Z"), pd.Timestamp("2023-03-15T11:00Z")
    provider = holdout_weather(realised, None, cfg, store)
    got = provider(pd.DatetimeIndex([early, later]))
    got = got[got["ts"] >= got["origin"]]  # the forecasts (a stored origin also brings its past as known then)
    truth = realised.set_index("ts")["temp_degc"]
    stored = got[got["origin"] == later].set_index("ts")["temp_degc"]
    assert stored.to_numpy() == pytest.approx(truth.reindex(stored.index).to_numpy() + 3.0)
    simulated = got[got["origin"] == early].set_index("ts")["temp_degc"]
    err = simulated - truth.reindex(simulated.index)
    assert err.abs().max() > 0.5 and err.abs().max() < 15  # a forecast error of a few °C, not a copy
    assert provider.label.startswith("stored temperature forecast as known at 1 of 2 holdout origins")


def test_training_holdout_without_a_store_is_simulated_at_every_origin_and_repeatable(
        cfg: Settings, enedis: pd.DataFrame) -> None:  # noqa: F811
    from shared.forecasting.service import holdout_weather

    realised = enedis.rename(columns={"value": "temp_degc"})
    origins = pd.DatetimeIndex(["2023-02-01T11:00Z", "2023-02-02T11:00Z"])
    first = holdout_weather(realised, None, cfg, None)
    a, b = first(origins), holdout_weather(realised, None, cfg, None)(origins)
    assert a["temp_degc"].to_numpy() == pytest.approx(b["temp_degc"].to_numpy())
    truth = realised.set_index("ts")["temp_degc"].reindex(pd.DatetimeIndex(a["ts"])).to_numpy()
    assert abs(a["temp_degc"].to_numpy() - truth).max() > 0.5
    assert first.label.endswith("at all 2 holdout origins (no stored forecast known at any)")


@pytest.fixture
def fast(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    gen = fast_model_settings(monkeypatch, tmp_path)
    yield next(gen).model_copy(update={"poll_bootstrap": False})
    next(gen, None)


@pytest.mark.slow
def test_backtest_with_stored_forecasts_against_the_weather_free_model(store: Store, fast: Settings,
                                                                       enedis: pd.DataFrame,  # noqa: F811
                                                                       tmp_path: Path) -> None:
    insert_measurements(store, history("2023-01-01", "2023-03-15 10:00"))
    clock.install(clock.SimulatedClock(datetime(2023, 3, 6, tzinfo=UTC), 0.0))
    try:
        backfill(store, fast, date(2023, 1, 1), date(2023, 3, 5), shipped=True)
    finally:
        clock.install(None)
    test_start, test_end = local_midnight("2023-03-08"), local_midnight("2023-03-10")
    with pytest.raises(BadRequestError, match="no stored temperature forecast covering D\\+7"):
        evaluate_store(store, fast, test_start, test_end, retrain_days=0, origin_hour=12,
                       now=datetime(2023, 3, 15, tzinfo=UTC))
    for day in (6, 7, 8):  # poll-weather's morning runs before the noon origins
        issued = datetime(2023, 3, day, 6, 20, tzinfo=UTC)
        store_forecast(store, fast, forecast_window(enedis, issued), issued)
    assert featurize_weather(store, fast, datetime(2023, 3, 9, tzinfo=UTC))["rows_out"] > 0
    report = evaluate_store(store, fast, test_start, test_end, retrain_days=0, origin_hour=12,
                            now=datetime(2023, 3, 15, tzinfo=UTC))
    assert report["origins"]["count"] == 2
    for name in ("powersense_weather_store", "weather_free", "seasonal_naive"):
        assert report["models"][name]["D+1"]["mape"] is not None
    assert report["retrains"]["weather"][0]["decision"] == "promoted"
    # the forecast's hours read from each origin: its horizon and one hour more (not its past as known then)
    assert report["forecast_hours_per_origin"] == TARGET_SPAN / pd.Timedelta(hours=1) + 1


def test_command_refuses_a_period_without_stored_forecasts(tmp_path: Path) -> None:
    """``python -m shared evaluate-weather-store`` on an empty store: one clear line, exit status 2."""
    import os
    import subprocess
    import sys

    from shared.settings import REPO_ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERSENSE_")}
    env.update(POWERSENSE_CHDB_PATH=str(tmp_path / "chdb"), POWERSENSE_ARTIFACTS_DIR=str(tmp_path / "a"),
               POWERSENSE_SECRETS_DIR=str(tmp_path / "secrets"))
    out = subprocess.run([sys.executable, "-m", "shared", "evaluate-weather-store", "--test-start", "2025-01-01",
                          "--test-end", "2025-01-08", "--out", str(tmp_path / "reports")],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "evaluate-weather-store: error:" in out.stderr
    assert "no stored temperature forecast covering D+7" in out.stderr
    assert not (tmp_path / "reports").exists()

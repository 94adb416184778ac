"""featurize's weather features (shared/weather/featurize.py) on real data in chDB: the path as known at each run
(realised before it, the latest stored forecast after it), no look-ahead, idempotent, watermark-driven.

Realised temperature = the shipped Enedis series (weather-backfill), loaded only up to two days before the run (the
archive's lag); the "forecast" = the same shipped values stored as Open-Meteo forecasts, as the demo's replay serves
them. The revised forecast (+3 °C) is a synthetic edge case: a later version that must not leak into earlier runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from shared import clock
from shared.runs import stage_run
from shared.settings import Settings
from shared.store import Store
from shared.weather import FORECAST_METRIC, FORECAST_NATURE, PERIMETER, SOURCE
from shared.weather.enedis import read_enedis
from shared.weather.features import WEATHER_COLUMNS, known_at
from shared.weather.featurize import (
    COLUMNS,
    FORECAST_LABEL,
    combine_realised,
    featurize_weather,
    read_weather_history,
    read_weather_run,
)
from shared.weather.service import WEATHER_DIR, backfill, upsert

T = datetime(2023, 3, 15, 10, 20, tzinfo=UTC)  # the featurize run
ISSUED_1 = datetime(2023, 3, 15, 6, 20, tzinfo=UTC)  # poll-weather before it
ISSUED_2 = datetime(2023, 3, 15, 11, 20, tzinfo=UTC)  # poll-weather after it
REALISED_END = date(2023, 3, 13)  # the archive is days behind


@pytest.fixture(scope="module")
def enedis() -> pd.DataFrame:
    frame = read_enedis(sorted(WEATHER_DIR.glob("enedis_temperature_lissee_nationale_2023.csv.gz")))
    return frame[["ts", "realised"]].rename(columns={"realised": "value"})


def at(ts: datetime) -> None:
    clock.install(clock.SimulatedClock(ts, 0.0))


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    yield
    clock.install(None)


@pytest.fixture
def cfg(settings: Settings) -> Settings:
    return settings.model_copy(update={"poll_bootstrap": False})


def store_forecast(store: Store, settings: Settings, values: pd.DataFrame, issued: datetime) -> int:
    """Hourly ``ts, value`` stored as poll-weather stores the national forecast, issued at ``issued``."""
    hourly = values[pd.DatetimeIndex(values["ts"]).minute == 0]
    rows = hourly.assign(metric=FORECAST_METRIC, nature=FORECAST_NATURE, perimetre=PERIMETER)
    return upsert(store, settings, rows, source=SOURCE, batch_id=f"test-{issued:%d%H%M}", inserted_at=issued)["written"]


def forecast_window(enedis: pd.DataFrame, issued: datetime) -> pd.DataFrame:
    """What poll-weather would hold after a run at ``issued``: 3 past days + 9 days ahead."""
    lo, hi = pd.Timestamp(issued).floor("D") - pd.Timedelta(days=3), pd.Timestamp(issued) + pd.Timedelta(days=9)
    return enedis[(enedis["ts"] >= lo) & (enedis["ts"] < hi)].reset_index(drop=True)


@pytest.fixture
def loaded(store: Store, cfg: Settings, enedis: pd.DataFrame) -> Settings:
    at(datetime(2023, 3, 13, 6, tzinfo=UTC))
    backfill(store, cfg, date(2023, 1, 1), REALISED_END, shipped=True)
    store_forecast(store, cfg, forecast_window(enedis, ISSUED_1), ISSUED_1)
    return cfg


def test_path_as_known_at_the_run_realised_then_forecast(store: Store, loaded: Settings, enedis: pd.DataFrame) -> None:
    details = featurize_weather(store, loaded, T)
    assert details["rows_out"] > 0 and details["weather_issued_at"] == pd.Timestamp(ISSUED_1).isoformat()
    run = read_weather_run(store, loaded, T, pd.Timestamp("2023-01-01", tz="UTC"))
    assert run is not None and run.as_of == pd.Timestamp(T) and run.issued_at == pd.Timestamp(ISSUED_1)
    rows = store.query_df("select * from {db:Identifier}.weather_features order by ts")
    assert list(rows.columns) == COLUMNS
    ts = pd.DatetimeIndex(pd.to_datetime(rows["ts"], utc=True)).as_unit("ns")
    # the first run covers the realised history from its start, on the 30-min grid
    assert ts.min() == pd.Timestamp("2023-01-01", tz="UTC") and (np.diff(ts.asi8) == 30 * 60 * 10**9).all()
    past = rows["part"] == "past"
    split = pd.Timestamp(T).floor("h")  # the run's hour: the forecast's 10:00 value is known at 10:20
    assert (ts[past] < split).all() and (ts[~past] >= split).all()
    src = rows.set_index(ts)["temp_source"]
    assert set(src[: pd.Timestamp("2023-03-12T23:30Z")]) == {"enedis_realised"}
    # after the newest realised value and before the run: the forecast known then
    assert set(src[pd.Timestamp("2023-03-13T00:00Z"): pd.Timestamp("2023-03-15T09:30Z")]) == {FORECAST_LABEL}
    # the forecast part holds the stored forecast's hours, up to its end (9 days after the run's poll)
    truth = enedis.set_index("ts")["value"]
    fc = rows[~past].set_index(ts[~past])
    hours = fc.index[fc.index.minute == 0]
    assert fc.loc[hours, "temp_degc"].to_numpy() == pytest.approx(truth.reindex(hours).to_numpy())
    assert fc["temp_degc"].notna().all()  # every step from the run's hour to the forecast's last hour
    assert fc.index.max() == pd.Timestamp(ISSUED_1).floor("h") + pd.Timedelta(days=9)
    # one definition: the same path as known_at over the same inputs
    realised = combine_realised([("enedis_realised", enedis[enedis["ts"] < pd.Timestamp(REALISED_END, tz="UTC")])],
                                forecast_window(enedis, ISSUED_1).pipe(lambda f: f[f["ts"].dt.minute == 0]),
                                split, 30)
    expected = known_at(realised, forecast_window(enedis, ISSUED_1).rename(columns={"value": "temp_degc"})
                        .pipe(lambda f: f[f["ts"].dt.minute == 0]), split).set_index("ts")
    got = rows.set_index(ts)[WEATHER_COLUMNS].astype(float)
    tail = got.index[got.index >= pd.Timestamp("2023-02-01", tz="UTC")]  # past the smoothing's warm-up
    np.testing.assert_allclose(got.loc[tail].to_numpy(), expected.reindex(tail)[WEATHER_COLUMNS].to_numpy(),
                               rtol=1e-9, equal_nan=True)


def test_a_forecast_stored_after_the_run_never_enters_it(store: Store, loaded: Settings, enedis: pd.DataFrame) -> None:
    featurize_weather(store, loaded, T)
    first = read_weather_run(store, loaded, T, pd.Timestamp(T))
    assert first is not None
    revised = forecast_window(enedis, ISSUED_2).assign(value=lambda f: f["value"] + 3.0)  # synthetic revision
    assert store_forecast(store, loaded, revised, ISSUED_2) > 0
    # re-run as of T: the revision is not known then, so there is nothing new: nothing written
    n = store.scalar("select count() from {db:Identifier}.weather_features")
    assert featurize_weather(store, loaded, T) == {"weather_up_to_date": True, "rows_out": 0}
    assert store.scalar("select count() from {db:Identifier}.weather_features") == n
    # a run after the revision sees it; the path as known at T is unchanged
    later = datetime(2023, 3, 15, 11, 35, tzinfo=UTC)
    assert featurize_weather(store, loaded, later)["rows_out"] > 0
    again = read_weather_run(store, loaded, T, pd.Timestamp(T))
    assert again is not None and again.as_of == pd.Timestamp(T)
    pd.testing.assert_frame_equal(again.path, first.path)
    new = read_weather_run(store, loaded, later, pd.Timestamp(later))
    assert new is not None and new.as_of == pd.Timestamp(later) and new.issued_at == pd.Timestamp(ISSUED_2)
    step = pd.Timestamp("2023-03-18T12:00Z")
    old_v = first.path.set_index("ts").loc[step, "temp_degc"]
    assert new.path.set_index("ts").loc[step, "temp_degc"] == pytest.approx(old_v + 3.0)
    # each run's past part alone holds the last two days; the history reads each step from the newest run
    hist = read_weather_history(store, loaded, pd.Timestamp("2023-03-10", tz="UTC"), pd.Timestamp(later), later)
    assert hist["ts"].max() == pd.Timestamp("2023-03-15T10:30Z")  # up to the later run's hour (11:00)
    assert featurize_weather(store, loaded, later) == {"weather_up_to_date": True, "rows_out": 0}


def test_new_realised_data_rewrites_the_past_it_changes(store: Store, loaded: Settings) -> None:
    featurize_weather(store, loaded, T)
    # the archive's next days arrive after the run: the next run's past part starts where they start
    at(datetime(2023, 3, 15, 11, tzinfo=UTC))
    backfill(store, loaded, REALISED_END, date(2023, 3, 15), shipped=True)
    later = datetime(2023, 3, 15, 11, 5, tzinfo=UTC)
    details = featurize_weather(store, loaded, later)
    assert details["weather_window_start"] == "2023-03-13T00:00:00+00:00"
    hist = read_weather_history(store, loaded, pd.Timestamp("2023-03-13", tz="UTC"), pd.Timestamp(later), later,
                                realised_only=True)
    assert hist["ts"].max() == pd.Timestamp("2023-03-14T23:30Z") and set(hist["temp_source"]) == {"enedis_realised"}
    # as known at T, those days were still the forecast
    before = read_weather_history(store, loaded, pd.Timestamp("2023-03-13", tz="UTC"), pd.Timestamp(T), T)
    assert set(before["temp_source"]) == {FORECAST_LABEL}


def test_no_weather_data_writes_nothing_and_the_stage_reports_it(store: Store, settings: Settings,
                                                                 loaded: Settings) -> None:
    from shared.features import run_featurize

    at(T)
    with stage_run(store, "featurize") as run:
        run_featurize(store, loaded, run)
    first = run.as_dict()
    assert first["status"] == "success" and first["details"]["weather_rows"] == first["rows_out"] > 0
    with stage_run(store, "featurize") as run:
        run_featurize(store, loaded, run)
    assert run.as_dict()["status"] == "skipped" and run.as_dict()["rows_out"] == 0


def test_realised_sources_are_not_interleaved() -> None:
    """Edge case (synthetic values): the hourly archive wins where it has values; the 30-min Enedis series only
    fills where the archive has nothing within the hour, never its half-hours."""
    hours = pd.date_range("2023-03-01", periods=48, freq="h", tz="UTC")
    archive = pd.DataFrame({"ts": hours[:24], "value": 5.0})
    halves = pd.date_range("2023-03-01", periods=96, freq="30min", tz="UTC")
    enedis30 = pd.DataFrame({"ts": halves, "value": 9.0})
    out = combine_realised([("open_meteo_realised", archive), ("enedis_realised", enedis30)],
                           pd.DataFrame({"ts": hours[:0], "value": []}), pd.Timestamp("2023-03-03", tz="UTC"), 30)
    by = out.set_index("ts")["temp_source"]
    assert set(by[: pd.Timestamp("2023-03-01T23:00Z")]) == {"open_meteo_realised"}
    assert len(by[: pd.Timestamp("2023-03-01T23:00Z")]) == 24  # no Enedis half-hour in the archive's span
    assert by.index[by == "enedis_realised"].min() == pd.Timestamp("2023-03-02T00:30Z")


def test_a_runs_forecast_part_expires_30_days_after_it_was_written(store: Store, loaded: Settings) -> None:
    featurize_weather(store, loaded, T)
    rows = store.query_df("select * from {db:Identifier}.weather_features")
    # the same run an hour earlier, written 31 days ago (wall clock: the TTL reads computed_at, not the product clock)
    old_as_of = pd.Timestamp(T) - pd.Timedelta(hours=1)
    old = rows.assign(as_of=old_as_of, computed_at=pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=31))
    store.insert_df("weather_features", old)
    store.command("optimize table {db:Identifier}.weather_features final")  # TTL deletes on merges
    kept = store.query_df("select as_of, part, count() as n from {db:Identifier}.weather_features "
                          "group by as_of, part order by as_of, part")
    n = dict(zip(zip(pd.to_datetime(kept["as_of"], utc=True), kept["part"], strict=True), kept["n"], strict=True))
    assert (old_as_of, "forecast") not in n  # superseded and expired
    assert n[(old_as_of, "past")] == (rows["part"] == "past").sum()  # training still reads the past rows
    assert n[(pd.Timestamp(T), "forecast")] == (rows["part"] == "forecast").sum()  # the recent run is whole

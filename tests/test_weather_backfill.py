"""weather-backfill on the real shipped data (Enedis smoothed realised and normal temperature 2020–2023) and
through the Open-Meteo replay's archive endpoint (same locations, same weights as the forecasts)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from local_dev.weather_replay import create_weather_replay_app, hourly_temperature
from shared import clock
from shared.errors import ConflictError
from shared.series import load_series
from shared.settings import REPO_ROOT, Settings
from shared.store import Store
from shared.weather import (
    ENEDIS_NORMAL_METRIC,
    ENEDIS_REALISED_METRIC,
    ENEDIS_SOURCE,
    REALISED_METRIC,
    SOURCE,
    service,
)
from shared.weather.service import archive_call_weight, archive_pause_s, backfill
from tests.fixtures_ingest import serve

WEATHER = REPO_ROOT / "data" / "weather"
# data/weather/README.md: 2020 17184 rows (from 2020-01-09), 2021–2023 17520 each, no missing value
ENEDIS_ROWS = 17184 + 3 * 17520


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    clock.install(clock.SimulatedClock(datetime(2024, 2, 1, tzinfo=UTC), 0.0))
    yield
    clock.install(None)


@pytest.fixture
def cfg(settings: Settings) -> Settings:
    return settings.model_copy(update={"poll_bootstrap": False})


def test_shipped_enedis_series_counts_and_idempotence(store: Store, cfg: Settings) -> None:
    result = backfill(store, cfg, date(2020, 1, 1), date(2024, 1, 1), shipped=True)
    enedis = result["enedis"]
    assert enedis["values"] == 2 * ENEDIS_ROWS and enedis["written"] == 2 * ENEDIS_ROWS
    assert enedis["new"] == 2 * ENEDIS_ROWS and enedis["revised"] == 0
    assert enedis["first"] == "2020-01-09T00:00:00+00:00" and enedis["last"] == "2023-12-31T23:30:00+00:00"
    counts = dict(store.query_rows(
        "select metric, count() from {db:Identifier}.measurements where source = {s:String} group by metric",
        {"s": ENEDIS_SOURCE}))
    assert counts == {ENEDIS_REALISED_METRIC: ENEDIS_ROWS, ENEDIS_NORMAL_METRIC: ENEDIS_ROWS}
    # the stored series is the shipped file, value for value
    shipped = pd.read_csv(WEATHER / "enedis_temperature_lissee_nationale_2023.csv.gz")
    day = load_series(store, ENEDIS_SOURCE, ENEDIS_REALISED_METRIC, datetime(2023, 7, 14, tzinfo=UTC),
                      datetime(2023, 7, 15, tzinfo=UTC))
    expected = shipped[shipped["horodate"].str.startswith("2023-07-14")]["temperature_realisee_lissee_degc"]
    assert len(day) == 48 and day["value"].tolist() == expected.astype(float).tolist()
    again = backfill(store, cfg, date(2020, 1, 1), date(2024, 1, 1), shipped=True)
    assert again["enedis"]["written"] == 0


def test_window_bounds_are_respected(store: Store, cfg: Settings) -> None:
    result = backfill(store, cfg, date(2023, 12, 1), date(2023, 12, 2), shipped=True)
    assert result["enedis"]["values"] == 2 * 48
    assert result["enedis"]["last"] == "2023-12-01T23:30:00+00:00"


def test_archive_through_the_replay_uses_the_forecast_definition(store: Store, cfg: Settings) -> None:
    with serve(create_weather_replay_app(), "/v1") as url:
        settings = cfg.model_copy(update={"weather_archive_url": url})
        result = backfill(store, settings, date(2023, 12, 1), date(2024, 1, 1), shipped=False, archive=True,
                          chunk_days=10)
        archive = result["archive"]
        assert archive["hours"] == 31 * 24 and archive["values"] == 32 * 31 * 24 and archive["rejected"] == 0
        assert archive["written"] == 31 * 24
        series = load_series(store, SOURCE, REALISED_METRIC)
        truth = hourly_temperature(str(WEATHER)).reindex(series["ts"]).to_numpy()
        assert series["value"].to_numpy() == pytest.approx(truth, abs=1e-9)
        assert set(series["nature"]) == {"réalisé"}
        again = backfill(store, settings, date(2023, 12, 1), date(2024, 1, 1), shipped=False, archive=True)
        assert again["archive"]["written"] == 0


def test_refused_while_the_history_bootstrap_is_pending(store: Store, settings: Settings) -> None:
    with pytest.raises(ConflictError, match="bootstrap"):
        backfill(store, settings.model_copy(update={"poll_bootstrap": True}), date(2023, 1, 1), date(2023, 2, 1))


def test_command_line_help_lists_the_sources() -> None:
    out = subprocess.run([sys.executable, "-m", "shared", "weather-backfill", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--archive" in out.stdout and "--shipped" in out.stdout


def test_poll_weather_catches_realised_temperature_up_once_a_day(store: Store, cfg: Settings) -> None:
    from shared.runs import stage_run
    from shared.weather.service import run_poll_weather

    def poll(at: datetime) -> dict:
        clock.install(clock.SimulatedClock(at, 0.0))
        with stage_run(store, "poll-weather") as run:
            run_poll_weather(store, settings, run)
        return run.as_dict()

    with serve(create_weather_replay_app(), "/v1") as url:
        settings = cfg.model_copy(update={"weather_archive_url": url, "weather_url": url})
        first = poll(datetime(2023, 12, 20, 6, tzinfo=UTC))
        assert first["details"]["realised"]["skipped"].startswith("no realised history")
        backfill(store, settings, date(2023, 12, 1), date(2023, 12, 21), shipped=False, archive=True)
        newest = load_series(store, SOURCE, REALISED_METRIC)["ts"].max()
        assert newest == pd.Timestamp("2023-12-15T06:00Z")  # the archive is 5 days behind (ERA5, best_match)
        later = poll(datetime(2023, 12, 28, 6, tzinfo=UTC))
        realised = later["details"]["realised"]
        # re-read from the day before the newest hour; new hours up to 2023-12-23T06:00 (5 days before now)
        assert realised["new"] == len(pd.date_range("2023-12-15T07:00Z", "2023-12-23T06:00Z", freq="h"))
        assert realised["revised"] == 0
        assert load_series(store, SOURCE, REALISED_METRIC)["ts"].max() == pd.Timestamp("2023-12-23T06:00Z")
        same_day = poll(datetime(2023, 12, 28, 7, tzinfo=UTC))
        assert same_day["details"]["realised"] == {"skipped": "archive already read today"}


def test_archive_requests_are_paced_to_open_meteos_budget(store: Store, cfg: Settings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # 32 stations a request count 32 calls: at 64 a minute, 30 s from one request's start to the next
    waits: list[float] = []
    monkeypatch.setattr(service, "_sleep", waits.append)
    monkeypatch.setattr(service, "_monotonic", lambda: 1000.0)  # each request takes no time
    with serve(create_weather_replay_app(), "/v1") as url:
        settings = cfg.model_copy(update={"weather_archive_url": url, "weather_archive_calls_per_minute": 64})
        stations = len(service.load_stations(settings.weather_stations_file))
        result = backfill(store, settings, date(2023, 12, 1), date(2024, 1, 1), shipped=False, archive=True,
                          chunk_days=10)
    assert result["archive"]["hours"] == 31 * 24
    assert waits == [pytest.approx(60.0 * stations / 64)] * 3  # 4 chunks: a pause before each but the first


def test_archive_pacing_keeps_every_budget() -> None:
    weight = archive_call_weight(35, 31)
    assert weight == 35  # one variable, 31 days: each location one call
    assert archive_call_weight(35, 365, variables=2) == pytest.approx(35 * 2 / 10 * 365 / 14)
    assert archive_pause_s(weight, 48, 500, 4500) == pytest.approx(4.2)  # 1,680 calls: the minute binds
    assert archive_pause_s(weight, 200, 500, 4500) == pytest.approx(28.0)  # 7,000 calls: the hour binds
    assert archive_pause_s(weight, 1, 500, 4500) == 0.0
    assert archive_pause_s(weight, 48, 0, 0) == 0.0

"""poll-weather end to end: the Open-Meteo replay (local_dev/weather_replay.py) served by uvicorn on
loopback, the real chDB store, the function's handler app; versioning of forecast runs and as-of reads.

The replay serves the shipped *realised* Enedis temperature as the "forecast" (labelled so in its
docstring).  Where a test needs a second run that changes values, or malformed values, a response
transform in front of the replay (tests/fixtures_ingest.FaultInjector, a test helper) rewrites
them: synthetic edits for edge cases only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from local_dev.functions import load_handler
from local_dev.weather_replay import create_weather_replay_app, hourly_temperature
from shared import clock
from shared.app import settings_dep, store_dep
from shared.errors import SourceError
from shared.runs import stage_run
from shared.series import load_series
from shared.settings import REPO_ROOT, Settings
from shared.store import Store
from shared.weather import FORECAST_METRIC, SOURCE, model_metric
from shared.weather.service import backfill, run_poll_weather
from tests.fixtures_ingest import Fault, FaultInjector, serve

T1 = datetime(2023, 12, 1, 6, tzinfo=UTC)
H = timedelta(hours=1)
Doc = Any
Replay = tuple[str, FaultInjector]  # base URL, the injector in front of the weather replay


def status(n: int, code: int) -> Fault:
    """Request ``n`` answers ``code`` with an Open-Meteo error body."""
    return Fault(n=n, status=code, body=b'{"error": true, "reason": "injected"}')


def rewrite(transform: Callable[[Doc], Doc]) -> Fault:
    """Every answer's JSON rewritten by ``transform``."""
    return Fault(transform=lambda doc, _n: transform(doc))


@pytest.fixture(scope="module")
def replay() -> Iterator[Replay]:
    injector = FaultInjector(create_weather_replay_app(), path_suffix=None)
    with serve(injector, "/v1") as url:
        yield url, injector


@pytest.fixture(autouse=True)
def _fresh(replay: Replay) -> Iterator[None]:
    replay[1].reset()
    clock.install(clock.SimulatedClock(T1, 0.0))
    yield
    replay[1].reset()
    clock.install(None)


@pytest.fixture
def cfg(settings: Settings, replay: Replay) -> Settings:
    return settings.model_copy(update={
        "weather_url": replay[0], "weather_archive_url": replay[0], "poll_bootstrap": False,
        "source_timeout_s": 5.0, "source_retries": 3, "source_backoff_s": 0.01, "source_backoff_max_s": 0.05,
    })


def poll(store: Store, settings: Settings, **options: Any) -> dict[str, Any]:
    with stage_run(store, "poll-weather") as run:
        run_poll_weather(store, settings, run, **options)
    return run.as_dict()


def at(ts: datetime) -> None:
    clock.install(clock.SimulatedClock(ts, 0.0))


def shift_all(delta: float) -> Callable[[Doc], Doc]:
    """A revised forecast: every value moved by ``delta`` °C."""
    def transform(doc: Doc) -> Doc:
        for item in doc if isinstance(doc, list) else [doc]:
            for key, values in item["hourly"].items():
                if key.startswith("temperature_2m"):
                    item["hourly"][key] = [None if v is None else round(v + delta, 1) for v in values]
        return doc
    return transform


def stored(store: Store, source: str = SOURCE) -> list[tuple[Any, ...]]:
    return store.query_rows(
        """select metric, count(), countIf(version = 1), max(version), min(ts), max(ts)
           from {db:Identifier}.measurements where source = {s:String} group by metric order by metric""",
        {"s": source})


def test_first_run_stores_the_national_forecast_per_model_and_blended(store: Store, cfg: Settings) -> None:
    result = poll(store, cfg)
    assert result["status"] == "success", result
    d = result["details"]
    assert d["locations"] == 32 and d["past_days"] == 3 and d["forecast_days"] == 9
    # 12 days of hours (3 past + 9 ahead); Météo-France covers 96 h after the current hour, ECMWF all of them
    hours = 12 * 24
    mf_hours = 3 * 24 + 6 + 96 + 1
    assert d["hours_per_model"] == {"meteofrance_seamless": mf_hours, "ecmwf_ifs025": hours}
    assert d["values"] == 32 * (hours + mf_hours) and d["rejected"] == 0
    rows = {r[0]: r[1:] for r in stored(store)}
    assert rows[FORECAST_METRIC][0] == hours and rows[model_metric("ecmwf_ifs025")][0] == hours
    assert rows[model_metric("meteofrance_seamless")][0] == mf_hours
    assert result["rows_out"] == 2 * hours + mf_hours
    # the replay serves the same (realised) value at every location: the weighted mean is that value
    truth = hourly_temperature(str(REPO_ROOT / "data" / "weather"))
    series = load_series(store, SOURCE, FORECAST_METRIC)
    assert len(series) == hours
    expected = truth.reindex(series["ts"]).to_numpy()
    assert series["value"].to_numpy() == pytest.approx(expected, abs=1e-9)
    inserted = store.scalar("select uniqExact(inserted_at) from {db:Identifier}.measurements")
    assert inserted == 1  # one issue time for the whole run: the fetch time on the product clock
    from shared.metrics import REGISTRY

    # the stored forecast reaches 2023-12-09T23:00Z, 209 h after the issue time 2023-12-01T06:00Z
    assert REGISTRY.get_sample_value("powersense_weather_forecast_horizon_hours") == 209.0


def test_second_run_revises_values_as_new_versions_and_as_of_has_no_look_ahead(store: Store, cfg: Settings,
                                                                                 replay: Replay) -> None:
    first = poll(store, cfg)
    t2 = T1 + 6 * H
    at(t2)
    replay[1].reset(rewrite(shift_all(0.5)))
    second = poll(store, cfg)
    assert second["status"] == "success" and second["details"]["past_days"] == 0
    assert second["details"]["revised"] > 0
    target = T1 + 30 * H  # covered by both runs (Météo-France in both)
    v1 = load_series(store, SOURCE, FORECAST_METRIC, target, target + H, as_of=T1 + H)
    v2 = load_series(store, SOURCE, FORECAST_METRIC, target, target + H, as_of=t2 + H)
    before = load_series(store, SOURCE, FORECAST_METRIC, target, target + H, as_of=T1 - H)
    assert before.empty  # nothing was known before the first run
    assert int(v1["version"].iloc[0]) == 1 and int(v2["version"].iloc[0]) == 2
    assert float(v2["value"].iloc[0]) == pytest.approx(float(v1["value"].iloc[0]) + 0.5, abs=0.051)
    # an as-of read at any T between the runs returns run 1's forecast for every hour
    mid = load_series(store, SOURCE, FORECAST_METRIC, as_of=T1 + 3 * H)
    assert len(mid) == first["details"]["hours_per_model"]["ecmwf_ifs025"]
    assert set(mid["version"].astype(int)) == {1}
    from shared.weather.featurize import load_temperature_forecast

    grid = load_temperature_forecast(store, target, target + 2 * H, as_of=T1 + H, resolution_min=30)
    assert grid["ts"].tolist() == list(pd.date_range(target, periods=4, freq="30min"))
    assert grid["value"].iloc[0] == pytest.approx(float(v1["value"].iloc[0]))
    assert grid["value"].notna().all()  # the hour after the window end is read, so the last :30 is known
    versions = store.query_rows(
        "select version, uniqExact(inserted_at), min(inserted_at) from {db:Identifier}.measurements "
        "where metric = {m:String} group by version order by version", {"m": FORECAST_METRIC})
    assert [v[0] for v in versions] == [1, 2]
    assert versions[1][2].replace(tzinfo=UTC) == t2  # version 2 carries the second run's issue time


def test_rerun_is_idempotent(store: Store, cfg: Settings) -> None:
    first = poll(store, cfg)
    before = stored(store)
    at(T1 + 10 * 60 * timedelta(seconds=1))
    again = poll(store, cfg, past_days=3)
    assert again["status"] == "success" and again["rows_out"] == 0
    assert again["details"]["new"] == 0 and again["details"]["revised"] == 0
    assert stored(store) == before and first["rows_out"] > 0


def test_malformed_values_are_dead_lettered_once_and_the_rest_is_stored(store: Store, cfg: Settings,
                                                                           replay: Replay) -> None:
    def corrupt(doc: Doc) -> Doc:
        doc[0]["hourly"]["temperature_2m_ecmwf_ifs025"][100] = "12,5"
        doc[1]["hourly"]["temperature_2m_ecmwf_ifs025"][101] = 1e9
        del doc[2]["hourly"]["temperature_2m_meteofrance_seamless"]
        return doc

    replay[1].reset(rewrite(corrupt))
    result = poll(store, cfg)
    assert result["status"] == "success"
    assert result["details"]["rejected"] == 3 and result["details"]["dead_lettered"] == 3
    dead = store.query_rows("select reason, payload from {db:Identifier}.rejected_records "
                            "where stage = 'poll-weather' order by reason")
    reasons = [r[0] for r in dead]
    assert any("not a number: str" in r for r in reasons)
    assert any("outside [-60, 60]" in r for r in reasons)
    assert any("no temperature_2m list for model meteofrance_seamless" in r for r in reasons)
    assert json.loads(dead[0][1])["station"]  # the payload says which location/model/hour
    # hours with a missing station are still aggregated (weights renormalised, ≥ 80 % of the weight present)
    assert len(load_series(store, SOURCE, FORECAST_METRIC)) == 12 * 24
    raw = store.scalar("select count() from {db:Identifier}.raw_records where batch_id like 'open_meteo-%'")
    assert raw == 32  # every location's answer kept as received
    at(T1 + H)
    poll(store, cfg, past_days=3)
    assert store.scalar("select count() from {db:Identifier}.rejected_records where stage = 'poll-weather'") == 3


def test_transient_errors_are_retried_and_a_shape_error_fails_the_run(store: Store, cfg: Settings,
                                                                      replay: Replay) -> None:
    replay[1].reset(status(1, 503), status(2, 429))
    ok = poll(store, cfg)
    assert ok["status"] == "success" and replay[1].count == 3
    replay[1].reset(rewrite(lambda doc: doc[:5]))  # 5 objects for 32 locations
    with pytest.raises(SourceError, match="unusable"):
        poll(store, cfg)
    assert store.scalar("select count() from {db:Identifier}.rejected_records "
                        "where stage = 'poll-weather' and reason like 'response:%'") == 1
    assert store.scalar("select countIf(status = 'failed') from {db:Identifier}.pipeline_runs final "
                        "where function = 'poll-weather'") == 1
    replay[1].reset(status(1, 400))
    with pytest.raises(SourceError, match="HTTP 400"):
        poll(store, cfg)
    assert replay[1].count == 1  # a 4xx is not retried


def test_handler_app_end_to_end_cron_then_idempotent(store: Store, cfg: Settings) -> None:
    app = load_handler("poll-weather").app
    app.dependency_overrides[settings_dep] = lambda: cfg
    app.dependency_overrides[store_dep] = lambda: store
    cron = {"X-Connector": "cron-connector", "X-Topic": "cron-function"}
    try:
        with TestClient(app) as client:
            first = client.post("/", headers=cron)
            assert first.status_code == 200, first.text
            body = first.json()
            assert body["function"] == "poll-weather" and body["trigger"] == "cron" and body["status"] == "success"
            assert body["rows_out"] == 2 * 288 + 175
            at(T1 + 20 * timedelta(minutes=1))
            second = client.post("/", headers=cron)
            assert second.status_code == 200 and second.json()["rows_out"] == 0
            bad = client.post("/", json={"past_days": 93})
            assert bad.status_code == 400  # Open-Meteo accepts at most 92
            assert client.get("/health").json()["status"] == "ok"
    finally:
        app.dependency_overrides.clear()
    runs = store.query_rows("select status, count() from {db:Identifier}.pipeline_runs final "
                            "where function = 'poll-weather' group by status")
    assert dict(runs) == {"success": 2}


def test_skips_while_the_history_bootstrap_is_pending(store: Store, cfg: Settings) -> None:
    pending = cfg.model_copy(update={"poll_bootstrap": True})
    result = poll(store, pending)
    assert result["status"] == "skipped" and "bootstrap" in result["details"]["skip_reason"]
    assert stored(store) == []


def test_query_api_reads_the_weather_series_like_any_measurement(store: Store, cfg: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import get_settings

    poll(store, cfg)
    monkeypatch.setenv("POWERSENSE_QUERY_TOKEN", "weather-token")
    monkeypatch.setenv("POWERSENSE_QUERY_CACHE_TTL_S", "0")
    get_settings.cache_clear()
    app = load_handler("query").app
    with TestClient(app, headers={"Authorization": "Bearer weather-token"}) as client:
        r = client.get("/measurements", params={"source": SOURCE, "metric": FORECAST_METRIC,
                                                "start": "2023-12-02", "end": "2023-12-03"})
        assert r.status_code == 200, r.text
        points = r.json()["points"]
        assert len(points) == 24 and points[0]["ts"] == "2023-12-02T00:00:00Z"
        assert points[0]["nature"] == "prévision" and points[0]["version"] == 1
        truth = hourly_temperature(str(REPO_ROOT / "data" / "weather"))
        assert points[0]["value"] == pytest.approx(float(truth.loc["2023-12-02T00:00Z"]))
        asof = client.get("/measurements", params={"source": SOURCE, "metric": FORECAST_METRIC,
                                                   "start": "2023-12-02", "end": "2023-12-03",
                                                   "as_of": "2023-12-01T05:00:00Z"})
        assert asof.status_code == 200 and asof.json()["points"] == []  # before the run: nothing known
        per_model = client.get("/measurements", params={"source": SOURCE, "metric": model_metric("ecmwf_ifs025"),
                                                        "start": "2023-12-09T00:00:00+01:00",
                                                        "end": "2023-12-10T00:00:00+01:00", "interval": "1d"})
        assert per_model.status_code == 200 and per_model.json()["points"][0]["n"] == 24  # a Paris day's hours


def test_handler_import_loads_no_ml_module(tmp_path: Any) -> None:
    """poll-weather is a light function (REQUIREMENTS base): no torch/NeuralProphet on import."""
    import subprocess
    import sys

    heavy = ("torch", "neuralprophet", "pytorch_lightning", "lightning", "matplotlib")
    code = (
        "import json, sys\n"
        "from local_dev.functions import load_handler\n"
        "module = load_handler('poll-weather')\n"
        "assert hasattr(module, 'app') and hasattr(module, 'handler')\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "POWERSENSE_CHDB_PATH": str(tmp_path / "chdb")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_demo_gateway_serves_the_weather_replay(settings: Settings) -> None:
    """make demo mounts the replay under the gateway; poll-weather's default URL there answers."""
    from local_dev.demo import WEATHER_REPLAY_PREFIX, mount_weather_replay
    from local_dev.gateway import create_gateway_app

    gateway = create_gateway_app(functions=[])
    assert mount_weather_replay(gateway)
    with TestClient(gateway) as client:
        r = client.get(f"{WEATHER_REPLAY_PREFIX}/v1/forecast",
                       params={"latitude": "48.8215", "longitude": "2.33336", "hourly": "temperature_2m",
                               "models": "ecmwf_ifs025", "timezone": "UTC", "forecast_days": "1"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body, dict) and len(body["hourly"]["temperature_2m"]) == 24
        assert body["hourly"]["time"][0] == "2023-12-01T00:00"
        bad = client.get(f"{WEATHER_REPLAY_PREFIX}/v1/forecast", params={"latitude": "91", "longitude": "2"})
        assert bad.status_code == 400 and bad.json()["error"] is True


def test_an_answer_in_another_location_order_gives_each_station_its_own_temperature(
        store: Store, cfg: Settings, replay: Replay) -> None:
    # the i-th location object was taken for the i-th station asked: reversed, each station's weight went to
    # another station's temperature (a review's probe: 5.86 °C stored for 6.88). Each station is given its own
    # synthetic value (its latitude − 40) so that the weighting shows
    from shared.weather.parse import load_stations

    stations = load_stations(cfg.weather_stations_file)
    target = pd.Timestamp("2023-12-02T00:00Z")

    def by_latitude_reversed(doc: Doc) -> Doc:
        for item in doc:
            for key, values in item["hourly"].items():
                if key.startswith("temperature_2m"):
                    item["hourly"][key] = [None if v is None else round(item["latitude"] - 40.0, 4) for v in values]
        return list(reversed(doc))

    replay[1].reset(rewrite(by_latitude_reversed))
    assert poll(store, cfg)["status"] == "success"
    series = load_series(store, SOURCE, FORECAST_METRIC, target.to_pydatetime(), (target + H).to_pydatetime())
    expected = float(((stations["latitude"] - 40.0) * stations["weight"]).sum())
    assert float(series["value"].iloc[0]) == pytest.approx(expected, abs=0.01)


def test_an_answer_missing_a_station_is_aggregated_from_the_others(store: Store, cfg: Settings,
                                                                  replay: Replay) -> None:
    # one location object short failed the run (HTTP 502) and the 31 others were not used; the weight-share rule
    # (POWERSENSE_WEATHER_MIN_WEIGHT_SHARE) decides each hour, as for a value a model does not cover
    replay[1].reset(rewrite(lambda doc: doc[1:]))
    result = poll(store, cfg)
    assert result["status"] == "success" and result["details"]["rejected"] >= 1
    reasons = [r for (r,) in store.query_rows("select reason from {db:Identifier}.rejected_records")]
    assert "no location object for this station in the answer" in reasons
    assert load_series(store, SOURCE, FORECAST_METRIC)["value"].notna().any()


def test_an_archive_outage_leaves_the_run_partial_with_the_forecast_landed(store: Store, settings: Settings) -> None:
    # the daily read of the realised temperature failed every hourly run (PowerSenseStageFailing paged) while the
    # forecast itself had landed
    injector = FaultInjector(create_weather_replay_app(), path_suffix="/archive")
    with serve(injector, "/v1") as url:
        cfg = settings.model_copy(update={
            "weather_url": url, "weather_archive_url": url, "poll_bootstrap": False, "source_timeout_s": 5.0,
            "source_retries": 2, "source_backoff_s": 0.01, "source_backoff_max_s": 0.05})
        backfill(store, cfg, date(2023, 11, 1), date(2023, 11, 25), shipped=False, archive=True)  # realised so far
        injector.reset(Fault(status=503, body=b'{"error": true, "reason": "archive down"}'))
        at(T1 + timedelta(days=1))  # the next day: its archive read is due
        res = poll(store, cfg)
    assert res["status"] == "partial" and "archive" in res["details"]["realised"]["error"]
    assert stored(store) and res["rows_out"] > 0
    # a partial run is no failure for the stage alerts: the realised series' age says the archive is down
    from shared.metrics import REGISTRY

    newest = REGISTRY.get_sample_value("powersense_weather_realised_newest_timestamp_seconds")
    assert newest == datetime(2023, 11, 24, 23, tzinfo=UTC).timestamp()  # the backfill's last hour, not later

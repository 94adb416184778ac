"""The forecast stage on real data in chDB: fallbacks, training + promotion on SeaweedFS, the pointer
rule, complete 7-day rows, and a backtest that would fail if future data leaked into a forecast."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared import settings as settings_mod
from shared.artifacts import LocalArtifactStore, S3ArtifactStore
from shared.errors import ArtifactError
from shared.forecasting import service
from shared.settings import Settings
from shared.store import Store
from tests.fixtures_forecast import history
from tests.fixtures_s3 import S3Server, s3_server  # noqa: F401  (session fixture)

NOW = datetime(2023, 3, 15, 10, 20, tzinfo=UTC)  # data below ends at 10:00 UTC; the cron runs at :07+


def _s3(server: S3Server, bucket: str) -> S3ArtifactStore:
    return S3ArtifactStore(server.endpoint_url, bucket, "us-east-1", server.access_key, server.secret_key)


def _rows(store: Store, run_id: str) -> pd.DataFrame:
    sql = "select * from {db:Identifier}.forecasts where run_id = {r:String} order by ts"
    return store.query_df(sql, {"r": run_id})


def _assert_seven_days(rows: pd.DataFrame) -> None:
    """Every grid step from the origin to the end of local day D+7, no gap, finite values."""
    local_end = (pd.Timestamp(NOW).tz_convert("Europe/Paris").normalize() + pd.Timedelta(days=8)).tz_convert("UTC")
    expected = pd.date_range(pd.Timestamp("2023-03-15 10:00", tz="UTC"), local_end, freq="30min", inclusive="left")
    assert list(pd.DatetimeIndex(rows["ts"])) == list(expected)
    assert rows["horizon_day"].max() == 7 and rows["horizon_steps"].tolist() == list(range(1, len(expected) + 1))
    assert np.isfinite(rows["yhat"]).all()


def test_fallback_when_no_model_exists(store: Store, fc_settings: Settings) -> None:
    res = service.run_forecast(store, fc_settings, lambda: LocalArtifactStore(fc_settings.artifacts_dir), NOW,
                               "run-nomodel", train=False)
    rows = _rows(store, "run-nomodel")
    assert res.quality == "fallback" and set(rows["fallback_reason"]) == {"no model"}
    assert set(rows["quality"]) == {"fallback"} and set(rows["model_version"]) == {""}
    _assert_seven_days(rows)
    assert (rows["lower"] <= rows["yhat"]).all() and (rows["yhat"] <= rows["upper"]).all()
    # the run says which simple model it issued for each lead day and why; on the real winter, yesterday's copy
    # for the next 24 hours and last week's for the last day (its weekly rhythm)
    assert res.details["fallback_model"].startswith("best simple model per 24-hour lead day over the last 28 days")
    assert set(rows.loc[rows["horizon_steps"] <= 48, "yhat_source"]) == {"daily_naive"}
    assert set(rows.loc[rows["horizon_day"] == 7, "yhat_source"]) == {"seasonal_naive"}


def test_fallback_when_s3_is_down(store: Store, fc_settings: Settings) -> None:
    dead = S3ArtifactStore("http://127.0.0.1:9", "models", "us-east-1", "k", "s")
    res = service.run_forecast(store, fc_settings, lambda: dead, NOW, "run-s3down")
    rows = _rows(store, "run-s3down")
    assert res.quality == "fallback" and rows["fallback_reason"].iloc[0].startswith("artifact store unavailable")
    _assert_seven_days(rows)


def test_a_fallback_run_is_reported_to_prometheus(store: Store, fc_settings: Settings) -> None:
    # a run issuing seasonal naive was status success, and no metric said so: PowerSenseForecastFallback reads this
    from shared.metrics import REGISTRY

    service.FORECAST_FALLBACK.set(0.0)
    dead = S3ArtifactStore("http://127.0.0.1:9", "models", "us-east-1", "k", "s")
    service.run_forecast(store, fc_settings, lambda: dead, NOW, "run-s3down-metric")
    assert REGISTRY.get_sample_value("powersense_forecast_fallback") == 1.0


def test_an_artifact_store_outage_is_reported_to_prometheus(store: Store, fc_settings: Settings) -> None:
    # the run succeeded (seasonal naive issued): only the model owners' fallback alert fired, operations heard
    # nothing of the S3 outage (PowerSenseArtifactStoreUnavailable reads this)
    from shared.metrics import REGISTRY

    service.FORECAST_ARTIFACT_STORE_UP.set(1.0)
    dead = S3ArtifactStore("http://127.0.0.1:9", "models", "us-east-1", "k", "s")
    res = service.run_forecast(store, fc_settings, lambda: dead, NOW, "run-s3down-up")
    assert REGISTRY.get_sample_value("powersense_forecast_artifact_store_up") == 0.0
    assert res.details["artifact_store_error"]
    service.run_forecast(store, fc_settings, lambda: LocalArtifactStore(fc_settings.artifacts_dir), NOW,
                         "run-s3back-up", train=False)
    assert REGISTRY.get_sample_value("powersense_forecast_artifact_store_up") == 1.0


def test_fallback_when_data_is_stale(store: Store, fc_settings: Settings) -> None:
    later = datetime(2023, 3, 17, 10, 20, tzinfo=UTC)
    res = service.run_forecast(store, fc_settings, lambda: LocalArtifactStore(fc_settings.artifacts_dir), later,
                               "run-stale")
    assert res.quality == "fallback" and res.fallback_reason.startswith("stale data")
    assert len(_rows(store, "run-stale")) > 7 * 48


@pytest.mark.slow
@pytest.mark.s3
def test_trains_stores_on_s3_and_forecasts_seven_days(store: Store, fc_settings: Settings,
                                                       s3_server: S3Server) -> None:  # noqa: F811
    artifacts = _s3(s3_server, "fc-train")
    res = service.run_forecast(store, fc_settings, lambda: artifacts, NOW, "run-model")
    assert res.trained and res.trained["decision"] == "promoted"
    rows = _rows(store, "run-model")
    assert set(rows["quality"]) == {"model"} and set(rows["model_version"]) == {res.model_version}
    _assert_seven_days(rows)
    assert (rows["lower"] < rows["yhat"]).all() and (rows["yhat"] < rows["upper"]).all()
    # which source each lead day used (seasonal naive is a permanent challenger)
    assert set(rows["yhat_source"]) <= {"model", "blend", "seasonal_naive"}
    assert res.trained["holdout_mape"] <= res.trained["naive_holdout_mape"]
    cur = artifacts.current(service.series_key(fc_settings))
    assert cur is not None and cur["version"] == res.model_version
    assert {"training_window", "data_fingerprint", "library_versions", "backtest_metrics"} <= set(cur)
    # loaded back from S3 by a fresh process (empty cache), the model gives the same forecast
    service._cache.clear()
    again = service.run_forecast(store, fc_settings, lambda: artifacts, NOW, "run-model-2")
    assert again.trained == {"trained": False}
    np.testing.assert_allclose(_rows(store, "run-model-2")["yhat"], rows["yhat"], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.s3
def test_a_short_series_model_has_no_level_files_and_loads_back_from_s3(
        store: Store, fc_settings: Settings, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # 70 days of history, under the default POWERSENSE_FORECAST_LEVEL_MIN_HISTORY_DAYS: no level network
    monkeypatch.delenv("POWERSENSE_FORECAST_LEVEL_MIN_HISTORY_DAYS")
    settings_mod.get_settings.cache_clear()
    short = settings_mod.get_settings()
    artifacts = _s3(s3_server, "fc-short")
    res = service.run_forecast(store, short, lambda: artifacts, NOW, "run-short")
    assert res.trained and res.trained["decision"] == "promoted"
    meta = artifacts.meta(service.series_key(short), res.model_version)
    assert meta is not None and "profile.pt" in meta["files"] and not any(f.startswith("level") for f in meta["files"])
    service._cache.clear()  # a fresh process: the model comes back from S3 without a level network
    service.run_forecast(store, short, lambda: artifacts, NOW, "run-short-2")
    np.testing.assert_allclose(_rows(store, "run-short-2")["yhat"], _rows(store, "run-short")["yhat"], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.s3
def test_worse_model_does_not_move_the_pointer(store: Store, fc_settings: Settings, s3_server: S3Server,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    artifacts = _s3(s3_server, "fc-pointer")
    first = service.run_forecast(store, fc_settings, lambda: artifacts, NOW, "run-a")
    good = first.model_version
    # a model that cannot learn (learning rate ~0) is worse on the same holdout
    monkeypatch.setenv("POWERSENSE_FORECAST_LEARNING_RATE", "1e-9")
    monkeypatch.setenv("POWERSENSE_FORECAST_LEVEL_EPOCHS", "1")
    settings_mod.get_settings.cache_clear()
    bad = service.run_forecast(store, settings_mod.get_settings(), lambda: artifacts, NOW, "run-b", force_train=True)
    assert bad.trained and bad.trained["decision"] == "rejected" and "worse than current" in bad.trained["reason"]
    series = service.series_key(fc_settings)
    assert artifacts.current(series)["version"] == good  # type: ignore[index]
    listed = {m["version"]: m for m in artifacts.list_models(series)}
    assert listed[bad.trained["version"]]["decision"] == "rejected" and not listed[bad.trained["version"]]["current"]
    assert bad.model_version == good and bad.quality == "model"


@pytest.mark.slow
@pytest.mark.s3
def test_a_training_that_cannot_store_its_model_forecasts_with_the_current_one(
        store: Store, fc_settings: Settings, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # an S3 write refused (quota, disk full, a read-only key) threw the working model away: seasonal naive every
    # hour, each run retraining first, for as long as writes failed
    artifacts = _s3(s3_server, "fc-putfail")
    good = service.run_forecast(store, fc_settings, lambda: artifacts, NOW, "run-put-a").model_version

    def refused(key: str, data: bytes) -> None:
        raise ArtifactError(f"S3 put {key} failed: AccessDenied")

    monkeypatch.setattr(artifacts, "_put", refused)
    res = service.run_forecast(store, fc_settings, lambda: artifacts, NOW, "run-put-b", force_train=True)
    assert (res.quality, res.model_version) == ("model", good)
    assert res.trained["trained"] is False and "AccessDenied" in res.trained["error"]


@pytest.mark.slow
@pytest.mark.s3
def test_a_training_deletes_the_versions_past_the_kept_count(
        store: Store, fc_settings: Settings, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # a daily retrain stored a version every day and none was ever deleted
    artifacts = _s3(s3_server, "fc-prune")
    series = service.series_key(fc_settings)
    for old in ("20230101T070000Z-aaaaaaaa", "20230102T070000Z-bbbbbbbb"):
        artifacts.save_version(series, old, {"model.json": b"{}"}, {"trained_at": old, "decision": "rejected"})
    monkeypatch.setenv("POWERSENSE_FORECAST_KEEP_VERSIONS", "1")
    settings_mod.get_settings.cache_clear()
    res = service.run_forecast(store, settings_mod.get_settings(), lambda: artifacts, NOW, "run-prune")
    assert res.trained and res.trained["versions_pruned"] == 2
    assert [m["version"] for m in artifacts.list_models(series)] == [res.model_version]


def test_handler_answers_with_a_fallback_run(store: Store, fc_settings: Settings,
                                             admin_headers: dict[str, str]) -> None:
    from fastapi.testclient import TestClient

    from local_dev.functions import load_handler
    from shared import clock
    from shared.app import store_dep

    mod = load_handler("forecast")
    mod.app.dependency_overrides[store_dep] = lambda: store
    clock.install(clock.SimulatedClock(NOW, speed=0.0))
    try:
        resp = TestClient(mod.app).post("/", json={"train": False}, headers=admin_headers)
    finally:
        clock.install(None)
        mod.app.dependency_overrides.clear()
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success" and body["details"]["quality"] == "fallback" and body["rows_out"] > 7 * 48


def test_open_anomalies_are_left_out_of_the_series(store: Store, fc_settings: Settings) -> None:
    bad = pd.Timestamp("2023-03-10 08:00", tz="UTC")
    store.insert_df("anomalies", pd.DataFrame([
        {"ts": bad, "source": "eco2mix_national", "metric": "consommation", "kind": "spike", "detector": "residual",
         "severity": "high", "value": 1.0, "value_version": 1, "model_version": "", "forecast_run_id": "",
         "detected_at": NOW, "run_id": "d", "status": "open", "resolution": ""},
        {"ts": bad + pd.Timedelta(hours=10), "source": "eco2mix_national", "metric": "consommation", "kind": "dip",
         "detector": "residual", "severity": "low", "value": 1.0, "value_version": 1, "model_version": "",
         "forecast_run_id": "", "detected_at": NOW, "run_id": "d", "status": "resolved", "resolution": "revised"},
    ]))
    grid = service.load_grid(store, fc_settings, pd.Timestamp("2023-03-09", tz="UTC"), pd.Timestamp(NOW))
    g = grid.set_index("ts")["value"]
    assert g.loc[bad + pd.Timedelta(hours=10)] > 0  # resolved: kept
    # open: dropped from the raw series (a single step is then interpolated from its neighbours, and flagged so
    # by featurize; the measured value itself never reaches training)
    raw = history("2023-03-10 08:00", "2023-03-10 08:01")["value"].iloc[0]
    assert g.loc[bad] != raw


@pytest.mark.slow
def test_retrain_request_from_detect_triggers_training(store: Store, fc_settings: Settings) -> None:
    artifacts = LocalArtifactStore(fc_settings.artifacts_dir)
    first = service.run_forecast(store, fc_settings, lambda: artifacts, NOW, "run-1")
    assert first.trained and first.trained["decision"] == "promoted"
    later = datetime(2023, 3, 15, 10, 50, tzinfo=UTC)  # model is 30 min old: not due by age
    assert service.run_forecast(store, fc_settings, lambda: artifacts, later, "run-2").trained == {"trained": False}
    store.insert_df("model_metrics", pd.DataFrame([{
        "computed_at": datetime(2023, 3, 15, 10, 40, tzinfo=UTC), "run_id": "d", "source": "eco2mix_national",
        "metric": "consommation", "kind": "retrain_request", "name": "mape", "horizon_day": 1, "scope": "all",
        "model_version": first.model_version, "window_start": NOW, "window_end": later, "value": 0.09,
        "threshold": 0.05, "n": 48, "breached": 1}]))
    res = service.run_forecast(store, fc_settings, lambda: artifacts, later, "run-3")
    assert res.trained and res.trained["train_reason"] == "retrain requested by detect"


def test_recent_shape_carries_the_residuals_intraday_deviation_forward() -> None:
    from shared.forecasting.model import recent_shape

    step = pd.Timedelta(minutes=30)
    origin = pd.Timestamp("2023-03-15 11:00", tz="UTC")
    ts = pd.date_range(origin - pd.Timedelta(days=7), origin, freq=step, inclusive="left")
    bump = np.sin(2 * np.pi * np.arange(48) / 48) * 500  # a daily deviation pattern (mean zero)
    level = np.repeat(np.arange(7) * 300.0, 48)  # each day's own level, which the shape must ignore
    resid = pd.Series(np.tile(bump, 7) + level, index=ts)
    resid.iloc[10:20] = np.nan  # gaps are skipped
    shape = recent_shape(resid, origin, 7, step)
    np.testing.assert_allclose(shape, bump - bump.mean(), atol=60)  # position k = origin + k·step modulo 24 h


def test_nowcast_is_the_last_hours_offset_from_the_last_block() -> None:
    from shared.forecasting.model import _nowcast

    step = pd.Timedelta(minutes=30)
    origin = pd.Timestamp("2023-03-15 11:00", tz="UTC")
    hts = pd.date_range(origin - pd.Timedelta(days=1), origin, freq=step, inclusive="left")
    resid = np.full(len(hts), 100.0)
    resid[-2:] = 400.0  # the last hour jumped: a weather change the 24-hour block mean hardly shows
    shape = np.zeros(48)
    last_block = float(resid.mean())
    assert _nowcast(hts, resid, shape, origin, step, 1.0, last_block) == pytest.approx(400.0 - last_block)


def test_loading_the_ml_stack_writes_nothing_to_stderr() -> None:
    # the function's stderr is its JSON log stream (a training worker process loads the stack too)
    import subprocess
    import sys

    code = "from shared.forecasting.model import _quiet; _quiet()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stderr == ""


def test_a_training_pushes_its_peak_memory(store: Store, fc_settings: Settings) -> None:
    from shared.metrics import REGISTRY

    res = service.run_forecast(store, fc_settings, lambda: LocalArtifactStore(fc_settings.artifacts_dir), NOW,
                               "run-memory")
    assert res.trained and res.trained["trained"]
    own = REGISTRY.get_sample_value("powersense_forecast_training_peak_rss_bytes", {"process": "function"})
    assert own is not None and own > 200 * 2**20  # this process has loaded torch and trained
    assert REGISTRY.get_sample_value("powersense_forecast_training_peak_rss_bytes", {"process": "workers"}) is not None
    assert REGISTRY.get_sample_value("powersense_forecast_memory_limit_bytes") is not None


def test_a_training_while_another_runs_is_skipped(store: Store, settings: Settings, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # a cron training and a force_train at once each compared itself with the current model read before training,
    # and the last to finish moved `current`, even when it scored worse than the first
    from shared.lease import Lease

    def must_not_train(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained while another training held the lease")

    monkeypatch.setattr(service, "train_and_calibrate", must_not_train)
    artifacts = LocalArtifactStore(tmp_path)
    series = service.series_key(settings)
    other = Lease(store, f"forecast-trainer:{series}", ttl_s=60)
    assert other.acquire()
    try:
        grid = pd.DataFrame({"ts": pd.date_range("2023-01-01", periods=4, freq="30min", tz="UTC"), "value": 1.0})
        res = service.maybe_train(store, settings, artifacts, grid, pd.Timestamp("2023-01-02", tz="UTC"), reason="due")
    finally:
        other.release()
    assert res["trained"] is False and "another training" in res["skipped"]
    assert artifacts.current(series) is None

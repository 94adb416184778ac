"""The training-data gate (issue 10): a real source glitch — a day and a half of zeros, injected into the real
2023 load (a SYNTHETIC glitch on REAL data, like eco2mix's ~33 h of ``consommation = 0``) — must not reach
training, the model's inputs or seasonal-naive copies, and every report stays strict JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.artifacts import LocalArtifactStore
from shared.features import build_grid
from shared.forecasting import baseline, service
from shared.forecasting.gate import FLATLINE, RAMP, flatline_mask, gate, ramp_mask, strict, value_resolution
from shared.settings import Settings
from shared.store import Store
from tests.fixtures_forecast import fast_model_settings, history, insert_measurements

NOW = datetime(2023, 3, 15, 10, 20, tzinfo=UTC)
# the injected glitch: 36 hours of zeros ending two days before the forecast is issued
GLITCH = (pd.Timestamp("2023-03-11 12:00", tz="UTC"), pd.Timestamp("2023-03-13 00:00", tz="UTC"))


def _no_constants(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def strict_loads(text: str | bytes) -> Any:
    """json.loads that refuses NaN / Infinity (what a strict consumer does)."""
    return json.loads(text, parse_constant=_no_constants)


def with_glitch(rows: pd.DataFrame) -> pd.DataFrame:
    """Real rows with the glitch window's values replaced by 0 (labelled synthetic glitch)."""
    out = rows.copy()
    out.loc[(out["ts"] >= GLITCH[0]) & (out["ts"] < GLITCH[1]), "value"] = 0.0
    return out


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    yield from fast_model_settings(monkeypatch, tmp_path)


def test_gate_rejects_the_zeros_and_nothing_of_the_clean_series(winter_2023: pd.DataFrame, settings: Settings) -> None:
    clean = winter_2023[["ts", "value"]].reset_index(drop=True)
    assert gate(clean, settings, metric="consommation").rejected == 0  # real data: nothing flagged
    g = gate(with_glitch(clean), settings, metric="consommation")
    inside = ((clean["ts"] >= GLITCH[0]) & (clean["ts"] < GLITCH[1])).to_numpy()
    assert (g.reasons[inside] != "").all() and (g.reasons[~inside] == "").all()
    assert g.frame.loc[inside, "value"].isna().all()
    # a foreign series (no plausibility bounds known) still loses its zeros
    assert gate(with_glitch(clean), settings, metric=None).rejected == int(inside.sum())


def test_flatline_is_rejected(winter_2023: pd.DataFrame, settings: Settings) -> None:
    frame = winter_2023[["ts", "value"]].reset_index(drop=True)
    frame.loc[100:111, "value"] = frame.loc[100, "value"]  # a feed stuck for 3 hours (12 quarter-hours)
    g = gate(frame, settings, metric=None)
    assert set(g.reasons.iloc[100:112]) == {FLATLINE} and g.rejected == 12
    assert flatline_mask(np.array([1.0, 1.0, 1.0, 2.0, np.nan, 2.0]), 3).tolist() == [True] * 3 + [False] * 3


def test_the_sources_interpolated_ramp_is_rejected_and_its_real_ends_kept(settings: Settings) -> None:
    """REAL glitch: on 2022-07-05 the real-time data is one straight line from 05:45 to 24:00 local (38.2 → 45.3 GW,
    a gap the source filled by interpolation); the 72 quarter-hours between are rejected, the real ones kept."""
    rows = history("2022-07-04", "2022-07-07")[["ts", "value"]].reset_index(drop=True)
    g = gate(rows, settings, metric="consommation")
    local = pd.DatetimeIndex(rows["ts"]).tz_convert("Europe/Paris")
    ramp = (local >= pd.Timestamp("2022-07-05 06:00", tz="Europe/Paris")) & (
        local < pd.Timestamp("2022-07-06 00:00", tz="Europe/Paris"))
    assert set(g.reasons[ramp]) == {RAMP} and g.rejected == int(ramp.sum()) == 72
    assert g.frame.loc[ramp, "value"].isna().all() and g.frame.loc[~ramp, "value"].notna().all()


def test_one_value_with_a_decimal_does_not_split_the_sources_line(settings: Settings) -> None:
    """The same real line, with one value a day earlier written with a decimal (+0.5 MW): the series' step stays the
    whole megawatt, and the line is still 72 quarter-hours (the step used to become 0.1 and cut it at its rounding)."""
    rows = history("2022-07-04", "2022-07-07")[["ts", "value"]].reset_index(drop=True)
    rows["value"] = rows["value"].astype(float)
    rows.loc[10, "value"] += 0.5  # 2022-07-04, far from the line
    assert gate(rows, settings, metric="consommation").reasons.eq(RAMP).sum() == 72


def test_ramp_mask_allows_rounding_and_breaks_on_gaps_and_uneven_steps() -> None:
    ts = pd.date_range("2023-01-02", periods=8, freq="15min", tz="UTC")
    rounded = np.round(np.linspace(50_000, 50_350, 8))  # an interpolated line, rounded to whole MW
    assert ramp_mask(ts, rounded + np.array([0, 0, 1, 0, 0, 0, 0, 0]), 6).tolist() == [False] + [True] * 6 + [False]
    assert not ramp_mask(ts, rounded + np.array([0, 0, 9, 0, 0, 0, 0, 0]), 6).any()  # off the line: real load
    with_gap = rounded.copy()
    with_gap[4] = np.nan
    assert not ramp_mask(ts, with_gap, 6).any()
    uneven = ts.delete(4).append(pd.DatetimeIndex([ts[-1] + pd.Timedelta(minutes=45)]))
    assert not ramp_mask(uneven, rounded, 6).any()
    assert ramp_mask(ts[:5], rounded[:5], 6).sum() == 0 and ramp_mask(ts[:6], rounded[:6], 6).sum() == 4


def test_value_resolution_is_the_published_decimal_step() -> None:
    assert value_resolution(np.array([50_000.0, 50_050.0, np.nan])) == 1.0
    assert value_resolution(np.array([50.123, 50.1])) == 0.001
    assert value_resolution(np.array([np.pi])) == 1e-6


def test_seasonal_naive_copies_the_last_valid_same_slot_value(winter_2023: pd.DataFrame, settings: Settings) -> None:
    """A forecast one week after the glitch copies two weeks back, not the zeros."""
    grid = build_grid(gate(with_glitch(winter_2023[["ts", "value"]]), settings, "consommation").frame, 30,
                      max_interp_steps=0)
    origin = GLITCH[0] + pd.Timedelta(days=7)
    targets = pd.date_range(origin, GLITCH[1] + pd.Timedelta(days=7), freq="30min", inclusive="left")
    got = baseline.seasonal_naive(grid, origin, targets)
    raw = winter_2023.set_index("ts")["value"]
    np.testing.assert_allclose(got, raw.reindex(targets - pd.Timedelta(days=14)).to_numpy())


def test_strict_json_turns_non_finite_into_null() -> None:
    doc = strict({"mape": float("inf"), "bias": np.float64("nan"), "n": np.int64(3), "ok": [1.5, np.float32(2)]})
    assert strict_loads(json.dumps(doc, allow_nan=False)) == {"mape": None, "bias": None, "n": 3, "ok": [1.5, 2.0]}


@pytest.mark.slow
def test_a_glitch_moves_the_next_forecast_by_less_than_its_interval(
        store: Store, settings: Settings, winter_2023: pd.DataFrame, tmp_path: Path) -> None:
    insert_measurements(store, winter_2023)
    clean_art = LocalArtifactStore(tmp_path / "clean")
    clean = service.run_forecast(store, settings, lambda: clean_art, NOW, "run-clean")
    assert clean.quality == "model"
    # the same real data with the glitch, as a later revision of those instants (the series reads the latest)
    bad = with_glitch(winter_2023)
    insert_measurements(store, bad[(bad["ts"] >= GLITCH[0]) & (bad["ts"] < GLITCH[1])], version=2, batch_id="glitch")
    service._cache.clear()
    glitch_art = LocalArtifactStore(tmp_path / "glitch")
    glitched = service.run_forecast(store, settings, lambda: glitch_art, NOW, "run-glitch")
    assert glitched.quality == "model" and glitched.trained and glitched.trained["decision"] == "promoted"
    q = "select * from {db:Identifier}.forecasts where run_id = {r:String} order by ts"
    a, b = store.query_df(q, {"r": "run-clean"}), store.query_df(q, {"r": "run-glitch"})
    assert len(a) == len(b) > 7 * 48 and (b["yhat"] > 20_000).all()  # nothing near the zeros
    width = (a["upper"] - a["lower"]).to_numpy()
    assert (np.abs(b["yhat"].to_numpy() - a["yhat"].to_numpy()) <= width).all()
    assert set(b["yhat_source"]) <= {"model", "blend", "seasonal_naive"}
    # every JSON the stage wrote is strict
    series = service.series_key(settings)
    version = glitched.model_version
    for path in (tmp_path / "glitch").rglob("*.json"):
        strict_loads(path.read_text())
    assert version and glitch_art.current(series) is not None
    strict_loads(json.dumps(glitched.details, default=str, allow_nan=False))

"""detect's pure core: ``compute_detect`` on real 2023 eco2mix data with no store at all, and the same
inputs read back from chDB by ``load_detect_inputs`` giving the same outputs (issue 11, Deliver 3)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixtures_detect import ECO2MIX, METRIC, SOURCE, real_load, utc, write_measurements

from shared.detection.service import (
    ANOMALY_COLUMNS,
    PROFILE_HISTORY_DAYS,
    REVISIT_DAYS,
    DetectInputs,
    compute_detect,
    load_detect_inputs,
    load_detect_series,
    write_detect_outputs,
)
from shared.ingest.history import read_history
from shared.settings import Settings, get_settings
from shared.store import Store

# A window over the spring-forward day (2023-03-26: 23 local hours, 92 quarter-hours) and the Monday after.
WINDOW = (utc("2023-03-25"), utc("2023-03-28"))
NOW = WINDOW[1] + pd.Timedelta(minutes=4)
SPIKE = utc("2023-03-27 10:00")  # Monday morning, clean in the real data


@pytest.fixture(scope="module")
def load() -> pd.DataFrame:
    """Real consumption over the calibration history and the window, one 6 % spike injected."""
    start = WINDOW[0] - pd.Timedelta(days=get_settings().detect_calibration_days + PROFILE_HISTORY_DAYS)
    df = real_load(str(start.date()), str(WINDOW[1].date()))
    # whole megawatts, as the source publishes
    df.loc[df["ts"] == SPIKE, "value"] = (df.loc[df["ts"] == SPIKE, "value"] * 1.06).round()
    return df


def inputs_without_store(load: pd.DataFrame, existing: pd.DataFrame | None = None) -> DetectInputs:
    """What load_detect_inputs would read from a store holding ``load`` (one version, all plausible) and
    nothing else: no forecasts, no stored anomalies, no rejected records, no revisions, drift not due."""
    series = pd.DataFrame({
        "ts": load["ts"].to_numpy(), "value": load["value"].to_numpy(dtype=float), "nature": load["nature"].to_numpy(),
        "version": np.uint64(1), "flag": "", "raw_value": load["value"].to_numpy(dtype=float),
    })
    series["ts"] = pd.DatetimeIndex(series["ts"]).tz_convert("UTC")
    return DetectInputs(
        now=NOW, window=WINDOW, source=SOURCE, metric=METRIC, run_id="unit",
        series=series,
        forecasts=pd.DataFrame(columns=["run_id", "model_version", "issued_at", "ts", "yhat"]),
        existing=existing if existing is not None else pd.DataFrame(columns=ANOMALY_COLUMNS),
        duplicate_counts=(0, 0), dead_letters=0, bounds=None,
        revisions=pd.DataFrame(columns=["nature", "revision", "n", "mean_abs", "max_abs"]),
        drift=None,
    )


def test_compute_detect_on_real_2023_data_needs_no_store(settings: Settings, load: pd.DataFrame) -> None:
    out = compute_detect(inputs_without_store(load), settings)
    assert out.figures["detector"] == "residual"
    anomalies = out.anomalies
    assert anomalies is not None
    spike = anomalies[(anomalies["ts"] == SPIKE) & (anomalies["kind"] == "spike")]
    assert len(spike) == 1 and spike["status"].iloc[0] == "open" and spike["model_version"].iloc[0] == "profile"
    assert anomalies["ts"].between(*WINDOW, inclusive="left").all()
    assert (anomalies["run_id"] == "unit").all() and (anomalies["detected_at"] == NOW).all()
    dq = out.data_quality.set_index(["check", "scope"])
    assert dq.loc[("completeness", "2023-03-26"), "expected"] == 92.0  # the 23-hour day
    assert dq.loc[("completeness", "2023-03-26"), "value"] == 1.0
    assert {c for c, _ in dq.index} == {"completeness", "freshness", "duplicates", "dead_letter", "out_of_range",
                                        "implausible", "interpolated", "revisions"}
    assert out.model_metrics is None and out.retrain_requests == []


def test_compute_detect_is_idempotent_against_its_own_stored_rows(settings: Settings, load: pd.DataFrame) -> None:
    first = compute_detect(inputs_without_store(load), settings)
    assert first.anomalies is not None and len(first.anomalies)
    again = compute_detect(inputs_without_store(load, existing=first.anomalies), settings)
    assert again.anomalies is not None and again.anomalies.empty  # the same finding writes nothing
    assert again.figures["anomalies_flagged"] == first.figures["anomalies_flagged"]


def test_inputs_read_from_chdb_give_the_same_outputs(store: Store, settings: Settings, load: pd.DataFrame) -> None:
    write_measurements(store, load)
    loaded = load_detect_inputs(store, settings, "unit", NOW, WINDOW[0], WINDOW[1])
    assert loaded.window == WINDOW and loaded.drift is not None  # a bare model_metrics table: drift is due
    from_store = compute_detect(loaded, settings)
    pure = compute_detect(inputs_without_store(load), settings)
    assert from_store.anomalies is not None and pure.anomalies is not None
    cols = ["ts", "kind", "detector", "severity", "status", "value", "expected", "lower", "upper", "score"]
    pd.testing.assert_frame_equal(from_store.anomalies[cols].reset_index(drop=True),
                                  pure.anomalies[cols].reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(from_store.data_quality.drop(columns="details"),
                                  pure.data_quality.drop(columns="details"), check_dtype=False)
    assert write_detect_outputs(store, from_store) == len(from_store.anomalies) + len(from_store.data_quality) + len(
        from_store.model_metrics if from_store.model_metrics is not None else [])
    assert store.scalar("select count() from {db:Identifier}.anomalies") == len(from_store.anomalies)


def test_detect_reads_the_series_as_published_from_featurize_grid(store: Store, settings: Settings,
                                                                  load: pd.DataFrame) -> None:
    """featurize writes the 15-min grid; detect's series read from it is the `series` view's, row for row —
    including a flatline the training-data gate rejects (detect must judge it) and a value the store flags
    implausible (kept as raw_value with its reason, value NaN) — and its calendar (day types from featurize's
    dow/is_holiday) gives the findings the calendar module gave."""
    from fixtures_detect import upsert_load

    from shared.features import featurize, plan_featurize
    from shared.series import load_series

    data = load.copy()
    flat = (data["ts"] >= utc("2023-03-27 14:00")) & (data["ts"] < utc("2023-03-27 15:30"))
    data.loc[flat, "value"] = float(data.loc[data["ts"] == utc("2023-03-27 13:45"), "value"].iloc[0])
    data.loc[data["ts"] == utc("2023-03-27 18:00"), "value"] = 12345.0  # below the plausibility bound
    upsert_load(store, data)
    featurize(store, settings, NOW.to_pydatetime())
    start = WINDOW[0] - pd.Timedelta(days=settings.detect_calibration_days + PROFILE_HISTORY_DAYS)
    got = load_detect_series(store, settings, start, WINDOW[1])
    ref = load_series(store, SOURCE, METRIC, start.to_pydatetime(), WINDOW[1].to_pydatetime())
    pd.testing.assert_frame_equal(got, ref[list(got.columns)], check_dtype=False)
    assert got.set_index("ts").loc[utc("2023-03-27 18:00"), "flag"] != ""
    assert got[got["ts"].isin(data.loc[flat, "ts"])]["value"].notna().all()  # what detect judges
    gated = store.query_df("select ts, implausible_reason from {db:Identifier}.features final "
                           "where resolution_min = 15 and implausible = 1 order by ts")
    assert "flatline" in set(gated["implausible_reason"])  # the gate's verdict, for the forecast only
    assert plan_featurize(store, settings, NOW.to_pydatetime(), 15) is None  # read from the table, no tail
    # the findings are the ones detect made when it read the `series` view itself
    loaded = load_detect_inputs(store, settings, "unit", NOW, WINDOW[0], WINDOW[1])
    assert loaded.day_types is not None and loaded.day_types[pd.Timestamp("2023-03-26")] == 4  # a Sunday
    old_path = replace(loaded, series=load_series(store, SOURCE, METRIC, loaded.series["ts"].min().to_pydatetime(),
                                                  WINDOW[1].to_pydatetime()), day_types=None)  # calendar module
    new, old = compute_detect(loaded, settings), compute_detect(old_path, settings)
    assert new.anomalies is not None and old.anomalies is not None
    pd.testing.assert_frame_equal(new.anomalies.drop(columns="detected_at"), old.anomalies.drop(columns="detected_at"))
    assert {"flatline", "implausible", "spike"} <= set(new.anomalies["kind"])


def test_a_points_verdict_does_not_depend_on_where_the_window_starts(settings: Settings, load: pd.DataFrame) -> None:
    """Real spring 2023 with an injected one-hour 8 % dip. A run whose window starts inside the dip (every hourly run
    48 h later: the overlap re-examines the last 48 h) must judge it as the run that saw it arrive. Points before the
    window only calibrated, so the dip became the reference level and the real return from it a 'level_shift' raised
    two days late, in a week with nothing else (anomaly triage review on October–November 2023, finding D1)."""
    dip = pd.date_range(utc("2023-03-27 14:00"), periods=4, freq="15min")
    load = load.copy()
    load.loc[load["ts"].isin(dip), "value"] *= 0.92
    seen = compute_detect(inputs_without_store(load), settings)  # the window [03-25, 03-28) saw it arrive
    late = replace(inputs_without_store(load), window=(dip[1], WINDOW[1]))  # a later run's window starts inside it
    later = compute_detect(late, settings)
    assert seen.anomalies is not None and later.anomalies is not None
    cols = ["ts", "kind", "status", "value", "expected", "score"]
    both = seen.anomalies[seen.anomalies["ts"] >= dip[1]][cols].reset_index(drop=True)
    assert set(both["ts"]) >= set(dip[1:]) and set(both["kind"]) == {"dip"}
    pd.testing.assert_frame_equal(later.anomalies[cols].reset_index(drop=True), both)


@pytest.fixture(scope="module")
def line_night() -> pd.DataFrame:
    """Real consumption up to 2023-10-28 with the history detect reads: the real-time data of 2023-10-24 21:45 …
    10-25 06:15 UTC are a straight line the source drew from the night into the morning ramp."""
    start = utc("2023-10-24") - pd.Timedelta(days=get_settings().detect_calibration_days + PROFILE_HISTORY_DAYS)
    return real_load(str(start.date()), "2023-10-28")


def test_a_line_the_source_drew_is_one_interpolated_anomaly(settings: Settings, line_night: pd.DataFrame) -> None:
    """The line's first points drifted off the real night load too slowly to alarm and became the residual
    detector's reference level: when real values came back it held a level shift against that level for 48 h
    (192 points, expected values down to 13 GW; anomaly triage review, D2). The line is reported for what it is."""
    window = (utc("2023-10-24 18:00"), utc("2023-10-28"))
    out = compute_detect(replace(inputs_without_store(line_night), window=window, now=window[1]), settings)
    assert out.anomalies is not None
    night = out.anomalies[out.anomalies["ts"].between(utc("2023-10-24 21:00"), utc("2023-10-25 07:00"))]
    assert set(night["kind"]) == {"interpolated"} and set(night["detector"]) == {"gate"}
    assert (night["ts"].min(), night["ts"].max(), len(night)) == (utc("2023-10-24 21:45"), utc("2023-10-25 06:15"), 35)
    assert set(night["severity"]) == {"high"} and night["value"].notna().all()  # 8.5 h drawn, what was sent kept
    assert not out.anomalies["kind"].isin(["level_shift", "dip", "spike"]).any()


def test_the_interpolated_quality_check_rounds_as_the_detector_does(settings: Settings,
                                                                    line_night: pd.DataFrame) -> None:
    """Four values with a decimal in the window (+0.5 MW each, away from the line: a SYNTHETIC edge case on real
    data), over 1 % of its 312, made the check's rounding step, measured on the window alone, 0.1 and cut the real
    35-point line; it now takes the series' step from the history the detector reads (whole megawatts, the four a
    0.06 % of it), as the interpolated anomalies do."""
    window = (utc("2023-10-24 18:00"), utc("2023-10-28"))
    night = line_night.copy()
    night["value"] = night["value"].astype(float)
    decimals = [utc(f"2023-10-{d} 12:00") for d in (26, 27)] + [utc(f"2023-10-{d} 14:00") for d in (26, 27)]
    night.loc[night["ts"].isin(decimals), "value"] += 0.5
    out = compute_detect(replace(inputs_without_store(night), window=window, now=window[1]), settings)
    check = out.data_quality.set_index("check").loc["interpolated"]
    assert check["value"] == 35.0


def test_an_interpolated_anomaly_resolves_when_a_revision_replaces_the_line(settings: Settings,
                                                                            line_night: pd.DataFrame) -> None:
    window = (utc("2023-10-24 18:00"), utc("2023-10-28"))
    first = compute_detect(replace(inputs_without_store(line_night), window=window, now=window[1]), settings)
    assert first.anomalies is not None
    # the consolidated revision: the same instants, the load the day after at the same time (a real daily shape)
    revised = line_night.copy()
    line = revised["ts"].between(utc("2023-10-24 21:45"), utc("2023-10-25 06:15"))
    day_after = revised.set_index("ts")["value"].reindex(revised.loc[line, "ts"] + pd.Timedelta(days=1))
    revised.loc[line, "value"] = day_after.to_numpy()
    inputs = replace(inputs_without_store(revised), window=window, now=window[1] + pd.Timedelta(hours=1),
                     existing=first.anomalies)
    inputs.series.loc[inputs.series["ts"].isin(revised.loc[line, "ts"]), "version"] = np.uint64(2)
    again = compute_detect(inputs, settings)
    assert again.anomalies is not None
    closed = again.anomalies[again.anomalies["kind"] == "interpolated"]
    assert len(closed) == 35 and set(closed["status"]) == {"resolved"}
    assert set(closed["resolution"]) == {"no longer a straight line (version 2)"}


LATER = NOW + pd.Timedelta(hours=1)


def _after_revision(settings: Settings, load: pd.DataFrame, factor: float,
                    **later: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The anomalies of a first run on ``load``, and what a run an hour later writes once the value at SPIKE is
    revised to the real value × ``factor`` — the consolidated data (another nature, whose versions count from 1
    again) revising what the real-time data sent; ``later``: fields of that run's inputs (window, revisit_from)."""
    first = compute_detect(inputs_without_store(load), settings).anomalies
    revised = load.copy()
    real = real_load(str(SPIKE.date()), str((SPIKE + pd.Timedelta(days=1)).date())).set_index("ts")["value"][SPIKE]
    revised.loc[revised["ts"] == SPIKE, "value"] = round(real * factor)
    rows = compute_detect(replace(inputs_without_store(revised), existing=first, now=LATER, **later),
                          settings).anomalies
    assert first is not None and rows is not None
    return first, rows


def test_a_revision_into_another_nature_resolves_the_anomaly(settings: Settings, load: pd.DataFrame) -> None:
    """The consolidated value has version 1 like the real-time one it revises: comparing versions alone never
    resolved the anomaly (anomaly triage review D4)."""
    _, rows = _after_revision(settings, load, 1.0)
    spike = rows[(rows["ts"] == SPIKE) & (rows["kind"] == "spike")]
    assert (len(spike), spike["status"].iloc[0], spike["resolution"].iloc[0]) == (1, "resolved",
                                                                                   "revised value (version 1)")


def test_an_open_anomaly_shows_the_revised_value_it_still_flags(settings: Settings, load: pd.DataFrame) -> None:
    """A revision that leaves the point anomalous refreshes the open row (value, expectation, severity), keeping
    when it was first detected: the row showed the first value judged for good (review D6)."""
    first, rows = _after_revision(settings, load, 1.12)
    before = first.set_index(["ts", "kind"]).loc[(SPIKE, "spike")]
    after = rows.set_index(["ts", "kind"]).loc[(SPIKE, "spike")]
    assert after["status"] == "open" and after["detected_at"] == NOW and after["updated_at"] == LATER
    assert after["value"] == pytest.approx(before["value"] / 1.06 * 1.12, abs=2)
    assert (before["severity"], after["severity"]) == ("medium", "high")
    assert len(rows) == 1  # nothing else changed


def test_a_revision_after_the_overlap_still_resolves_the_anomaly(settings: Settings, load: pd.DataFrame) -> None:
    """A run whose window starts after the spike (the 48-h overlap has passed it) still checks it against the
    revision that arrived since: the anomaly stayed open for good (anomaly triage review D5). New points are not
    raised in those revisited days."""
    later_start = SPIKE + pd.Timedelta(hours=6)
    _, rows = _after_revision(settings, load, 1.0, window=(later_start, WINDOW[1]),
                              revisit_from=later_start - pd.Timedelta(days=REVISIT_DAYS))
    assert rows[["kind", "status", "resolution"]].to_dict("records") == [
        {"kind": "spike", "status": "resolved", "resolution": "revised value (version 1)"}]
    assert (rows["ts"] == SPIKE).all()


def test_every_point_of_a_grown_block_carries_its_final_severity(settings: Settings, line_night: pd.DataFrame) -> None:
    """The source's line of 2023-10-24 21:45 … 10-25 06:15 UTC seen at 23:30, then whole: the rows written first
    kept the severity of a 1.5-hour block while the rest said 8.5 hours (one block, mixed severities; review D6)."""
    window = (utc("2023-10-24 18:00"), utc("2023-10-28"))
    early = line_night[line_night["ts"] <= utc("2023-10-24 23:30")]
    first = compute_detect(replace(inputs_without_store(early), window=(window[0], utc("2023-10-24 23:45")),
                                   now=utc("2023-10-24 23:49")), settings).anomalies
    assert first is not None and set(first.loc[first["kind"] == "interpolated", "severity"]) == {"medium"}
    later = compute_detect(replace(inputs_without_store(line_night), window=window, now=window[1],
                                   existing=first), settings).anomalies
    assert later is not None
    stored = pd.concat([first, later]).sort_values("updated_at").groupby(["kind", "ts"]).last()
    line = stored.loc["interpolated"]
    assert len(line) == 35 and set(line["severity"]) == {"high"}
    assert (line.loc[line.index <= utc("2023-10-24 23:15"), "detected_at"] == utc("2023-10-24 23:49")).all()


def test_a_run_whose_window_starts_inside_a_block_keeps_its_severity(settings: Settings, load: pd.DataFrame) -> None:
    """Six hours the source did not publish, then a later run whose window starts three hours into them: the block is
    still six hours long (high). Measured on the rows left after the window's cut, it was three, and the run wrote the
    block's last rows back as 'medium' beside the first ones' 'high' (diff review of 2026-12-06)."""
    gap = load["ts"].between(utc("2023-03-27 00:00"), utc("2023-03-27 05:45"))
    first = compute_detect(replace(inputs_without_store(load[~gap])), settings).anomalies
    assert first is not None
    missing = first[first["kind"] == "missing"]
    assert len(missing) == 24 and set(missing["severity"]) == {"high"}
    later = replace(inputs_without_store(load[~gap]), window=(utc("2023-03-27 03:00"), WINDOW[1]), existing=first,
                    revisit_from=WINDOW[0], now=LATER)  # the stored rows it reads are those of the days it revisits
    rows = compute_detect(later, settings).anomalies
    assert rows is not None and rows.empty


def rte_intraday_forecasts(start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """RTE's intraday forecast (``prevision_j``, real data of the shipped 2023 file) as forecast rows: one run issued
    at every hour's :07 from ``start`` to ``end``, covering the next 8 hours at 30-minute steps."""
    pj = read_history([ECO2MIX / "eco2mix_national_2023.csv.gz"], utc("2023-01-01"), utc("2024-01-01"))
    pj = pj.set_index("ts")["prevision_j"].dropna().astype(float)
    pj = pj[pj.index.minute % 30 == 0]
    runs = []
    for issued in pd.date_range(start, end, freq="1h") + pd.Timedelta(minutes=7):
        target = pj[(pj.index > issued) & (pj.index <= issued + pd.Timedelta(hours=8))]
        runs.append(pd.DataFrame({"run_id": f"rte-{issued:%Y%m%d%H%M}", "model_version": "rte-prevision_j",
                                  "issued_at": issued, "ts": target.index, "yhat": target.to_numpy()}))
    return pd.concat(runs, ignore_index=True)


def test_the_fall_back_nights_repeated_hour_is_no_reference_level(settings: Settings) -> None:
    """2023-10-29, with RTE's intraday forecast as the expectation: the real-time night ran 4–5 GW above that forecast
    until the end of the repeated hour (01:00–01:45Z, published once), then stepped 3.4 GW down onto it at 02:00Z.
    Anchored on the repeated hour, that return was a 'level shift' held all day (83 points, and 7 dip points before
    it; the month's hourly replay of the triage review held 84 open)."""
    window = (utc("2023-10-28 12:00"), utc("2023-10-30"))
    start = window[0] - pd.Timedelta(days=get_settings().detect_calibration_days + PROFILE_HISTORY_DAYS)
    night = real_load(str(start.date()), "2023-10-30")
    inputs = replace(inputs_without_store(night), window=window, now=window[1],
                     forecasts=rte_intraday_forecasts(utc("2023-10-20"), window[1]))
    out = compute_detect(inputs, settings)
    assert out.anomalies is not None
    assert out.figures["points_with_forecast"] == 36 * 4  # every point of the window judged against the forecast
    assert not out.anomalies["kind"].isin(["level_shift", "dip"]).any()


def test_a_source_that_publishes_both_repeated_hours_keeps_its_expectation_after_them(settings: Settings) -> None:
    """The restart after the repeated hour is for a source that publishes it once (RTE). NESO, ENTSO-E or PJM publish
    both occurrences: there the step after the hour keeps its expected change. (The real night, its first occurrence
    filled with the second's values: a SYNTHETIC edge case on real data.)"""
    from shared.detection.residual import ResidualParams, _ResidualState, profile_delta, regular_grid

    x = regular_grid(real_load("2023-08-20", "2023-10-31")[["ts", "value"]])
    first = pd.date_range(utc("2023-10-29 00:00"), periods=4, freq="15min")
    after = utc("2023-10-29 02:00")  # the first step after the repeated hour
    params = ResidualParams.from_settings(settings)
    once = _ResidualState.start(x, profile_delta(x), params, None)
    assert np.isnan(x.reindex(first)).all() and np.isnan(once.dexp[x.index.get_loc(after)])
    both = x.copy()
    both[first] = x[first + pd.Timedelta(hours=1)].to_numpy()
    twice = _ResidualState.start(both, profile_delta(both), params, None)
    assert np.isfinite(twice.dexp[both.index.get_loc(after)])

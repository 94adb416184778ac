"""Pure detection functions on real eco2mix data: causality of the residual detector (what the cron
replay relies on), the z-score baseline, DST helpers, PSI, and the evaluation CLI's output shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_detect import ECO2MIX, real_load, utc

from shared.detection import evaluate
from shared.detection.drift import psi
from shared.detection.quality import expected_slots, interpolated
from shared.detection.residual import detect_residual, is_fallback_gap, profile_delta, regular_grid
from shared.detection.zscore import detect_zscore


@pytest.fixture(scope="module")
def spring_2023() -> pd.Series:
    """Real 2023 consumption, January to May, on its 15-min grid."""
    return regular_grid(real_load("2023-01-01", "2023-05-01")[["ts", "value"]])


@pytest.mark.parametrize(("day", "slots"), [("2023-03-26", 92), ("2023-06-01", 96), ("2023-10-29", 100)])
def test_local_day_has_dst_aware_quarter_hours(day: str, slots: int) -> None:
    assert expected_slots(pd.Timestamp(day, tz="Europe/Paris")) == slots


def test_interpolated_check_warns_on_the_sources_straight_line() -> None:
    """Real: 2023-11-01 22:45 UTC … 11-02 19:00 UTC the real-time data is one straight line (82 quarter-hours between
    two real values); the two days after it have none."""
    ramp_day = real_load("2023-11-01 12:00", "2023-11-03")
    c = interpolated(ramp_day.assign(raw_value=ramp_day["value"]), 6)
    assert (c["check"], c["value"], c["status"]) == ("interpolated", 82.0, "warn")
    assert c["details"]["first"] == "2023-11-01T22:45:00+00:00"
    clean = real_load("2023-11-03", "2023-11-05")
    assert interpolated(clean, 6)["status"] == "ok"


def test_fallback_gap_is_the_first_repeated_local_hour() -> None:
    ts = pd.date_range("2023-10-28 23:00", "2023-10-29 02:00", freq="15min", tz="UTC")
    assert list(ts[is_fallback_gap(ts)].strftime("%H:%M")) == ["00:00", "00:15", "00:30", "00:45"]


def test_residual_detector_decides_from_the_past_only(spring_2023: pd.Series) -> None:
    # what a run at time T reports must not change when later data exists: the cron replay relies on it
    x, _ = evaluate.inject(spring_2023, utc("2023-03-01"), utc("2023-05-01"), per_kind=4, seed=7)
    cut = utc("2023-04-02 12:00")
    full = detect_residual(x, profile_delta(x), detect_from=utc("2023-03-01"))
    early = detect_residual(x[x.index <= cut], profile_delta(x[x.index <= cut]), detect_from=utc("2023-03-01"))
    decided = full[full["decided_ts"] <= cut].drop(columns="superseded").reset_index(drop=True)
    assert len(decided) > 0
    pd.testing.assert_frame_equal(decided, early.drop(columns="superseded").reset_index(drop=True))


def test_zscore_baseline_flags_a_gross_dip(spring_2023: pd.Series) -> None:
    x = spring_2023.copy()
    t = utc("2023-04-19 12:00")
    x[t] *= 0.5  # the seasonal z-score only sees gross errors: its 8-week buckets are wide in spring
    rows = detect_zscore(x, detect_from=utc("2023-04-19"))
    assert rows.set_index("ts").loc[t, "kind"] == "dip"


def test_psi_separates_a_shifted_distribution() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(50_000, 5_000, 5_000)
    assert psi(ref, rng.normal(50_000, 5_000, 500)) < 0.1 < 0.5 < psi(ref, rng.normal(58_000, 5_000, 500))


def test_evaluate_cli_writes_the_report_shape_and_a_png(tmp_path: Path) -> None:
    files = [str(ECO2MIX / "eco2mix_national_2023.csv.gz")]
    code = evaluate.main(
        [
            "--data",
            *files,
            "--start",
            "2023-04-01T00:00:00Z",
            "--end",
            "2023-06-01T00:00:00Z",
            "--seed",
            "3",
            "--per-kind",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    report = json.loads((tmp_path / "anomaly_eval.json").read_text())
    ps = report["detectors"]["powersense"]
    assert code == 0 and (tmp_path / "anomaly_eval.png").stat().st_size > 0
    assert set(report["detectors"]) == {"powersense", "zscore_baseline"}
    assert {"precision", "recall", "f1"} <= set(ps["overall"]) and set(ps["per_kind"]) == set(evaluate.KINDS)
    assert {"median_time_to_detect_min", "false_alarms_per_week"} <= set(report["detectors"]["zscore_baseline"])


def test_residual_params_come_from_the_settings() -> None:
    from shared.detection.residual import ResidualParams
    from shared.settings import Settings

    p = ResidualParams.from_settings(Settings(detect_onset_z=9.5, detect_level_shift_z=6.0))
    assert (p.onset_z, p.shift_z) == (9.5, 6.0)
    assert p.calibration_days == Settings.model_fields["detect_calibration_days"].default


def test_evaluate_cli_ends_a_bad_input_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.csv"
    other.write_text("when,load\n2023-01-01T00:00Z,1\n", encoding="utf-8")
    assert evaluate.main(["--data", str(other), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("evaluate-anomalies: error: ") and "Traceback" not in err

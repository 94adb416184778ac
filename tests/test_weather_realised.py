"""The realised temperature a user brings to ``evaluate --weather --temperature``: Enedis's smoothed national series
or the series' own raw ``timestamp,value`` temperature (°C), and a weather backtest of another series than France's
with its own temperature.

The temperature values are real: the shipped Enedis series (data/weather, January–March 2023) rewritten as a
``timestamp,value`` file; the load is the real Swiss ENTSO-E export of 2023-Q1 (tests/data). France's temperature
stands in for Switzerland's in the wiring test (no Swiss temperature ships), which checks where the values go, not
what they are worth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.errors import BadRequestError
from shared.forecasting import evaluate
from shared.forecasting.service import model_config
from shared.settings import get_settings
from shared.weather.enedis import read_enedis_file
from shared.weather.features import derive
from shared.weather.realised import normal_of, on_grid, read_temperature_files
from shared.weather.service import WEATHER_DIR

SHIPPED_2023 = WEATHER_DIR / "enedis_temperature_lissee_nationale_2023.csv.gz"
SWISS_Q1 = Path(__file__).parent / "data" / "entsoe_total-load_CH_2023-Q1.csv.gz"


@pytest.fixture(scope="module")
def first_quarter() -> pd.DataFrame:
    shipped = read_enedis_file(SHIPPED_2023)
    return shipped[shipped["ts"] < pd.Timestamp("2023-04-01", tz="UTC")][["ts", "realised"]].reset_index(drop=True)


def _write(path: Path, frame: pd.DataFrame, column: str = "realised") -> Path:
    pd.DataFrame({"timestamp": frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": frame[column]}).to_csv(
        path, index=False)
    return path


def test_a_timestamp_value_file_is_a_raw_temperature_the_product_smooths(first_quarter: pd.DataFrame,
                                                                          tmp_path: Path) -> None:
    got = read_temperature_files([_write(tmp_path / "t.csv", first_quarter)])
    assert got.smoothed is False
    pd.testing.assert_frame_equal(got.frame, first_quarter, check_dtype=False)


def test_a_temperature_with_three_decimals_in_a_semicolon_separated_file_is_read(first_quarter: pd.DataFrame,
                                                                                  tmp_path: Path) -> None:
    # "5.125" °C cannot carry a thousands dot: no ambiguity error for a temperature (a load file's "37.888" has one)
    three = first_quarter["realised"].map(lambda v: f"{v:.3f}")
    path = tmp_path / "t.csv"
    pd.DataFrame({"timestamp": first_quarter["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": three}).to_csv(
        path, sep=";", index=False)
    got = read_temperature_files([path])
    assert (got.frame["realised"].to_numpy() == three.astype(float).to_numpy()).all()


def test_enedis_files_are_read_as_already_smoothed(first_quarter: pd.DataFrame) -> None:
    got = read_temperature_files([SHIPPED_2023])
    assert got.smoothed is True
    assert got.frame["realised"].tolist() == read_enedis_file(SHIPPED_2023)["realised"].tolist()


def test_files_of_both_kinds_are_refused(first_quarter: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match="mix Enedis's smoothed national temperature with a timestamp,value"):
        read_temperature_files([SHIPPED_2023, _write(tmp_path / "t.csv", first_quarter)])


def test_a_file_in_kelvin_is_refused_with_the_unit_named(first_quarter: pd.DataFrame, tmp_path: Path) -> None:
    kelvin = first_quarter.assign(realised=first_quarter["realised"] + 273.15)
    with pytest.raises(BadRequestError, match=r"values outside -90 … 60 °C .*read as °C\): in another unit\? "
                                              r"\(--temperature-unit F or K\)$"):
        read_temperature_files([_write(tmp_path / "k.csv", kelvin)])


@pytest.mark.parametrize(("unit", "to_unit"), [("F", lambda c: c * 9 / 5 + 32), ("K", lambda c: c + 273.15)])
def test_a_file_in_another_unit_is_converted_when_the_unit_is_given(first_quarter: pd.DataFrame, tmp_path: Path,
                                                                    unit: str, to_unit: object) -> None:
    other = first_quarter.assign(realised=to_unit(first_quarter["realised"]))  # type: ignore[operator]
    got = read_temperature_files([_write(tmp_path / "t.csv", other)], unit=unit)
    assert np.allclose(got.frame["realised"], first_quarter["realised"])


def test_a_load_file_is_not_a_temperature() -> None:
    with pytest.raises(BadRequestError, match="a load history file, not a temperature"):
        read_temperature_files([SWISS_Q1])


def test_an_hourly_temperature_is_interpolated_onto_a_half_hourly_grid(first_quarter: pd.DataFrame) -> None:
    hourly = first_quarter[first_quarter["ts"].dt.minute == 0].reset_index(drop=True)
    half = pd.Series(pd.date_range("2023-01-10T00:00Z", "2023-01-10T03:00Z", freq="30min"))
    got = on_grid(hourly, half)["temp_degc"].to_numpy()
    at = hourly.set_index("ts")["realised"]
    assert got[0::2].tolist() == at.reindex(pd.DatetimeIndex(half[0::2])).tolist()
    assert np.allclose(got[1::2], (got[0:-1:2] + got[2::2]) / 2)


def test_the_files_own_climatology_stands_in_after_it_ends(first_quarter: pd.DataFrame) -> None:
    later = pd.Series(pd.DatetimeIndex(["2024-01-15T06:00Z", "2024-07-01T12:00Z"]))
    got = normal_of(first_quarter, later)["temp_degc"].tolist()
    # 15 Jan at 06:00 is in the file (one year): its value; 1 Jul is not: the file's mean
    assert got[0] == first_quarter.set_index("ts").loc[pd.Timestamp("2023-01-15T06:00Z"), "realised"]
    assert got[1] == pytest.approx(first_quarter["realised"].mean())


def test_another_series_weather_is_its_own_temperature_smoothed_and_damped_toward_its_own_normal(
        first_quarter: pd.DataFrame, tmp_path: Path) -> None:
    own = read_temperature_files([_write(tmp_path / "t.csv", first_quarter)])
    ts = pd.date_range("2023-02-01T00:00Z", "2023-02-20T00:00Z", freq="30min")
    grid = pd.DataFrame({"ts": ts, "value": 1.0})
    cfg = model_config(get_settings())
    real, gw, wcfg = evaluate.shipped_weather(grid, cfg, own, other_series=True)
    expected = derive(on_grid(own.frame, pd.Series(ts)), smoothed_input=False)
    assert wcfg.weather and not wcfg.weather_smoothed_input
    assert wcfg.weather_damping and wcfg.weather_normal == "own" and cfg.weather_normal == "france"
    assert np.allclose(gw["temp_smooth_degc"], expected["temp_smooth_degc"], equal_nan=True)
    assert not np.allclose(gw["temp_smooth_degc"], gw["temp_degc"])  # smoothed by the product, not used raw


def test_another_series_weather_backtest_reads_its_own_temperature(
        first_quarter: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, object] = {}

    def reached(grid: pd.DataFrame, *args: object, **kwargs: object) -> dict[str, object]:
        seen.update(kwargs)
        raise BadRequestError("stopped before training")

    monkeypatch.setattr(evaluate, "weather_evaluation", reached)
    temp = _write(tmp_path / "t.csv", first_quarter)
    assert evaluate.main(["--data", str(SWISS_Q1), "--weather", "--temperature", str(temp), "--test-start",
                          "2023-03-01", "--test-end", "2023-03-08", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "stopped before training" in capsys.readouterr().err
    assert seen["other_series"] is True and seen["temperature"].smoothed is False  # type: ignore[attr-defined]


def test_another_series_weather_without_its_temperature_is_refused(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["--data", str(SWISS_Q1), "--weather", "--test-start", "2023-03-01", "--test-end",
                          "2023-03-08", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "needs that series' temperature: --temperature FILE" in capsys.readouterr().err


def test_enedis_temperature_for_another_series_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["--data", str(SWISS_Q1), "--weather", "--temperature", str(SHIPPED_2023), "--test-start",
                          "2023-03-01", "--test-end", "2023-03-08", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "Enedis's national temperature is France's" in capsys.readouterr().err


def test_a_report_on_the_series_own_temperature_says_so_not_enedis() -> None:
    notes = " ".join(evaluate.weather_notes(own_temperature=True, other_series=True))
    assert "Enedis" not in notes and "2020-01-09" not in notes
    assert "the series' own raw temperature" in notes and "normal of its own realised temperature" in notes


def test_named_columns_read_a_temperature_whose_header_is_not_timestamp_value(first_quarter: pd.DataFrame,
                                                                             tmp_path: Path) -> None:
    path = tmp_path / "station.csv"
    pd.DataFrame({"station": "07149", "DateTime (UTC)": first_quarter["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "Temp [°C]": first_quarter["realised"]}).to_csv(path, index=False)
    got = read_temperature_files([path], columns=("DateTime (UTC)", "Temp [°C]"))
    pd.testing.assert_frame_equal(got.frame, first_quarter, check_dtype=False)


def test_a_temperature_header_naming_neither_column_says_how_to_name_them(first_quarter: pd.DataFrame,
                                                                         tmp_path: Path) -> None:
    path = tmp_path / "station.csv"
    pd.DataFrame({"time": first_quarter["ts"], "temperature": first_quarter["realised"]}).to_csv(path, index=False)
    with pytest.raises(BadRequestError, match=r"not a temperature file this product reads \(columns temperature, "
                                              r"time\).*--temperature-columns TIME,VALUE names other columns$"):
        read_temperature_files([path])


def test_temperature_columns_go_with_temperature_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["--weather", "--temperature-columns", "datetime,temp_c", "--out", str(tmp_path)]) == 2
    assert "--temperature-columns and --temperature-unit describe --temperature files" in capsys.readouterr().err


def test_the_issues_mape_targets_are_checked_on_frances_series_only() -> None:
    import json

    from shared.settings import REPO_ROOT

    rep = json.loads((REPO_ROOT / "reports" / "forecast_eval_weather_2023.json").read_text())
    args = (rep["b_summary"], rep["models"]["a_perfect"],
            rep["train_seconds"]["weather"] + rep["train_seconds"]["weather_free"],
            rep["predict_seconds_single_origin"]["weather"])
    assert evaluate.weather_checks(*args, other_series=False) == rep["checks"]  # France's report, recomputed
    other = evaluate.weather_checks(*args, other_series=True)
    assert set(other) == {"b_coverage_75_85_every_day", "train_seconds_le_120", "predict_seconds_le_5"}

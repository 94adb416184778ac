"""Enedis's smoothed national temperature read from the files a user downloads (the one reader of the series), and
``evaluate --weather --temperature`` for years the shipped series lacks. The values are the shipped real series
(data/weather, January 2023), rewritten into the open-data portal's export shapes: its CSV export (``;``, local
offsets, field names or labels) and its JSON records response."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from shared.errors import BadRequestError
from shared.forecasting import evaluate
from shared.weather.enedis import read_enedis, read_enedis_file
from shared.weather.realised import RealisedTemperature
from shared.weather.service import WEATHER_DIR

SHIPPED_2023 = WEATHER_DIR / "enedis_temperature_lissee_nationale_2023.csv.gz"


@pytest.fixture(scope="module")
def january() -> pd.DataFrame:
    shipped = read_enedis_file(SHIPPED_2023)
    return shipped[shipped["ts"] < pd.Timestamp("2023-02-01", tz="UTC")].reset_index(drop=True)


def _paris(ts: pd.Series) -> pd.Series:
    return ts.dt.tz_convert("Europe/Paris").map(lambda t: t.isoformat())


def test_the_portals_csv_export_reads_to_the_shipped_values(january: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "donnees-de-temperature-et-de-pseudo-rayonnement.csv"
    pd.DataFrame({"horodate": _paris(january["ts"]), "temperature_realisee_lissee_degc": january["realised"],
                  "temperature_normale_lissee_degc": january["normal"], "pseudo_rayonnement": 0}).to_csv(
        path, sep=";", index=False)
    pd.testing.assert_frame_equal(read_enedis_file(path), january)


def test_the_portals_labels_and_a_decimal_comma_read_the_same(january: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    pd.DataFrame({"Horodate": _paris(january["ts"]),
                  "Température réalisée lissée (°C)": january["realised"].map(lambda v: f"{v:.1f}".replace(".", ",")),
                  "Température normale lissée (°C)": january["normal"].map(lambda v: f"{v:.1f}".replace(".", ","))
                  }).to_csv(path, sep=";", index=False)
    pd.testing.assert_frame_equal(read_enedis_file(path), january)


def test_a_records_response_reads_the_same(january: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    records = [{"horodate": t, "temperature_realisee_lissee_degc": r, "temperature_normale_lissee_degc": n}
               for t, r, n in zip(_paris(january["ts"]), january["realised"], january["normal"], strict=True)]
    path.write_text(json.dumps({"total_count": len(records), "results": records[::-1]}), encoding="utf-8")
    pd.testing.assert_frame_equal(read_enedis_file(path), january)


def test_a_file_without_the_realised_temperature_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("horodate;temperature_normale_lissee_degc\n2023-01-01T01:00:00+01:00;4.6\n", encoding="utf-8")
    with pytest.raises(BadRequestError, match=r"not Enedis's national temperature .*columns: horodate, "
                                              r"temperature_normale_lissee_degc\)$"):
        read_enedis_file(path)


def test_a_later_file_wins_where_two_overlap(january: pd.DataFrame, tmp_path: Path) -> None:
    newer = january.assign(realised=january["realised"] + 0.5)
    path = tmp_path / "newer.csv"
    newer.assign(horodate=_paris(newer["ts"]), temperature_realisee_lissee_degc=newer["realised"])[
        ["horodate", "temperature_realisee_lissee_degc"]].to_csv(path, index=False)
    both = read_enedis([SHIPPED_2023, path])
    jan = both["ts"] < pd.Timestamp("2023-02-01", tz="UTC")
    assert both.loc[jan, "realised"].tolist() == newer["realised"].tolist()
    assert len(both) == len(read_enedis_file(SHIPPED_2023))


def test_the_backtests_temperature_takes_a_users_files_over_the_shipped_series(january: pd.DataFrame,
                                                                                tmp_path: Path) -> None:
    extra = january.assign(realised=january["realised"] - 1.0)
    ts = pd.Series(pd.date_range("2023-01-31T23:00Z", "2023-02-01T01:00Z", freq="30min"))
    got = evaluate.realised_temperature(ts, RealisedTemperature(extra[["ts", "realised"]], True, "Enedis"))
    shipped = evaluate.realised_temperature(ts)
    in_extra = ts < pd.Timestamp("2023-02-01", tz="UTC")
    assert (got.loc[in_extra, "temp_degc"] == shipped.loc[in_extra, "temp_degc"] - 1.0).all()
    assert got.loc[~in_extra, "temp_degc"].tolist() == shipped.loc[~in_extra, "temp_degc"].tolist()


def test_a_users_half_hourly_file_gives_the_backtest_a_temperature_at_every_quarter_hour(
        january: pd.DataFrame) -> None:
    extra = january.assign(realised=january["realised"] - 1.0)
    ts = pd.Series(pd.date_range("2023-01-10T06:00Z", "2023-01-10T09:00Z", freq="15min"))
    got = evaluate.realised_temperature(ts, RealisedTemperature(extra[["ts", "realised"]], True, "Enedis"))
    own = extra.set_index("ts")["realised"].reindex(pd.DatetimeIndex(ts[0::2])).to_numpy()
    assert got["temp_degc"].iloc[0::2].tolist() == own.tolist()
    assert got["temp_degc"].iloc[1::2].to_numpy() == pytest.approx((own[:-1] + own[1:]) / 2)


def test_a_short_gap_in_a_users_file_shows_the_shipped_series_real_values(january: pd.DataFrame) -> None:
    extra = january.assign(realised=january["realised"] - 1.0)
    hole = (extra["ts"] >= "2023-01-16T10:00Z") & (extra["ts"] < "2023-01-16T12:00Z")  # 2 h: short enough to fill
    ts = pd.Series(pd.date_range("2023-01-16T09:00Z", "2023-01-16T12:30Z", freq="30min"))
    got = evaluate.realised_temperature(ts, RealisedTemperature(extra.loc[~hole, ["ts", "realised"]], True, "Enedis"))
    shipped = evaluate.realised_temperature(ts)
    in_hole = ((ts >= pd.Timestamp("2023-01-16T10:00Z")) & (ts < pd.Timestamp("2023-01-16T12:00Z"))).to_numpy()
    assert got.loc[in_hole, "temp_degc"].tolist() == shipped.loc[in_hole, "temp_degc"].tolist()
    assert got.loc[~in_hole, "temp_degc"].to_numpy() == pytest.approx(shipped.loc[~in_hole, "temp_degc"] - 1.0)


def test_a_weather_backtest_beyond_the_temperature_is_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    trained: list[object] = []
    monkeypatch.setattr(evaluate, "backtest", lambda *a, **k: trained.append(a))
    assert evaluate.main(["--years", "2019", "--weather", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate: error: --weather: realised temperature covers 0.0% of the test period "
                          "2019-01-01 … 2020-01-01 (local, end excluded") and "--temperature FILE" in err
    assert trained == []


def test_temperature_files_go_with_weather(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["--years", "2023", "--temperature", str(SHIPPED_2023), "--out", str(tmp_path)]) == 2
    assert "--temperature goes with --weather" in capsys.readouterr().err

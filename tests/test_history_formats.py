"""History files as users download them (shared/ingest/history.py): ODRÉ exports (labels or field names, CSV or
JSON) and RTE's eCO2mix downloads read to the same values as the shipped history, every record through the
poller's validation, foreign and padding records refused and counted.

Fixtures are real excerpts (tests/data/README.md); every value read is checked against the shipped history,
which was built from the same sources."""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import json
import lzma
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from shared.errors import BadRequestError, ConfigurationError
from shared.ingest.history import (
    LOAD_COLUMNS,
    column_key,
    history_format,
    naive_tz_option,
    parse_columns,
    read_history,
    read_history_file,
)
from shared.ingest.parse import NUMERIC_FIELDS
from shared.settings import REPO_ROOT, Settings
from shared.store import Store

DATA = Path(__file__).parent / "data"
ODRE_EXPORT = DATA / "odre_eco2mix-national-tr_2021-12-11.csv"
RTE_DOWNLOAD = DATA / "eCO2mix_RTE_Annuel-Definitif_2018_dst-days.xls.gz"
ECO2MIX = REPO_ROOT / "data" / "eco2mix"
SAMPLE_RESPONSE = ECO2MIX / "odre_sample_response.json"


def _shipped(*years: int) -> pd.DataFrame:
    return read_history([ECO2MIX / f"eco2mix_national_{y}.csv.gz" for y in years]).set_index("ts")


def _same_load_values(read: pd.DataFrame, shipped: pd.DataFrame) -> None:
    got = read.set_index("ts")[list(LOAD_COLUMNS)]
    pd.testing.assert_frame_equal(got, shipped.loc[got.index, list(LOAD_COLUMNS)].astype("float64"),
                                  check_names=False)


def _export_text() -> str:
    return ODRE_EXPORT.read_text(encoding="utf-8")


def _with_field_names(text: str, sep: str) -> str:
    """The same export as the API's ``exports/csv`` writes it by default: field names, not labels."""
    header, body = text.split("\n", 1)
    fields = [column_key(label) for label in header.rstrip("\r").split(";")]
    return sep.join(fields) + "\n" + (body if sep == ";" else body.replace(";", sep))


def test_an_odre_label_export_reads_to_the_shipped_values() -> None:
    df = read_history_file(ODRE_EXPORT)
    assert df.attrs == {"format": "odre", "rejections": {}}
    assert len(df) == 96 and df["ts"].is_monotonic_increasing
    assert df["ts"].iloc[0] == pd.Timestamp("2021-12-10T23:00Z")  # local midnight, +01:00
    _same_load_values(df, _shipped(2021))


def test_labels_map_to_the_api_field_names() -> None:
    df = read_history_file(ODRE_EXPORT)
    numeric = [c for c in df.columns if c not in ("ts", "nature")]
    # the export's 32 numeric labels, each to its Explore-API name (Taux de CO2 → taux_co2, Prévision J-1 → …)
    assert len(numeric) == 32 and set(numeric) <= set(NUMERIC_FIELDS)
    assert {"taux_co2", "prevision_j1", "fioul_cogen", "hydraulique_fil_eau_eclusee"} <= set(numeric)


@pytest.mark.parametrize(("label", "field"), [
    ("\ufeffPérimètre", "perimetre"), ("Date - Heure", "date_heure"), ("Heures", "heure"),
    ("Prévision J-1 (MW)", "prevision_j1"), ("Taux de Co2", "taux_co2"), ("Taux de CO2 (g/kWh)", "taux_co2"),
    ("Fioul - Cogén.", "fioul_cogen"), ("Gaz - Cogénération (MW)", "gaz_cogen"),
    ("Hydraulique - Fil de l'eau + éclusée (MW)", "hydraulique_fil_eau_eclusee"),
    ("Hydraulique - Fil de l?eau + éclusée", "hydraulique_fil_eau_eclusee"),  # RTE's download, as it is
    ("Hydraulique - Fil de l\x92eau + éclusée", "hydraulique_fil_eau_eclusee"),  # cp1252 ’ read as ISO-8859-1
    ("Ech. comm. Allemagne-Belgique (MW)", "ech_comm_allemagne_belgique")])
def test_a_label_names_its_api_field(label: str, field: str) -> None:
    assert column_key(label) == field


@pytest.mark.parametrize("sep", [";", ","])
def test_an_export_with_field_names_reads_like_the_label_export(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "export.csv"
    path.write_text(_with_field_names(_export_text(), sep), encoding="utf-8")
    pd.testing.assert_frame_equal(read_history_file(path), read_history_file(ODRE_EXPORT))


def test_an_export_of_the_instant_and_the_load_alone_reads_to_the_shipped_values(tmp_path: Path) -> None:
    full = read_history_file(ODRE_EXPORT)
    path = tmp_path / "two-columns.csv"
    pd.DataFrame({"date_heure": full["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                  "consommation": full["consommation"].astype(int)}).to_csv(path, sep=";", index=False)
    df = read_history([path])
    assert df.attrs["formats"] == ["eco2mix"] and (df["nature"] == "").all()
    got = df.set_index("ts")["consommation"]
    assert (got == _shipped(2021).loc[got.index, "consommation"]).all() and len(got) == 96


@pytest.mark.parametrize("wrap", ["gzip", "zip"])
def test_a_compressed_export_reads_like_the_plain_one(tmp_path: Path, wrap: str) -> None:
    raw = ODRE_EXPORT.read_bytes()
    path = tmp_path / f"export.{wrap}"
    if wrap == "gzip":
        path.write_bytes(gzip.compress(raw))
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("eco2mix-national-tr.csv", raw)
        path.write_bytes(buf.getvalue())
    pd.testing.assert_frame_equal(read_history_file(path), read_history_file(ODRE_EXPORT))


def test_an_api_response_reads_to_its_records_values() -> None:
    doc = json.loads(SAMPLE_RESPONSE.read_text(encoding="utf-8"))
    df = read_history_file(SAMPLE_RESPONSE).set_index("ts")
    assert len(df) == len(doc["results"])
    for rec in doc["results"]:
        row = df.loc[pd.Timestamp(rec["date_heure"])]
        assert row["consommation"] == rec["consommation"] and row["nature"] == rec["nature"]
        assert row["stockage_batterie"] == float(rec["stockage_batterie"])  # the API's numeric strings


def test_a_json_export_list_reads_like_the_api_response(tmp_path: Path) -> None:
    doc = json.loads(SAMPLE_RESPONSE.read_text(encoding="utf-8"))
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc["results"]), encoding="utf-8")
    pd.testing.assert_frame_equal(read_history_file(path), read_history_file(SAMPLE_RESPONSE))


def test_a_regional_record_in_an_export_is_refused_and_counted(tmp_path: Path) -> None:
    lines = _export_text().split("\n")
    lines[5] = lines[5].replace("France;", "Bretagne;", 1)  # one real row relabelled as a region
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    df = read_history_file(path)
    assert len(df) == 95
    assert df.attrs["rejections"] == {"perimetre 'Bretagne' is not the configured perimeter 'France'": 1}


def test_a_file_of_foreign_records_only_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "regional.csv"
    path.write_text(_export_text().replace("\nFrance;", "\nBretagne;"), encoding="utf-8")
    with pytest.raises(BadRequestError, match=r"none of its 96 records is usable \(96 × perimetre 'Bretagne'"):
        read_history_file(path)


def test_an_rte_download_reads_to_the_shipped_values_on_both_dst_days() -> None:
    df = read_history_file(RTE_DOWNLOAD)
    assert df.attrs["format"] == "rte"
    # 2018-03-25 has 92 real quarter-hours and 2018-10-28 has 100, of which the file lists 96 (the repeated
    # hour once: its second occurrence, UTC+1)
    assert len(df) == 92 + 96
    assert df["nature"].unique().tolist() == ["Données définitives"]
    _same_load_values(df, _shipped(2018))


def test_the_spring_forward_padding_and_the_disclaimer_are_refused_and_counted() -> None:
    df = read_history_file(RTE_DOWNLOAD)
    assert df.attrs["rejections"] == {"row without a date or time": 1,
                                      "local date/heure does not exist in Europe/Paris or cannot be read": 4}
    local = df["ts"].dt.tz_convert("Europe/Paris")
    assert not ((local.dt.date == pd.Timestamp("2018-03-25").date()) & (local.dt.hour == 2)).any()


def test_the_fall_back_hour_listed_once_is_its_second_occurrence() -> None:
    df = read_history_file(RTE_DOWNLOAD).set_index("ts")
    assert pd.Timestamp("2018-10-28T00:00Z") not in df.index  # the first 02:00 (UTC+2)
    assert df.loc[pd.Timestamp("2018-10-28T01:00Z"), "prevision_j1"] == 47200  # 02:00 UTC+1, as RTE's API has it


def test_a_binary_excel_workbook_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "book.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    with pytest.raises(BadRequestError, match="binary Excel workbook; save it as CSV"):
        read_history_file(path)


def test_an_xlsx_workbook_is_one_clear_error(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "load.xlsx"
    with zipfile.ZipFile(path, "w") as zf:  # the parts every .xlsx holds
        for part in ("[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/worksheets/sheet1.xml"):
            zf.writestr(part, "<x/>")
    with pytest.raises(BadRequestError, match=r"load\.xlsx: an Excel workbook \(\.xlsx\); save its sheet as CSV"):
        read_history_file(path)


def test_a_parquet_series_reads_like_its_csv(tmp_path: Path) -> None:
    load = _real_load("2018-03-01T00:00Z", "2018-03-08T00:00Z")
    csv_file = _write_generic(tmp_path / "load.csv", load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                              load["consommation"])
    parquet = tmp_path / "load.parquet"
    load.rename(columns={"ts": "timestamp", "consommation": "value"}).to_parquet(parquet)  # a zoned timestamp column
    df = read_history_file(parquet)
    assert df.attrs["format"] == "generic" and df.attrs["naive_timestamps"] is False
    pd.testing.assert_frame_equal(df, read_history_file(csv_file))


def test_a_parquet_series_of_wall_clock_times_reads_to_its_instants(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    # naive local times (a data team's frame written as it is): the fall-back hour twice, summer time first
    path = tmp_path / "local.parquet"
    pd.DataFrame({"datetime": load["ts"].dt.tz_convert("Europe/Paris").dt.tz_localize(None),
                  "load_mw": load["consommation"]}).to_parquet(path)
    df = read_history_file(path, naive_tz="Europe/Paris", columns=("datetime", "load_mw"))
    assert df.attrs["naive_timestamps"] is True and not df.attrs.get("rejections")
    pd.testing.assert_series_equal(df["ts"], load["ts"], check_names=False)
    assert (df["consommation"].to_numpy() == load["consommation"].to_numpy()).all()


def _odre_parquet(path: Path, naive_tz: str | None = None) -> Path:
    """The sample API response's records typed as a Parquet export types them (a real ODRÉ Parquet export,
    ``temperature-quotidienne-regionale``: dates as ``date32``, numbers as ``int64``/``double``, text as
    ``string``): the instant a timestamp (``naive_tz``: without a zone, that zone's clock), the date a date, the
    numbers numbers (nulls kept), the dataset's text fields text."""
    records = pd.DataFrame(json.loads(SAMPLE_RESPONSE.read_text(encoding="utf-8"))["results"])
    records["date_heure"] = pd.to_datetime(records["date_heure"], utc=True)
    if naive_tz:
        records["date_heure"] = records["date_heure"].dt.tz_convert(naive_tz).dt.tz_localize(None)
    records["date"] = pd.to_datetime(records["date"]).dt.date
    records.to_parquet(path)
    return path


def test_an_odre_parquet_export_reads_like_the_api_response(tmp_path: Path) -> None:
    df = read_history_file(_odre_parquet(tmp_path / "eco2mix-national-tr.parquet"))
    assert df.attrs["format"] == "odre"
    pd.testing.assert_frame_equal(df, read_history_file(SAMPLE_RESPONSE))


def test_an_odre_parquet_export_with_naive_utc_instants_reads_like_the_api_response(tmp_path: Path) -> None:
    path = _odre_parquet(tmp_path / "export.parquet", naive_tz="UTC")
    pd.testing.assert_frame_equal(read_history_file(path), read_history_file(SAMPLE_RESPONSE))


def test_an_odre_parquet_export_in_local_time_is_refused_record_by_record(tmp_path: Path) -> None:
    # exported with timezone=Europe/Paris: naive instants two hours off UTC disagree with each record's date/heure
    path = _odre_parquet(tmp_path / "export.parquet", naive_tz="Europe/Paris")
    with pytest.raises(BadRequestError, match=r"none of its (\d+) records is usable \(\1 × local date/heure … does "
                                              r"not match date_heure … \(… local\)\)"):
        read_history_file(path)


def test_an_odre_jsonl_export_reads_like_the_api_response(tmp_path: Path) -> None:
    doc = json.loads(SAMPLE_RESPONSE.read_text(encoding="utf-8"))
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in doc["results"]), encoding="utf-8")
    pd.testing.assert_frame_equal(read_history_file(path), read_history_file(SAMPLE_RESPONSE))


def test_a_damaged_parquet_file_is_one_clear_error(tmp_path: Path) -> None:
    whole = tmp_path / "whole.parquet"
    _real_load("2018-03-01T00:00Z", "2018-03-02T00:00Z").to_parquet(whole)
    path = tmp_path / "load.parquet"
    path.write_bytes(whole.read_bytes()[:200])  # an interrupted download
    with pytest.raises(BadRequestError, match=r"load\.parquet: a Parquet file that cannot be read"):
        read_history_file(path)


def test_another_binary_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "load.bin"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(BadRequestError, match=r"load\.bin: not a text file"):
        read_history_file(path)


def test_an_image_is_refused_as_binary_where_the_format_is_detected(tmp_path: Path) -> None:
    # a PNG's first line ("\\x89PNG\\r\\n") holds no NUL: format detection, which reads that line only, took the
    # image for a CSV with one column 'png' ("not a history file … (columns ['png']…)")
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "report.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))
    with pytest.raises(BadRequestError, match=r"report\.png: not a text file"):
        history_format(path)


def test_a_utf16_export_reads_as_its_utf8_twin(tmp_path: Path) -> None:
    load = _real_load("2018-03-01T00:00Z", "2018-03-02T00:00Z")
    utf8 = _write_generic(tmp_path / "utf8.csv", load["ts"].dt.strftime("%Y-%m-%dT%H:%MZ"), load["consommation"])
    utf16 = tmp_path / "utf16.csv"
    utf16.write_text(utf8.read_text(encoding="utf-8"), encoding="utf-16")  # Excel's "Unicode text": a BOM first
    pd.testing.assert_frame_equal(read_history_file(utf16), read_history_file(utf8))


def test_an_unknown_table_names_the_formats_it_expects(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("when,load\n2023-01-01T00:00Z,1\n", encoding="utf-8")
    with pytest.raises(BadRequestError, match="expected the shipped eco2mix CSV"):
        read_history_file(path)


@pytest.mark.parametrize(("path", "fmt"), [
    (ECO2MIX / "eco2mix_national_2023.csv.gz", "eco2mix"), (ODRE_EXPORT, "odre"), (SAMPLE_RESPONSE, "odre"),
    (RTE_DOWNLOAD, "rte")])
def test_the_format_is_told_from_the_header(path: Path, fmt: str) -> None:
    assert history_format(path) == fmt


def test_the_format_of_a_parquet_file_is_told_from_its_table(tmp_path: Path) -> None:
    assert history_format(_odre_parquet(tmp_path / "export.parquet")) == "odre"


def test_evaluate_reads_an_rte_download_as_france_and_reports_what_it_refused() -> None:
    from shared.forecasting.evaluate import load_data

    grid, rte = load_data([RTE_DOWNLOAD], 30)
    assert grid.attrs["generic"] is False  # France's plausibility bounds and calendar, not a generic series
    assert grid.attrs["source_rejections"]["row without a date or time"] == 1
    assert rte is not None and rte["value"].notna().sum() > 0


def test_the_bootstrap_loads_downloaded_files_into_the_store(store: Store, settings: Settings) -> None:
    from shared.ingest.bootstrap import bootstrap

    files = [RTE_DOWNLOAD, ODRE_EXPORT]
    result = bootstrap(store, settings.model_copy(update={"poll_bootstrap": True, "history_files": files}),
                       progress=False)
    history = read_history(files)
    assert result["status"] == "done"
    assert result["rows_out"] == int(history[list(LOAD_COLUMNS)].notna().sum().sum()) > 0
    stored = store.scalar("select sum(value) from {db:Identifier}.measurements where metric = 'consommation'")
    assert stored == pytest.approx(history["consommation"].sum())


@pytest.mark.parametrize("other", ["neso_demanddata_2021_fall-back.csv", "entsoe_total-load_CH_2022-06-15.csv"])
def test_the_bootstrap_refuses_another_operators_file_before_writing(store: Store, settings: Settings,
                                                                      other: str) -> None:
    from shared.ingest.bootstrap import bootstrap

    # France's file first: the refusal must come before it is loaded, not after
    files = [RTE_DOWNLOAD, DATA / other]
    with pytest.raises(ConfigurationError, match=rf"{other} is a \w+ file, not France's national load"):
        bootstrap(store, settings.model_copy(update={"poll_bootstrap": True, "history_files": files}),
                  progress=False)
    assert store.scalar("select count() from {db:Identifier}.measurements") == 0


def test_the_bootstrap_names_a_history_file_that_does_not_exist(store: Store, settings: Settings,
                                                                tmp_path: Path) -> None:
    from shared.ingest.bootstrap import bootstrap

    missing = tmp_path / "eco2mix_national_2031.csv.gz"
    with pytest.raises(ConfigurationError, match=r"POWERSENSE_HISTORY_FILES: .*eco2mix_national_2031\.csv\.gz does "
                                                 r"not exist"):
        bootstrap(store, settings.model_copy(update={"poll_bootstrap": True, "history_files": [missing]}),
                  progress=False)


def _real_load(start: str, end: str) -> pd.DataFrame:
    h = read_history([ECO2MIX / "eco2mix_national_2018.csv.gz"], start, end)
    return h.loc[h["consommation"].notna(), ["ts", "consommation"]].reset_index(drop=True)


def _write_generic(path: Path, stamps: pd.Series, values: pd.Series) -> Path:
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("start", "end"), [("2018-03-24T23:00Z", "2018-03-26T00:00Z"),
                                            ("2018-10-27T22:00Z", "2018-10-29T00:00Z")])
def test_wall_clock_timestamps_of_the_given_zone_read_to_their_instants(tmp_path: Path, start: str, end: str) -> None:
    load = _real_load(start, end)
    # a user's export in local time without offsets: the fall-back hour appears twice, summer time first
    wall = load["ts"].dt.tz_convert("Europe/Paris").dt.strftime("%Y-%m-%d %H:%M").copy()
    path = _write_generic(tmp_path / "local.csv", wall, load["consommation"])
    df = read_history_file(path, naive_tz="Europe/Paris")
    assert df.attrs["naive_timestamps"] is True and not df.attrs.get("rejections")
    pd.testing.assert_series_equal(df["ts"], load["ts"], check_names=False)
    assert (df["consommation"].to_numpy() == load["consommation"].to_numpy()).all()


def test_timestamps_without_an_offset_are_utc_by_default(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    path = _write_generic(tmp_path / "utc.csv", load["ts"].dt.strftime("%Y-%m-%d %H:%M"), load["consommation"])
    df = read_history_file(path)
    assert df.attrs["naive_timestamps"] is True
    pd.testing.assert_series_equal(df["ts"], load["ts"], check_names=False)


def test_a_wall_clock_time_that_does_not_exist_is_dropped_and_counted(tmp_path: Path) -> None:
    load = _real_load("2018-03-24T23:00Z", "2018-03-26T00:00Z")
    wall = load["ts"].dt.tz_convert("Europe/Paris").dt.strftime("%Y-%m-%d %H:%M").copy()
    wall.iloc[5] = "2018-03-25 02:30"  # the spring-forward hour
    df = read_history_file(_write_generic(tmp_path / "gap.csv", wall, load["consommation"]), naive_tz="Europe/Paris")
    assert len(df) == len(load) - 1
    assert df.attrs["rejections"] == {"local time does not exist in Europe/Paris": 1}


@pytest.mark.parametrize("layout", ["%d/%m/%Y %H:%M", "%d-%m-%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M:%S %p"])
def test_day_first_and_month_first_timestamps_read_to_the_same_instants(tmp_path: Path, layout: str) -> None:
    # the fall-back weekend of 2018 (days 27 and 28 settle which field is the day), as a spreadsheet writes it
    load = _real_load("2018-10-26T22:00Z", "2018-10-29T00:00Z")
    wall = load["ts"].dt.tz_convert("Europe/Paris").dt.strftime(layout)
    df = read_history_file(_write_generic(tmp_path / "local.csv", wall, load["consommation"]), naive_tz="Europe/Paris")
    pd.testing.assert_series_equal(df["ts"], load["ts"], check_names=False)


@pytest.mark.parametrize("date", ["%Y-%m-%d", "%m/%d/%Y"])
def test_24_00_on_an_hour_ending_clock_is_the_next_days_midnight(tmp_path: Path, date: str) -> None:
    load = _real_load("2018-10-14T22:00Z", "2018-10-17T22:00Z")
    load = load[load["ts"].dt.minute == 0].reset_index(drop=True)
    wall = load["ts"].dt.tz_convert("Europe/Paris").dt.tz_localize(None)
    at_midnight = wall.dt.hour == 0
    stamps = wall.dt.strftime(f"{date} %H:%M").where(
        ~at_midnight, (wall - pd.Timedelta(days=1)).dt.strftime(f"{date} 24:00"))
    assert stamps.str.endswith("24:00").sum() == 3
    df = read_history_file(_write_generic(tmp_path / "he.csv", stamps, load["consommation"]), naive_tz="Europe/Paris")
    pd.testing.assert_series_equal(df["ts"], load["ts"], check_names=False)


def test_timestamps_whose_day_and_month_cannot_be_told_apart_are_one_clear_error(tmp_path: Path) -> None:
    load = _real_load("2018-03-01T00:00Z", "2018-03-03T00:00Z")  # no day above 12
    path = _write_generic(tmp_path / "ambiguous.csv", load["ts"].dt.strftime("%d/%m/%Y %H:%M"), load["consommation"])
    with pytest.raises(BadRequestError, match=r"read both day first and month first .*'01/03/2018 00:00'.*ISO 8601"):
        read_history_file(path)


def test_timestamps_in_no_known_layout_are_one_clear_error(tmp_path: Path) -> None:
    load = _real_load("2018-03-01T00:00Z", "2018-03-01T02:00Z")
    path = _write_generic(tmp_path / "odd.csv", load["ts"].dt.strftime("%d %b %Y %Hh%M"), load["consommation"])
    with pytest.raises(BadRequestError, match=r"neither ISO 8601 .* \(e\.g\. '01 Mar 2018 00h00'\)"):
        read_history_file(path)


def test_an_instant_listed_twice_in_one_file_keeps_the_later_row_and_is_counted(tmp_path: Path) -> None:
    load = _real_load("2018-03-01T00:00Z", "2018-03-01T06:00Z")
    stamps = load["ts"].dt.strftime("%Y-%m-%d %H:%M")
    doubled = pd.concat([stamps.iloc[:4], stamps.iloc[3:]], ignore_index=True)  # an hour-ending clock's repeat
    v = load["consommation"]
    values = pd.concat([v.iloc[:3], v.iloc[3:4] - 1000, v.iloc[3:]], ignore_index=True)  # the earlier row differs
    df = read_history_file(_write_generic(tmp_path / "twice.csv", doubled, values))
    pd.testing.assert_series_equal(df["ts"], load["ts"], check_names=False)
    assert (df["consommation"].to_numpy() == load["consommation"].to_numpy()).all()
    assert df.attrs["rejections"] == {"instant listed twice in the file (the later row kept)": 1}


def test_a_file_of_several_series_is_one_clear_error(tmp_path: Path) -> None:
    # a long table of two real series at the same instants (the load and RTE's day-ahead forecast of it): keeping
    # one row per instant would mix them
    h = read_history([ECO2MIX / "eco2mix_national_2018.csv.gz"], "2018-03-01T00:00Z", "2018-03-03T00:00Z")
    h = h.dropna(subset=["consommation", "prevision_j1"])
    stamps = h["ts"].dt.strftime("%Y-%m-%dT%H:%MZ")
    path = _write_generic(tmp_path / "long.csv", pd.concat([stamps, stamps], ignore_index=True),
                          pd.concat([h["consommation"], h["prevision_j1"]], ignore_index=True))
    with pytest.raises(BadRequestError, match=r"instants are listed more than once with different values: the file "
                                              r"holds several series"):
        read_history_file(path)


def test_overlapping_exports_of_one_series_read_as_one(tmp_path: Path) -> None:
    load = _real_load("2018-03-01T00:00Z", "2018-03-03T00:00Z")
    stamps = load["ts"].dt.strftime("%Y-%m-%dT%H:%MZ")
    path = _write_generic(tmp_path / "twice.csv", pd.concat([stamps, stamps.iloc[:40]], ignore_index=True),
                          pd.concat([load["consommation"], load["consommation"].iloc[:40]], ignore_index=True))
    df = read_history_file(path).sort_values("ts", ignore_index=True)
    pd.testing.assert_series_equal(df["ts"], load["ts"], check_names=False)
    assert (df["consommation"].to_numpy() == load["consommation"].to_numpy()).all()
    assert read_history_file(path).attrs["rejections"] == {"instant listed twice in the file (the later row kept)": 40}


def test_timestamps_with_and_without_offsets_in_one_file_are_one_clear_error(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-28T00:00Z")
    stamps = load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").copy()
    stamps.iloc[3] = "2018-10-27 23:30"
    with pytest.raises(BadRequestError, match=r"timestamps carry a UTC offset and 1 do not"):
        read_history_file(_write_generic(tmp_path / "mixed.csv", stamps, load["consommation"]))


def test_evaluate_says_when_offsetless_timestamps_were_read_as_utc(tmp_path: Path) -> None:
    from shared.forecasting.evaluate import load_data

    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    path = _write_generic(tmp_path / "utc.csv", load["ts"].dt.strftime("%Y-%m-%d %H:%M"), load["consommation"])
    grid, _ = load_data([path], 30)
    assert grid.attrs["naive_timestamps"] is True and grid.attrs["generic"] is True


def test_the_evaluate_command_reports_refused_records_once_as_a_note(tmp_path: Path) -> None:
    import subprocess
    import sys

    # too short to train on (the error ends the run), long enough to read: in a fresh process, where logging is
    # not configured and its last resort would print the bare warning event
    run = subprocess.run([sys.executable, "-m", "shared", "evaluate", "--data", str(RTE_DOWNLOAD), "--test-start",
                          "2018-10-28", "--test-end", "2018-10-29", "--out", str(tmp_path), "--no-progress"],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "evaluate: error: only 1.0 days of valid history before 2018-10-27 12:00; at least 14 needed "
        "(POWERSENSE_FORECAST_MIN_HISTORY_DAYS)"]
    assert ('note: source records rejected while reading (not used): {"row without a date or time": 1, '
            '"local date/heure does not exist in Europe/Paris or cannot be read": 4}') in run.stdout.splitlines()


def test_evaluate_reads_its_data_files_once_for_several_test_years(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from shared.forecasting import evaluate

    reads: list[list[Path]] = []
    real_load = evaluate.load_data

    def counting_load(files: list[Path], *args: object, **kwargs: object) -> object:
        reads.append(list(files))
        return real_load(files, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluate, "load_data", counting_load)
    # the per-year step after reading: the stage's resource check, replaced by a record of the grid it got
    grids: list[pd.DataFrame] = []
    monkeypatch.setattr(evaluate, "weather_resources", lambda grid, *_a, **_k: grids.append(grid) or {"ok": True})
    assert evaluate.main(["--data", str(RTE_DOWNLOAD), "--years", "2018", "2019", "--weather", "--weather-resources",
                          "--out", str(tmp_path), "--no-progress"]) == 0
    assert reads == [[RTE_DOWNLOAD]] and len(grids) == 2 and grids[0] is grids[1]
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: source records")]
    assert len(notes) == 1


def test_named_columns_read_a_series_whose_header_is_not_timestamp_value(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    path = tmp_path / "other-names.csv"
    pd.DataFrame({"Region": "FR", "DateTime (UTC)": load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "Load [MW]": load["consommation"]}).to_csv(path, index=False)
    df = read_history_file(path, columns=("DateTime (UTC)", "Load [MW]"))
    assert df.attrs["format"] == "generic"
    pd.testing.assert_series_equal(df["ts"], load["ts"], check_names=False)
    assert (df["consommation"].to_numpy() == load["consommation"].to_numpy()).all()


def test_a_table_of_unknown_columns_is_told_how_to_name_them(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-28T00:00Z")
    path = tmp_path / "gw.csv"
    pd.DataFrame({"Date (UTC)": load["ts"].dt.strftime("%Y-%m-%d %H:%M"), "Load (GW)": load["consommation"] / 1000}
                 ).to_csv(path, sep=";", index=False)
    with pytest.raises(BadRequestError, match=r"not a history file this product reads .* \(evaluate --data reads "
                                              r"another table's time and value columns with --columns TIME,VALUE, "
                                              r"e\.g\. --columns \"Date \(UTC\),Load \(GW\)\"\)$"):
        read_history_file(path)


def test_a_named_column_the_file_lacks_is_one_clear_error(tmp_path: Path) -> None:
    path = _write_generic(tmp_path / "series.csv", pd.Series(["2018-10-27T22:00Z"]), pd.Series([1.0]))
    with pytest.raises(BadRequestError, match=r"no column 'load_mw' \(its columns: timestamp, value\)"):
        read_history_file(path, columns=("timestamp", "load_mw"))


def test_a_decimal_comma_is_read_in_a_semicolon_separated_series(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    gw = (load["consommation"] / 1000).map(lambda v: f"{v:.3f}".replace(".", ","))  # "51,234": a European sheet
    path = tmp_path / "gw.csv"
    pd.DataFrame({"timestamp": load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": gw}).to_csv(
        path, sep=";", index=False)
    df = read_history_file(path)
    assert df["consommation"].to_numpy() == pytest.approx(load["consommation"].to_numpy() / 1000)


def _write_semicolons(path: Path, load: pd.DataFrame, values: pd.Series) -> Path:
    pd.DataFrame({"timestamp": load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": values}).to_csv(
        path, sep=";", index=False)
    return path


def _european(v: float, decimals: int) -> str:
    """``v`` as a European spreadsheet writes it: thousands dots, a decimal comma ("51.234,5")."""
    return f"{v:,.{decimals}f}".replace(",", " ").replace(".", ",").replace(" ", ".")


def test_thousands_dots_and_a_decimal_comma_are_read_in_a_semicolon_separated_series(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    path = _write_semicolons(tmp_path / "mw.csv", load, load["consommation"].map(lambda v: _european(v, 1)))
    assert re.search(r";\d\d\.\d{3},0\n", path.read_text())  # "51.234,0"
    assert (read_history_file(path)["consommation"].to_numpy() == load["consommation"].to_numpy()).all()


def test_thousands_dots_alone_in_a_semicolon_separated_series_are_one_clear_error(tmp_path: Path) -> None:
    # "37.888" is 37 888 MW with a thousands dot or 37.888 with three decimals: until 2026-12-07 it was read as
    # 37.888, silently 1000 times too small
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    path = _write_semicolons(tmp_path / "mw.csv", load, load["consommation"].map(lambda v: _european(v, 0)))
    with pytest.raises(BadRequestError, match=r"values such as '\d\d\.\d{3}' in a ';'-separated file: a dot between "
                                              r"groups of three digits may be a thousands separator"):
        read_history_file(path)


def test_two_thousands_dots_in_a_semicolon_separated_series_are_read_as_thousands(tmp_path: Path) -> None:
    # "1.234.567" can only be thousands: the file is read, not refused as ambiguous
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    watts = load["consommation"] * 1000  # in kW: 51 234 000 → "51.234.000"
    path = _write_semicolons(tmp_path / "kw.csv", load, watts.map(lambda v: _european(v, 0)))
    assert (read_history_file(path)["consommation"].to_numpy() == watts.to_numpy()).all()


def test_three_decimals_below_one_are_read_in_a_semicolon_separated_series(tmp_path: Path) -> None:
    # "0.512" is no thousands figure (GW of a small system): decimals, not refused
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    small = (load["consommation"] / 100_000).map(lambda v: f"{v:.3f}")
    path = _write_semicolons(tmp_path / "small.csv", load, small)
    assert (read_history_file(path)["consommation"].to_numpy() == small.astype(float).to_numpy()).all()


def test_decimal_points_are_read_in_a_semicolon_separated_series(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    gw = (load["consommation"] / 1000).map(lambda v: f"{v:.2f}")  # "51.23": decimals, not thousands
    path = _write_semicolons(tmp_path / "gw.csv", load, gw)
    assert (read_history_file(path)["consommation"].to_numpy() == gw.astype(float).to_numpy()).all()


def test_thousands_separators_are_read_in_a_comma_separated_series(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    mw = load["consommation"].map(lambda v: f"{v:,.1f}")  # "51,234.0": a US sheet, quoted by the CSV writer
    path = _write_generic(tmp_path / "mw.csv", load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), mw)
    assert '"' in path.read_text()
    assert (read_history_file(path)["consommation"].to_numpy() == load["consommation"].to_numpy()).all()


def test_a_quoted_decimal_comma_in_a_comma_separated_series_stays_an_error(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-28T00:00Z")
    gw = (load["consommation"] / 1000).map(lambda v: f"{v:.3f}".replace(".", ",")).copy()
    # "51,234" (GW, three decimals) could be 51 234 with a thousands separator: neither guess is made
    path = _write_generic(tmp_path / "gw.csv", load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), gw)
    with pytest.raises(BadRequestError, match=r"values are not numbers \(e\.g\. '\d\d,\d{3}'\)"):
        read_history_file(path)


def test_a_value_that_is_not_a_number_is_one_clear_error(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-28T00:00Z")
    values = load["consommation"].astype(object).copy()
    values.iloc[2] = "n/e"  # ENTSO-E's "not expected", not one of the source's placeholders
    path = _write_generic(tmp_path / "series.csv", load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), values)
    with pytest.raises(BadRequestError, match=r"1 values are not numbers \(e\.g\. 'n/e'\)"):
        read_history_file(path)


def test_the_bootstrap_logs_the_records_it_refused(store: Store, settings: Settings,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from shared.ingest.bootstrap import bootstrap

    bootstrap(store, settings.model_copy(update={"poll_bootstrap": True, "history_files": [RTE_DOWNLOAD]}),
              progress=False)
    events = [r for r in caplog.records if getattr(r, "event", None) == "history_records_rejected"]
    assert len(events) == 1 and events[0].levelname == "WARNING"
    assert events[0].rejected == {"row without a date or time": 1,  # type: ignore[attr-defined]
                                  "local date/heure does not exist in Europe/Paris or cannot be read": 4}


def _generic_bytes(start: str, end: str) -> bytes:
    load = _real_load(start, end)
    return pd.DataFrame({"timestamp": load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "value": load["consommation"]}).to_csv(index=False).encode()


def _zipped(raw: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("load.csv", raw)
    return buf.getvalue()


@pytest.mark.parametrize(("kind", "compress"), [
    ("gzip", gzip.compress), ("xz", lzma.compress), ("bzip2", bz2.compress), ("zip", _zipped)])
def test_a_truncated_compressed_download_is_one_error_naming_the_file(tmp_path: Path, kind: str,
                                                                      compress: Callable[[bytes], bytes]) -> None:
    whole = compress(_generic_bytes("2018-03-01T00:00Z", "2018-03-08T00:00Z"))
    path = tmp_path / f"load.{kind}"
    path.write_bytes(whole[: len(whole) // 2])  # an interrupted download
    with pytest.raises(BadRequestError, match=rf"load\.{kind}: a damaged or truncated {kind} file .*download it again"):
        read_history_file(path)


def test_a_gzip_file_failing_its_checksum_is_one_error_naming_the_file(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(_generic_bytes("2018-03-01T00:00Z", "2018-03-02T00:00Z")))
    data[-8] ^= 0xFF  # the trailer's CRC-32 of the uncompressed bytes
    path = tmp_path / "load.csv.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(BadRequestError, match=r"load\.csv\.gz: a damaged or truncated gzip file \(CRC check failed"):
        read_history_file(path)


def test_a_zip_holding_no_file_is_said_to_be_one(tmp_path: Path) -> None:
    path = tmp_path / "load.zip"
    with zipfile.ZipFile(path, "w"):
        pass
    with pytest.raises(BadRequestError, match=r"load\.zip: a zip archive must hold exactly one file, not 0"):
        read_history_file(path)


def test_the_format_of_a_little_endian_utf16_export_is_told_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "load.txt"  # Excel's "Unicode text": UTF-16-LE with its BOM, tabs, CRLF
    text = _generic_bytes("2018-03-01T00:00Z", "2018-03-02T00:00Z").decode().replace(",", "\t")
    path.write_bytes(b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le"))
    assert history_format(path) == "generic"


@pytest.mark.parametrize("compress", [bytes, gzip.compress])
def test_an_empty_file_is_said_to_be_empty(tmp_path: Path, compress: Callable[[bytes], bytes]) -> None:
    path = tmp_path / "load.csv"
    path.write_bytes(compress(b""))
    with pytest.raises(BadRequestError, match=r"load\.csv: the file is empty"):
        history_format(path)


def test_a_header_without_rows_is_said_to_have_no_data(tmp_path: Path) -> None:
    path = tmp_path / "load.csv"
    path.write_text("timestamp,value\n", encoding="utf-8")
    with pytest.raises(BadRequestError, match=r"load\.csv: no data rows, only a header"):
        read_history_file(path)


@pytest.mark.parametrize(("token", "shown"), [("inf", "inf"), ("-inf", "-inf"), ("Infinity", "Infinity")])
def test_an_infinite_value_is_one_clear_error(tmp_path: Path, token: str, shown: str) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-28T00:00Z")
    values = load["consommation"].astype(object).copy()
    values.iloc[2] = token  # a float to Python and pandas, no measurement all the same: quoted as written
    path = _write_generic(tmp_path / "series.csv", load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), values)
    with pytest.raises(BadRequestError, match=rf"1 values are not numbers \(e\.g\. '{shown}'\)"):
        read_history_file(path)


def test_named_columns_read_another_column_of_a_file_that_has_one_named_consommation(tmp_path: Path) -> None:
    load = _real_load("2018-10-27T22:00Z", "2018-10-29T00:00Z")
    path = tmp_path / "load.csv"
    pd.DataFrame({"date": load["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "consommation": load["consommation"],
                  "prevision": load["consommation"] + 500}).to_csv(path, index=False)
    df = read_history_file(path, columns=("date", "prevision"))
    assert (df["consommation"].to_numpy() == load["consommation"].to_numpy() + 500).all()


def test_named_columns_naming_one_column_twice_is_one_clear_error() -> None:
    with pytest.raises(BadRequestError, match=r"--columns names the same column twice \('datetime,DateTime'\)"):
        parse_columns("datetime,DateTime")


def test_wall_clock_timestamps_without_a_zone_are_one_clear_error() -> None:
    args = argparse.Namespace(naive_timestamps="local", timezone=None)
    with pytest.raises(BadRequestError, match=r"--naive-timestamps local .* give --timezone"):
        naive_tz_option(args, "UTC")


def test_overlapping_files_that_disagree_keep_the_later_file_and_count_the_instants(tmp_path: Path) -> None:
    load = _real_load("2018-03-01T00:00Z", "2018-03-03T00:00Z")
    stamps = load["ts"].dt.strftime("%Y-%m-%dT%H:%MZ")
    first = _write_generic(tmp_path / "first.csv", stamps.iloc[:60], load["consommation"].iloc[:60])
    # the second download overlaps the first by 20 instants, 12 of them revised
    revised = load["consommation"].iloc[40:].copy()
    revised.iloc[:12] += 300
    second = _write_generic(tmp_path / "second.csv", stamps.iloc[40:], revised)
    df = read_history([first, second])
    assert df.attrs["rejections"] == {"instant in several files with different values (the later file's kept)": 12}
    assert (df["consommation"].iloc[40:52].to_numpy() == revised.iloc[:12].to_numpy()).all()

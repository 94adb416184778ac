"""Read history files into one UTC-indexed frame: the product's own eco2mix CSV, the files a user downloads
from ODRÉ or RTE, or a generic ``timestamp,value`` CSV.

Formats, recognised from the content (plain, gzip, xz, bzip2 or a one-file zip; each table format as CSV, or as a
Parquet file, read as the CSV it would be exported as):

* **the shipped history** (``data/eco2mix``): ``date_heure`` (UTC, ISO-8601) + ``nature`` + numeric columns named
  as in the Explore API. It was validated when it was assembled (data/eco2mix/README.upstream.md) and is read
  as it is.
* **ODRÉ exports** of ``eco2mix-national-tr`` / ``eco2mix-national-cons-def``: CSV with ``;`` (the portal's
  separator) or ``,``, headed either by the API's field names (``date_heure``, ``consommation``, …) or by the
  portal's French labels (``Date - Heure``, ``Consommation (MW)``, ``Prévision J-1 (MW)``, …), rows in any order;
  JSON: the records endpoint's response (``{"results": […]}``), an ``exports/json`` list of records, an
  ``exports/jsonl`` file (one record a line), or API v1's ``{"records": [{"fields": …}]}``; and ``exports/parquet``.
* **RTE's eCO2mix downloads** (``eCO2mix_RTE_Annuel-Definitif_YYYY.xls`` and the like: tab-separated ISO-8859-1
  text, Paris wall-clock ``Date`` + ``Heures``, RTE's disclaimer as the last line).
* **NESO's demand data** (Great Britain, ``demanddata_YYYY.csv`` of the NESO data portal's *Historic Demand Data*
  and the like): ``SETTLEMENT_DATE`` + ``SETTLEMENT_PERIOD`` (half-hours of the local day: 46 / 48 / 50 with the
  clock changes) and ``ND``, National Demand (``columns=("SETTLEMENT_DATE", "TSD")`` reads another column). Not
  France's series: read like a generic one, whose calendar is Great Britain's.
* **ENTSO-E Transparency Platform exports** of *Total Load - Day Ahead / Actual* (``Total Load - Day Ahead _
  Actual_YYYY….csv``): ``Time (CET/CEST)`` or ``Time (UTC)`` holding intervals (``01.01.2018 00:00 - 01.01.2018
  01:00``, hourly or quarter-hourly) and ``Actual Total Load [MW] - <area>`` (``columns`` names another, e.g. the
  day-ahead forecast; by default that forecast is read too, as the backtest's benchmark, unless it merely repeats
  the actual load). In CET/CEST the wall clock's rules apply (:func:`shared.timeutil.from_wall_clock`: the
  fall-back hour is listed twice, summer time first; the spring-forward hour is a padding row without values,
  refused). ``N/A``, ``-`` and empty cells are missing. Not France's series.
* **a generic** ``timestamp,value`` CSV (any of these separators).

Every record of an ODRÉ or RTE file goes through the poller's own validation
(:func:`shared.ingest.parse.parse_records`): the configured perimeter and natures (a regional export must not
become national load), the source's 15-minute grid, the local date and time agreeing with the instant (the
spring-forward padding rows are copies of other instants) and the numbers. Rejected records are counted by
reason in ``attrs["rejections"]`` for the caller to report (the bootstrap logs them, ``evaluate`` prints them); a
file none of whose records is accepted is an error. NESO and ENTSO-E rows get their own checks (a settlement
period inside its day, an interval that exists on the wall clock, an operator forecast that is not a copy of the
actuals), counted the same way. Reading has no side effect.
"""

from __future__ import annotations

import argparse
import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
import re
import sys
import unicodedata
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from shared.calendar import COUNTRY, TZ, Calendar, check_calendar
from shared.errors import BadRequestError
from shared.ingest.parse import NULL_TOKENS, NUMERIC_FIELDS, parse_records
from shared.timeutil import from_wall_clock, to_utc

LOAD_COLUMNS = ("consommation", "prevision_j1", "prevision_j")
FRANCE_FORMATS = frozenset(("eco2mix", "odre", "rte"))  # France's national series; the others are "any series"

# NESO's settlement calendar: "Settlement period 1 runs from 00:00-00:30" and the settlement date "follows clock
# change" (NESO data portal, Historic Demand Data 2010 … 2024, table information of SETTLEMENT_DATE and
# SETTLEMENT_PERIOD), i.e. periods count the elapsed half-hours from local midnight in Great Britain: 46 on the
# spring-forward day, 50 on the fall-back day (as the real files have them, tests/data/README.md)
NESO_TZ = "Europe/London"
NESO_HOLIDAYS = "GB-ENG"  # England's bank holidays (with Easter Monday): England and Wales are ~90 % of ND
_NESO_DATE_FORMATS = ("%d-%b-%Y", "%Y-%m-%d", "%d/%m/%Y")  # 01-JAN-2022 (files to 2022), 2023-01-01, 01/01/2010

# ENTSO-E's export clocks (the "Time (…)" column's label) and the zone whose wall clock each is; CET/CEST is the
# platform's default (as in the real exports tests/data/README.md cites), UTC the other choice checked on a file
ENTSOE_CLOCKS = {"CET/CEST": "Europe/Brussels", "UTC": "UTC"}
_ENTSOE_TIME = re.compile(r"^Time \((?P<clock>[^)]+)\)$")
_ENTSOE_INTERVAL = r"^\d{2}\.\d{2}\.\d{4} \d{2}:\d{2} - \d{2}\.\d{2}\.\d{4} \d{2}:\d{2}"
_ENTSOE_AREA_CODE = re.compile(r"\(([A-Z]{2}[A-Z0-9-]*)\)$")  # "Netherlands (NL)" → NL
_ENTSOE_MISSING = frozenset(("-",))  # ENTSO-E's "no value" besides N/A and empty cells (NULL_TOKENS)
# a day-ahead column equal to the actual load at this share of a file's hours is a copy, not a forecast (a real
# forecast hits the hourly MW value exactly now and then: 4 hours of Switzerland's 2018 export, 142 of 2023's;
# its 2022 export: all 8 760)
_ENTSOE_COPY_SHARE = 0.5

# Header keys (see column_key) of the ODRÉ portal's French labels and RTE's download files whose plain
# transliteration is not the API's field name. The rest match: "Consommation (MW)" → consommation,
# "Ech. comm. Allemagne-Belgique (MW)" → ech_comm_allemagne_belgique, "Fioul - Cogén." → fioul_cogen, …
_ALIASES = {
    "heures": "heure",
    "prevision_j_1": "prevision_j1",
    "taux_de_co2": "taux_co2",
    "fioul_cogeneration": "fioul_cogen",
    "gaz_cogeneration": "gaz_cogen",
    "hydraulique_fil_de_l_eau_eclusee": "hydraulique_fil_eau_eclusee",
    "hydraulique_fil_de_leau_eclusee": "hydraulique_fil_eau_eclusee",  # a cp1252 "’" read as ISO-8859-1
}
_ODRE_IDENTITY = ("perimetre", "nature", "date", "heure", "date_heure")
_SHIPPED = frozenset(("date_heure", "nature", *NUMERIC_FIELDS))
_PARSE_CHUNK = 20_000  # records validated per step of the progress bar
# what a damaged or truncated compressed stream raises as it is read: gzip's BadGzipFile (an OSError: a bad CRC,
# bytes after the last member that are not one) and zlib.error, EOFError (the stream ends before its end marker:
# an interrupted download, in all three formats), lzma.LZMAError, bz2's OSError ("Invalid data stream"), and
# zipfile.BadZipFile (no central directory: a zip cut short)
_DAMAGED = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)
_HEADER_BYTES = 1 << 16  # enough for any header line; a one-line JSON document needs only its first character
_PARQUET = b"PAR1"  # a Parquet file's first (and last) four bytes
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16's byte-order marks, little- and big-endian


def column_key(label: str) -> str:
    """The API field name a column header stands for: its unit dropped, accents and punctuation folded
    (``"Prévision J-1 (MW)"`` → ``prevision_j1``); a header with no equivalent keeps its folded form."""
    text = re.sub(r"\s*\([^)]*\)\s*$", "", label.strip().lstrip("\ufeff"))  # the unit: "(MW)", "(g/kWh)"
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    key = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return _ALIASES.get(key, key)


@contextmanager
def _zip_member(path: Path, stream: IO[bytes]) -> Iterator[IO[bytes]]:
    """The one file a zip archive holds, as a stream; a workbook or an archive of several files (or none) is an
    error that says so."""
    with zipfile.ZipFile(stream) as zf:
        members = [n for n in zf.namelist() if not n.endswith("/")]
        if any(n.startswith("xl/") for n in members):  # an .xlsx workbook is a zip of XML parts
            raise BadRequestError(f"{path}: an Excel workbook (.xlsx); save its sheet as CSV")
        if len(members) != 1:
            raise BadRequestError(f"{path}: a zip archive must hold exactly one file, not {len(members)}")
        with zf.open(members[0]) as member:
            yield member


# magic bytes → the format and its decompressing reader (``opener(path, stream)``); a zip starts with a local file
# header, or with the end-of-central-directory record alone when it holds nothing
_MAGIC: tuple[tuple[bytes, str, Callable[[Path, Any], Any]], ...] = (  # each reader is entered into _open's stack
    (b"\x1f\x8b", "gzip", lambda _, f: gzip.GzipFile(fileobj=f)),
    (b"\xfd7zXZ\x00", "xz", lambda _, f: lzma.LZMAFile(f)),  # noqa: SIM115
    (b"BZh", "bzip2", lambda _, f: bz2.BZ2File(f)),  # noqa: SIM115
    (b"PK\x03\x04", "zip", _zip_member),
    (b"PK\x05\x06", "zip", _zip_member))


@contextmanager
def _open(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes as a stream, decompressed (gzip, xz, bzip2 or a one-file zip) as it is read. A damaged or
    truncated compressed file (an interrupted download) is a one-line :class:`BadRequestError` naming the file,
    whether the damage shows when it is opened or as it is read."""
    with ExitStack() as stack:
        stream: IO[bytes] = stack.enter_context(open(path, "rb"))
        head = stream.read(6)
        stream.seek(0)
        found = next(((kind, opener) for magic, kind, opener in _MAGIC if head.startswith(magic)), None)
        try:
            if found:
                stream = stack.enter_context(found[1](path, stream))
            yield stream
        except _DAMAGED as exc:
            if found is None:  # a plain file's I/O error is the system's own message (it names the file)
                raise
            raise BadRequestError(f"{path}: a damaged or truncated {found[0]} file ({exc}); download it "
                                  "again") from None


def _parquet_text(path: Path, data: bytes, header_only: bool = False) -> str:
    """A Parquet file's table as the CSV it would be exported as, so that every format reads through one path:
    instants as ISO 8601 (a zoned column in UTC with its offset, a naive one without: the ``--naive-timestamps``
    rule then applies), dates as ISO dates, nulls as empty cells. ODRÉ's ``exports/parquet`` (a format of the
    Explore API's export endpoint, Opendatasoft ``@opendatasoft/api-client`` ``EXPORT_DATASET_FORMAT``) has the
    API's field names, so it reads as the field-name CSV export does. ``header_only``: the header line alone,
    from the file's schema (format detection converts no rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        if header_only:
            # the columns to_pandas() gives: a stored pandas index becomes the frame's index, not a column
            index = {c for c in (parquet.schema_arrow.pandas_metadata or {}).get("index_columns", [])
                     if isinstance(c, str)}
            return str(pd.DataFrame(columns=[n for n in parquet.schema_arrow.names if n not in index])
                       .to_csv(index=False))
        table = parquet.read().to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise BadRequestError(f"{path}: a Parquet file that cannot be read ({exc})") from None
    for name in table.columns:
        col = table[name]
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            table[name] = col.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        elif pd.api.types.is_datetime64_dtype(col.dtype):
            # an ODRÉ instant without its zone is in the export's time zone, UTC unless the export asked for
            # another (the Explore API's `timezone` parameter); the records' local date and heure are checked
            # against it (parse_records), so an export in another zone is refused record by record, not misread
            offset = "+00:00" if name == "date_heure" else ""
            table[name] = col.dt.strftime("%Y-%m-%dT%H:%M:%S") + offset
    return str(table.to_csv(index=False))


def _decode(path: Path, data: bytes, sample: bytes | None = None) -> str:
    """UTF-8 (with or without a BOM), UTF-16 with a BOM, else ISO-8859-1 (RTE's downloads); a Parquet file as
    the CSV it would be exported as (:func:`_parquet_text`); a binary workbook or any other binary file is
    refused with what it is. ``sample``: the file's first bytes when ``data`` is only its first line (a PNG's,
    ``\\x89PNG\\r\\n``, holds no NUL byte: the image was read as a CSV with one column)."""
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise BadRequestError(f"{path}: a binary Excel workbook; save it as CSV (RTE's .xls downloads are text "
                              "and are read as they are)")
    if data.startswith(_PARQUET):
        return _parquet_text(path, data)
    if data.startswith(_UTF16_BOMS):  # UTF-16 with its BOM: Excel's "Unicode text" export
        return data.decode("utf-16")
    if b"\x00" in (data if sample is None else sample)[:_HEADER_BYTES]:  # no text the product reads has NUL
        raise BadRequestError(f"{path}: not a text file (CSV, JSON or RTE's text .xls), nor gzip, xz, bzip2 or zip")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _text(path: Path) -> str:
    """The file's whole text, decompressed and decoded; an empty file is an error that says so."""
    with _open(path) as stream:
        return _decode(path, _not_empty(path, stream.read()))


def _not_empty(path: Path, data: bytes) -> bytes:
    """``data``, the first bytes of a file (decompressed), unless there are none: a one-line error then (an empty
    file read as text has no columns, which format detection would report as an unknown format)."""
    if not data:
        raise BadRequestError(f"{path}: the file is empty")
    return data


def _header(path: Path) -> str:
    """The file's first line only (format detection need not decompress a whole multi-year file); a Parquet
    file's from its schema (its metadata sits at the file's end, so its bytes are read whole, its rows not
    converted)."""
    with _open(path) as stream:
        first = _not_empty(path, stream.readline(_HEADER_BYTES))
        if first.startswith(_PARQUET):
            return _parquet_text(path, first + stream.read(), header_only=True)
        if first.startswith(_UTF16_BOMS):
            # a byte line ends at the first 0x0a, which in UTF-16 is half of a code unit (little-endian "\n" is
            # 0a 00) or of another character: decode a block instead, leaving an incomplete last unit out
            decoder = codecs.getincrementaldecoder("utf-16")()
            return decoder.decode(first + stream.read(_HEADER_BYTES)).split("\n", 1)[0] + "\n"
        return _decode(path, first, sample=first + stream.read(_HEADER_BYTES))


def _separator(header: str) -> str:
    """The field separator of a CSV header line: tab, ``;`` or ``,`` (whichever the line holds most of)."""
    counts = {sep: header.count(sep) for sep in ("\t", ";", ",")}
    return max(counts, key=lambda s: counts[s]) if any(counts.values()) else ","


def _json_lines(text: str) -> list[Any] | None:
    """The records of a JSON Lines document (one JSON object a line: ODRÉ's ``exports/jsonl``), None if the text
    is not one."""
    try:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError:
        return None
    return records if len(records) > 1 and all(isinstance(r, dict) for r in records) else None


def _records_from_json(path: Path, text: str) -> list[Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        doc = _json_lines(text)
        if doc is None:
            raise BadRequestError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(doc, dict) and isinstance(doc.get("results"), list):  # Explore v2.1 records endpoint
        return list(doc["results"])
    if isinstance(doc, dict) and isinstance(doc.get("records"), list):  # API v1: {"records": [{"fields": …}]}
        return [r.get("fields", r) if isinstance(r, dict) else r for r in doc["records"]]
    if isinstance(doc, list):  # exports/json
        return doc
    raise BadRequestError(f"{path}: JSON is neither a list of records nor an ODRÉ response (results / records)")


def _wall_clock_instants(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """UTC instants (ISO text) of Paris wall-clock ``date`` + ``heure`` rows, and the ISO local date.

    The DST rule is :func:`shared.timeutil.from_wall_clock`'s (the fall-back hour RTE lists once is its second
    occurrence, UTC+1). The spring-forward day's 02:00–02:45 do not exist: those rows are RTE's padding (copies)
    and get no instant (NaN).
    """
    date = frame["date"].astype(str).str.strip()
    dayfirst = date.str.contains("/", regex=False)
    iso = date.where(~dayfirst, pd.to_datetime(date[dayfirst], format="%d/%m/%Y", errors="coerce")
                     .dt.strftime("%Y-%m-%d"))
    wall = pd.to_datetime(iso + " " + frame["heure"].astype(str).str.strip(), format="%Y-%m-%d %H:%M",
                          errors="coerce")
    utc = from_wall_clock(wall, TZ)
    text = utc.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00").where(utc.notna())
    return text, iso


def _records_from_table(path: Path, table: pd.DataFrame) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Records (field name → text) of an ODRÉ or RTE table; rows that carry no time at all (RTE's disclaimer
    line) and spring-forward padding rows are rejected here, with their reason."""
    rejected: Counter[str] = Counter()
    identity = [c for c in table.columns if c in _ODRE_IDENTITY]
    table = table[identity + [c for c in table.columns if c in NUMERIC_FIELDS]]
    # an empty identity cell is absent; an empty number stays "": a value not published (NULL, parse.to_number)
    table[identity] = table[identity].replace("", None)
    timeless = table[[c for c in ("date_heure", "date", "heure") if c in table.columns]].isna().all(axis=1)
    if timeless.any():
        rejected["row without a date or time"] += int(timeless.sum())
        table = table.loc[~timeless]
    if "date_heure" not in table.columns:
        instants, iso = _wall_clock_instants(table)
        padding = instants.isna()
        if padding.any():
            rejected["local date/heure does not exist in Europe/Paris or cannot be read"] += int(padding.sum())
        table = table.loc[~padding].assign(date_heure=instants[~padding], date=iso[~padding])
    records = [{k: v for k, v in rec.items() if v is not None} for rec in table.to_dict("records")]
    return records, rejected


# a date or a time inside a rejection's reason (its details: "local date/heure 2023-09-12 18:15 does not match …")
_REASON_DETAIL = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:\d{2})?)?|\b\d{2}:\d{2}\b")


def _reason_kind(reason: str) -> str:
    """What a rejection's reason says, without its record's details, to count records by reason: the text before
    its first colon once dates and times are elided ("invalid record: date_heure: …" → "invalid record")."""
    return _REASON_DETAIL.sub("…", reason).split(":")[0]


def _read_source_records(path: Path, records: list[Any], rejected: Counter[str]) -> pd.DataFrame:
    """Wide frame (``ts``, ``nature``, numeric fields) of the accepted records, through the poller's validation;
    ``rejected``: the rows already refused while reading the file (counted in its total), by reason."""
    total = len(records) + sum(rejected.values())
    # validation costs ~0.1 ms a record: a multi-year export (~35 000 records a year) shows its progress
    chunks = range(0, len(records), _PARSE_CHUNK)
    parts = [parse_records(records[i:i + _PARSE_CHUNK], first_record_no=i)
             for i in tqdm(chunks, desc=f"validating {path.name}", unit="chunk", file=sys.stderr,
                           disable=len(chunks) < 3)]
    rejected.update(_reason_kind(r.reason) for p in parts for r in p.rejections)
    if sum(p.accepted for p in parts) == 0:
        why = "; ".join(f"{n} × {reason}" for reason, n in rejected.most_common(3)) or "it holds none"
        raise BadRequestError(f"{path}: none of its {total} records is usable ({why})")
    rows = pd.concat([p.rows for p in parts], ignore_index=True)
    wide = rows.drop_duplicates(["ts", "metric"], keep="last").pivot(index="ts", columns="metric", values="value")
    nature = rows.drop_duplicates("ts", keep="last").set_index("ts")["nature"]
    out = wide.reindex(columns=[c for c in NUMERIC_FIELDS if c in wide.columns]).astype("float64")
    out.insert(0, "nature", nature.reindex(out.index).fillna(""))
    out = out.reset_index().rename_axis(columns=None)
    out.attrs["rejections"] = dict(rejected)
    return out


class _Layout(NamedTuple):
    """What a file's first line says: its format, CSV separator and, for the formats whose value column can be
    chosen (generic, ENTSO-E, NESO), that column's :func:`column_key` and raw label; an ENTSO-E export's time
    column and clock label."""

    fmt: str
    sep: str
    value: str = ""
    value_label: str = ""
    time_col: str = ""
    clock: str = ""


def _detect(path: Path, header: str, columns: tuple[str, str] | None = None) -> _Layout:
    """The :class:`_Layout` of a file from its first line: ``eco2mix`` (the shipped history), ``odre`` (an ODRÉ
    export, CSV or JSON), ``rte`` (an RTE download with Paris wall-clock dates), ``entsoe`` (an ENTSO-E Total
    Load export; ``columns`` ``(Time (…), X)`` reads column X instead of the actual load), ``neso`` (NESO demand data:
    settlement date and period; ``columns`` ``(SETTLEMENT_DATE, X)`` reads column X instead of ND) or ``generic``
    (``timestamp,value``, or the two ``columns`` named, compared as :func:`column_key` folds them)."""
    if header.lstrip()[:1] in ("{", "["):
        return _Layout("odre", "")
    header = header.split("\n", 1)[0].rstrip("\r")
    sep = _separator(header)
    names = next(csv.reader([header], delimiter=sep), [])
    labels = {column_key(c): c for c in names}
    cols = set(labels)
    if (time := _entsoe_time_column(names)) is not None:
        value = column_key(columns[1]) if columns else next(
            (k for k in labels if k.startswith("actual_total_load")), "")
        if value not in cols:
            raise BadRequestError(f"{path}: no {'column ' + repr(value) if value else 'Actual Total Load column'} in "
                                  f"this ENTSO-E export (its columns: {', '.join(sorted(cols)[:12])})")
        return _Layout("entsoe", sep, value, labels[value], *time)
    if {"settlement_date", "settlement_period"} <= cols and (
            columns is None or column_key(columns[0]) == "settlement_date"):
        value = column_key(columns[1]) if columns else "nd"
        if value not in cols:
            raise BadRequestError(f"{path}: no column {value!r} in this NESO file (its columns: "
                                  f"{', '.join(sorted(cols)[:12])})")
        return _Layout("neso", sep, value, labels[value])
    if columns is not None:
        if missing := [c for c in columns if column_key(c) not in cols]:
            raise BadRequestError(f"{path}: no column {missing[0]!r} (its columns: {', '.join(sorted(cols)[:12])})")
        return _Layout("generic", sep, column_key(columns[1]), labels[column_key(columns[1])])
    if "date_heure" in cols:
        return _Layout("eco2mix" if cols <= _SHIPPED else "odre", sep)
    if {"timestamp", "value"} <= cols:
        return _Layout("generic", sep, "value", labels["value"])
    if {"date", "heure"} <= cols:
        return _Layout("rte", sep)
    raise BadRequestError(
        f"{path}: not a history file this product reads (columns {sorted(cols)[:8]}…): expected the shipped "
        "eco2mix CSV (date_heure, nature, …), an ODRÉ eco2mix export (CSV or JSON; field names or French "
        "labels), an RTE eCO2mix download (Date, Heures, …), an ENTSO-E Total Load export (Time (CET/CEST), "
        "Actual Total Load [MW] - …), NESO demand data (SETTLEMENT_DATE, SETTLEMENT_PERIOD, ND, …) or a generic "
        "timestamp,value CSV (evaluate --data reads another table's time and value columns with --columns TIME,VALUE"
        + (f", e.g. --columns \"{','.join(names[:2])}\")" if len(names) >= 2 and not any("," in n for n in names[:2])
           else ")"))


def _entsoe_time_column(names: list[str]) -> tuple[str, str] | None:
    """(raw name, clock label) of an ENTSO-E export's ``Time (…)`` column among the header's names; None if none."""
    for name in names:
        if m := _ENTSOE_TIME.match(name.strip()):
            return name, m["clock"].strip()
    return None


def _entsoe_frame(path: Path, table: pd.DataFrame, time_col: str, clock: str, value: str, sep: str,
                  ) -> pd.DataFrame:
    """ENTSO-E rows (raw column names) → ``ts`` (UTC, each interval's start), ``consommation`` (the column whose
    :func:`column_key` is ``value``), ``nature`` ''. Refused rows are counted in ``attrs["rejections"]``."""
    if clock not in ENTSOE_CLOCKS:
        raise BadRequestError(f"{path}: an ENTSO-E export in {clock!r} time; export it in "
                              f"{' or '.join(ENTSOE_CLOCKS)} (the platform's time-zone setting)")
    rejected: Counter[str] = Counter()
    text = table[time_col].astype(str).str.strip()
    ok = text.str.match(_ENTSOE_INTERVAL)
    if n := int((~ok).sum()):
        rejected["time is not an ENTSO-E interval (dd.mm.yyyy hh:mm - dd.mm.yyyy hh:mm)"] = n
    wall = pd.to_datetime(text[ok].str.slice(0, 16), format="%d.%m.%Y %H:%M")
    ts = wall.dt.tz_localize("UTC") if ENTSOE_CLOCKS[clock] == "UTC" else from_wall_clock(wall, ENTSOE_CLOCKS[clock])
    if n := int(ts.isna().sum()):  # the spring-forward interval, listed with empty values
        rejected[f"local time does not exist in {ENTSOE_CLOCKS[clock]} (the spring-forward hour)"] = n
    def values(key: str) -> pd.Series:
        raw = table.loc[ok, next(c for c in table.columns if column_key(str(c)) == key)].astype(str).str.strip()
        return _generic_values(path, raw.where(~raw.isin(_ENTSOE_MISSING), ""), sep)

    out = pd.DataFrame({"ts": ts, "nature": "", "consommation": values(value)})
    # the operator's day-ahead forecast, the benchmark of a backtest (evaluate's BENCHMARKS), unless it is the
    # value read; a column that repeats the actual load is no forecast (Switzerland's 2022 export: every hour)
    forecast = next((c for c in map(column_key, table.columns)
                     if c.startswith("day_ahead_total_load_forecast") and c != value), None)
    if forecast is not None:
        fc = values(forecast)
        both = fc.notna() & out["consommation"].notna()
        if both.sum() and (fc[both] == out.loc[both, "consommation"]).mean() >= _ENTSOE_COPY_SHARE:
            rejected["day-ahead forecast column equal to the actual load (not a forecast)"] = int(both.sum())
        else:
            out["prevision_j1"] = fc
    out = out[out["ts"].notna()].reset_index(drop=True)
    if out.empty:
        raise BadRequestError(f"{path}: no ENTSO-E row could be read ({dict(rejected)})")
    out.attrs["rejections"] = dict(rejected)
    return out


def source_calendar(path: Path | str) -> tuple[str, str, str] | None:
    """The calendar a file of another operator says its series has: ``(time zone, holiday calendar, what it
    is)`` — NESO: Great Britain (Europe/London, England's bank holidays); ENTSO-E: the zone of its export clock and
    the country its area code starts with (``BZN|DE-LU`` → DE) when the ``holidays`` package knows it. None for
    other formats (France's files have the product's calendar; a generic file says nothing)."""
    path = Path(path)
    return _layout_calendar(_detect(path, _header(path)))


def _layout_calendar(layout: _Layout) -> tuple[str, str, str] | None:
    """:func:`source_calendar` of a file whose layout is known."""
    import holidays

    if layout.fmt == "neso":
        return NESO_TZ, NESO_HOLIDAYS, "NESO demand data: Great Britain's National Demand (ND unless --columns)"
    if layout.fmt != "entsoe":
        return None
    # the area ends the load column's name, as "BZN|DE-LU" / "CTA|CH" or as "Netherlands (NL)"
    name = layout.value_label
    tail = name.rsplit(" - ", 1)[-1].strip() if " - " in name else ""
    area = tail.rsplit("|", 1)[-1].strip() if "|" in tail else (m[1] if (m := _ENTSOE_AREA_CODE.search(tail)) else tail)
    country = area[:2].upper() if area[:2].upper() in holidays.list_supported_countries() else ""
    return (ENTSOE_CLOCKS.get(layout.clock, "UTC"), country, f"ENTSO-E export: the actual total load of area "
            f"{area or '?'} (unless --columns), in {layout.clock} time")


class SeriesCalendar(NamedTuple):
    """:func:`series_calendar`'s answer: the calendar, the note saying what was assumed (None when nothing was)
    and whether the files hold another series than France's national load (:func:`is_other_series`)."""

    calendar: Calendar
    note: str | None
    other: bool


def series_calendar(files: list[Path], timezone: str | None = None, holidays: str | None = None,
                    columns: tuple[str, str] | None = None) -> SeriesCalendar:
    """The calendar of the series in ``files`` (one series: :func:`is_other_series`), with a note for the CLI to
    print. France's files: Paris and French holidays; another operator's file: what it says
    (:func:`source_calendar`); a generic file: UTC days and no holidays. ``timezone`` / ``holidays`` (an IANA
    zone; a ``holidays`` calendar or 'none') override; an unknown one is a :class:`BadRequestError` with one
    line. Each file's header is read once."""
    check_calendar_options(timezone, holidays)
    layouts = [_detect(Path(f), _header(Path(f)), columns) for f in files]
    formats = {layout.fmt for layout in layouts}
    generic = bool(files) and is_other_series(formats)
    known = _layout_calendar(layouts[0]) if generic and formats <= {"neso", "entsoe"} else None
    tz = timezone or (known[0] if known else "UTC" if generic else TZ)
    country = (holidays if holidays is not None else
               (known[1] or "none") if known else "none" if generic else COUNTRY).upper()
    calendar = Calendar(tz, "" if country == "NONE" else country)
    try:
        check_calendar(calendar)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    note = None
    if known:
        note = (f"{known[2]}: days of {tz}, holidays {calendar.holidays or 'none'} (--timezone, --holidays choose "
                "others)")
    elif generic and timezone is None and holidays is None:
        note = ("a timestamp,value series is read with UTC days and no public holidays; --timezone and --holidays "
                "give it its own calendar (day types, DST, holidays)")
    return SeriesCalendar(calendar, note, generic)


def check_calendar_options(timezone: str | None, holidays: str | None) -> None:
    """``--timezone`` / ``--holidays`` as typed: an empty one is a :class:`BadRequestError` (one line), since it would
    otherwise mean the default (UTC days, no holidays), not what the user typed."""
    if timezone is not None and not timezone.strip():
        raise BadRequestError("--timezone is empty: give an IANA zone (e.g. Europe/Paris) or leave it out")
    if holidays is not None and not holidays.strip():
        raise BadRequestError("--holidays is empty: give a country code (FR, GB-ENG) or 'none'")


def no_shipped_history(files: Iterable[Path], source: str, period: str) -> BadRequestError:
    """The error for a period the shipped yearly files (``eco2mix_national_YYYY.csv.gz``, ``files``, found in
    ``source``) do not cover: the years they cover and to give ``--data`` (not :func:`read_history`'s "no history
    files given": the user gave none and did not have to)."""
    years = sorted(int(Path(f).name[-11:-7]) for f in files)
    covers = f"covers the years {years[0]} … {years[-1]}" if years else "is empty"
    return BadRequestError(f"the shipped history ({source}) {covers}, not the {period}: give --data FILE… with the "
                           "series for it")


def is_other_series(formats: Iterable[str]) -> bool:
    """Whether files of these formats hold a series other than France's national load (a generic, ENTSO-E or NESO
    file: no French plausibility bounds, not RTE's benchmark, their own calendar). Mixing both kinds is an error."""
    kinds = {f in FRANCE_FORMATS for f in formats}
    if len(kinds) > 1:
        raise BadRequestError("the files mix France's national load (eco2mix, ODRÉ, RTE) with another series; give "
                              "one series at a time")
    return kinds == {False}


def _neso_frame(path: Path, table: pd.DataFrame, value: str, sep: str) -> pd.DataFrame:
    """NESO rows (columns already :func:`column_key`-folded) → ``ts`` (UTC), ``consommation`` (the ``value``
    column), ``nature`` ''. Refused rows are counted in ``attrs["rejections"]``: forecast rows of the daily update
    file, dates that cannot be read, periods outside their local day's half-hours."""
    rejected: Counter[str] = Counter()
    if "forecast_actual_indicator" in table.columns:  # the daily update file also lists 7 days of forecasts
        forecast = table["forecast_actual_indicator"].astype(str).str.strip().str.upper().eq("F")
        if n := int(forecast.sum()):
            rejected["forecast row, not an outturn"] = n
        table = table[~forecast]
    text = table["settlement_date"].astype(str).str.strip()
    day = pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns]")
    for fmt in _NESO_DATE_FORMATS:
        if not (todo := day.isna()).any():
            break
        day[todo] = pd.to_datetime(text[todo], format=fmt, errors="coerce")
    # local midnight always exists in Great Britain (the clocks change at 01:00 UTC)
    start = day.dt.tz_localize(NESO_TZ)
    halfhours = ((day + pd.Timedelta(days=1)).dt.tz_localize(NESO_TZ) - start) / pd.Timedelta(minutes=30)
    period = pd.to_numeric(table["settlement_period"], errors="coerce")
    bad_date = day.isna()
    bad_period = ~bad_date & ~((period >= 1) & (period <= halfhours) & (period % 1 == 0))
    if n := int(bad_date.sum()):
        rejected["settlement date cannot be read"] = n
    if n := int(bad_period.sum()):
        rejected["settlement period outside its local day's half-hours"] = n
    keep = ~bad_date & ~bad_period
    out = pd.DataFrame({
        "ts": (start[keep] + (period[keep] - 1) * pd.Timedelta(minutes=30)).dt.tz_convert("UTC"),
        "nature": "",
        "consommation": _generic_values(path, table.loc[keep, value], sep),
    }).reset_index(drop=True)
    if out.empty:
        raise BadRequestError(f"{path}: no NESO row could be read ({dict(rejected)})")
    out.attrs["rejections"] = dict(rejected)
    return out


def _string_table(text: str, sep: str, fold: bool = True) -> pd.DataFrame:
    """A source file's table as text cells (empty cells stay ""), its column names :func:`column_key`-folded
    unless ``fold`` is False (an ENTSO-E export's time column is found by its raw label)."""
    table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, index_col=False)
    if fold:
        table.columns = [column_key(str(c)) for c in table.columns]
    return table


def parse_columns(text: str, option: str = "--columns") -> tuple[str, str]:
    """The CLIs' ``--columns TIME,VALUE`` (or ``option``'s, for its errors) → (time column, value column)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise BadRequestError(f"{option} takes two column names, TIME,VALUE, not {text!r}")
    if column_key(parts[0]) == column_key(parts[1]):
        raise BadRequestError(f"{option} names the same column twice ({text!r}): the time column, then the value's")
    return parts[0], parts[1]


def add_file_arguments(parser: argparse.ArgumentParser) -> None:
    """``--columns`` and ``--naive-timestamps``: how a ``--data`` file is read, the same in every CLI that reads
    history files (``evaluate``, ``evaluate-anomalies``, ``bench.short_series``); :func:`columns_option` and
    :func:`naive_tz_option` read them."""
    parser.add_argument("--columns", metavar="TIME,VALUE", default=None,
                        help="the time and value columns of a generic series whose header is not timestamp,value "
                             "(e.g. datetime,load_mw; compared without case, accents or punctuation), or another "
                             "value column of an ENTSO-E or NESO file (SETTLEMENT_DATE,TSD)")
    parser.add_argument("--naive-timestamps", choices=("utc", "local"), default="utc",
                        help="what a timestamp,value CSV's timestamps without a UTC offset are: UTC (default, the "
                             "product's rule) or wall-clock times of --timezone (the fall-back hour listed once is "
                             "its second occurrence, listed twice summer time first; times that do not exist are "
                             "dropped and counted)")


def columns_option(args: argparse.Namespace) -> tuple[str, str] | None:
    """:func:`read_history`'s ``columns`` from ``--columns`` (:func:`add_file_arguments`); without ``--data`` files it
    is a :class:`BadRequestError`."""
    columns = parse_columns(args.columns) if args.columns else None
    if columns and not args.data:
        raise BadRequestError("--columns names the columns of --data files")
    return columns


def naive_tz_option(args: argparse.Namespace, tz: str) -> str:
    """:func:`read_history`'s ``naive_tz`` from ``--naive-timestamps`` (:func:`add_file_arguments`), ``tz`` the
    series' zone. ``local`` with no ``--timezone`` for a series whose zone is UTC (a generic file's default) is a
    :class:`BadRequestError`: the user asked for a wall clock and named none, and UTC would be read silently."""
    if args.naive_timestamps != "local":
        return "UTC"
    if tz == "UTC" and not getattr(args, "timezone", None):
        raise BadRequestError("--naive-timestamps local reads the timestamps as the wall clock of --timezone: give "
                              "--timezone (e.g. Europe/Paris)")
    return tz


def history_format(path: Path | str, columns: tuple[str, str] | None = None) -> str:
    """The format of a history file (see :func:`read_history_file`), from its header."""
    return _detect(Path(path), _header(Path(path)), columns).fmt


# an ISO-8601 time that ends with its UTC offset ("…T12:00Z", "… 12:00:00+01:00", "…T12:00-0500")
_WITH_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def _generic_instants(path: Path, text: pd.Series, naive_tz: str) -> tuple[pd.Series, bool]:
    """UTC instants of a generic file's ``timestamp`` column, and whether it had no UTC offsets.

    With offsets they are exact. Without, they are UTC (the product's rule, README "Data semantics") unless
    ``naive_tz`` names the zone whose wall clock they are (:func:`shared.timeutil.from_wall_clock`: the DST
    rule; a wall time that does not exist becomes NaT). Some with and some without is an error.
    """
    s = text.astype(str).str.strip()
    aware = s.str.contains(_WITH_OFFSET, regex=True)
    if aware.all():
        return pd.to_datetime(s, utc=True, format="ISO8601"), False
    if aware.any():
        raise BadRequestError(f"{path}: {int(aware.sum())} timestamps carry a UTC offset and {int((~aware).sum())} "
                              f"do not (e.g. {s[~aware].iloc[0]!r}); write them all one way")
    wall = _wall_times(path, s)
    return (wall.dt.tz_localize("UTC") if naive_tz == "UTC" else from_wall_clock(wall, naive_tz)), True


# times of day after such a date: 24-hour, or 12-hour with AM/PM (US tools: EIA's "1/1/2019 1:00:00 AM")
_CLOCKS = ("%H:%M:%S", "%H:%M", "%I:%M:%S %p", "%I:%M %p")
# date layouts spreadsheets and other tools write instead of ISO 8601, by the order they put the day and month in
_DATE_ORDERS: dict[str, tuple[str, ...]] = {
    "day first": ("%d-%m-%Y", "%d/%m/%Y", "%d.%m.%Y"),
    "month first": ("%m/%d/%Y", "%m-%d-%Y"),
}


def _wall_times(path: Path, s: pd.Series) -> pd.Series:
    """Naive times of a generic file's timestamp column without UTC offsets: ISO 8601, or one of the day-first
    or month-first layouts of :data:`_DATE_ORDERS` followed by ``HH:MM[:SS]`` or a 12-hour ``h:MM[:SS] AM``
    (:data:`_CLOCKS`), decided on the whole column (a day above 12 anywhere settles the order; pandas would guess
    it value by value), a time of 24:00 being the next day's 00:00. A column both orders read (no day above 12 in
    the whole file) or neither reads is a one-line error."""
    # 24:00 ends a day on hour-ending clocks (US system operators' "HE 24"): the next day's 00:00
    midnight = s.str.contains(r"[ T]24:00(?::00)?$", regex=True)
    if midnight.any():
        s = s.where(~midnight, s.str.replace(r"([ T])24:00", r"\g<1>00:00", regex=True))
    return _naive_times(path, s) + pd.to_timedelta(midnight.astype(int), unit="D")


def _naive_times(path: Path, s: pd.Series) -> pd.Series:
    """:func:`_wall_times` once 24:00 is read: ISO 8601, else the one order of :data:`_DATE_ORDERS` that reads
    every value."""
    try:
        return pd.to_datetime(s, format="ISO8601")
    except (ValueError, OverflowError):
        pass
    readings: dict[str, pd.Series] = {}
    for order, dates in _DATE_ORDERS.items():
        for fmt in (f"{date} {clock}" for date in dates for clock in _CLOCKS):
            parsed = pd.to_datetime(s, format=fmt, errors="coerce")
            if parsed.notna().all():
                readings[order] = parsed
                break
    if len(readings) == 1:
        return next(iter(readings.values()))
    example = s.iloc[0] if len(s) else ""
    if readings:
        raise BadRequestError(f"{path}: the timestamps read both day first and month first (e.g. {example!r}: no "
                              "day above 12 tells them apart); write them as ISO 8601 (YYYY-MM-DD HH:MM)")
    raise BadRequestError(f"{path}: timestamps are neither ISO 8601 (YYYY-MM-DD HH:MM) nor a day-first or "
                          f"month-first date and time (e.g. {example!r})")


# above this share (and count) of a file's instants listed with different values, the file holds several series, not
# a clock's repeats (an hour-ending clock repeats one hour a year) nor overlapping exports of one series (equal values)
_SEVERAL_SERIES_SHARE, _SEVERAL_SERIES_MIN = 0.05, 48


def _refuse_several_series(path: Path, df: pd.DataFrame) -> None:
    """A one-line error when many instants of a generic file carry different values: rows of several series
    (one per region, or a long table with a series column) that keeping one row per instant would mix."""
    values = df.groupby("ts")["consommation"].nunique()
    if (conflicting := int((values > 1).sum())) > max(_SEVERAL_SERIES_MIN, _SEVERAL_SERIES_SHARE * len(values)):
        raise BadRequestError(f"{path}: {conflicting} of {len(values)} instants are listed more than once with "
                              "different values: the file holds several series (e.g. one per region)? Give one "
                              "series per file")


def _generic_frame(path: Path, table: pd.DataFrame, time_col: str, value_col: str, sep: str,
                   naive_tz: str, thousands_dots: bool = True) -> pd.DataFrame:
    """A generic file's table (column names :func:`column_key`-folded) → ``ts`` (UTC), ``consommation``, ``nature``
    ''. Refused rows are counted in ``attrs["rejections"]``: wall-clock times that do not exist in ``naive_tz``, and
    instants listed twice (the later row kept, as between files: an hour-ending clock writes the fall-back night's
    02:00 twice; a file of several series is an error, :func:`_refuse_several_series`). ``attrs["naive_timestamps"]``:
    whether the timestamps had no UTC offset."""
    # select before naming: the file may hold other columns named like the product's own (an eco2mix export's
    # "consommation" when --columns picks its "prevision_j1")
    df = table[[time_col, value_col]].set_axis(["ts", "consommation"], axis=1)
    df["consommation"] = _generic_values(path, df["consommation"], sep, thousands_dots)
    df["nature"] = ""
    df["ts"], naive = _generic_instants(path, df["ts"], naive_tz)
    rejected: dict[str, int] = {}
    if missing := int(df["ts"].isna().sum()):
        df = df[df["ts"].notna()].reset_index(drop=True)
        rejected[f"local time does not exist in {naive_tz}"] = missing
    if (twice := df["ts"].duplicated(keep="last")).any():
        _refuse_several_series(path, df)
        df = df[~twice].reset_index(drop=True)
        rejected["instant listed twice in the file (the later row kept)"] = int(twice.sum())
    df.attrs = {"rejections": rejected, "naive_timestamps": naive}
    return df


_THOUSANDS = r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?"
_DOT_GROUPS = r"[+-]?[1-9]\d{0,2}(?:\.\d{3})+"  # "0.512" is no thousands figure
_EURO_THOUSANDS = r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?"
_SEP_NAMES = {"\t": "tab", ";": "';'"}


def _generic_values(path: Path, values: pd.Series, sep: str, thousands_dots: bool = True) -> pd.Series:
    """A generic file's values as floats: the source's "not available" placeholders
    (:data:`shared.ingest.parse.NULL_TOKENS`) are missing, a decimal comma is read in a ``;``- or tab-separated
    file (the European spreadsheet convention; with thousands dots, ``51.234,5``), thousands separators in a
    comma-separated one where they cannot be a decimal comma (``"51,234.5"``, quoted: the US convention); digits in
    groups of three after every dot of a ``;``- or tab-separated file (``37.888``: thousands or decimals?) are one
    line too unless ``thousands_dots`` is false (a quantity that never reaches 1000, a temperature: decimals) or a
    value has two of them (``1.234.567``: thousands); any other text is a one-line error, "inf", "-inf" and
    "Infinity" included (no measurement)."""
    # read_history_file gives text; a caller's column of numbers (a test's frame) is read as it is
    text = values.astype(str).str.strip().where(values.notna(), "")
    if values.dtype != object:
        return _finite(path, values.astype("float64"), text, values.isna())
    missing = text.str.lower().isin(NULL_TOKENS)
    commas = text.str.contains(",", regex=False)
    dots = text.str.contains(".", regex=False)
    if sep != ",":  # ';' or tab: the European conventions
        grouped = bool(dots.any()) and bool(text[dots].str.fullmatch(_DOT_GROUPS).all())  # "37.888", "1.142"
        if commas.any() and not dots.any():
            text = text.str.replace(",", ".", regex=False)
        elif commas.any() and text[commas | dots].str.fullmatch(_EURO_THOUSANDS).all():
            # the European full form ("51.234,5", "1.142"): dots between groups of three digits, a decimal comma
            text = text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
        elif grouped and text[dots].str.count(r"\.").gt(1).any():
            text = text.str.replace(".", "", regex=False)  # "1.234.567" somewhere: only thousands have two dots
        elif grouped and thousands_dots:
            # every dotted value is digits in groups of three: thousands dots of a European spreadsheet as likely as
            # three decimals, a factor of 1000 either way
            raise BadRequestError(f"{path}: values such as {text[dots].iloc[0]!r} in a "
                                  f"{_SEP_NAMES.get(sep, repr(sep))}-separated file: a dot between groups of three "
                                  "digits may be a thousands separator (European spreadsheets) or three decimals; "
                                  "write them without the thousands dot (37888), with a decimal comma (37,888) or "
                                  "with another number of decimals")
    elif (commas.any() and text[commas].str.fullmatch(_THOUSANDS).all()
          and (text[commas].str.contains(".", regex=False) | (text[commas].str.count(",") > 1)).any()):
        # commas inside quoted values of a comma-separated file, in groups of three digits, with a decimal point
        # or two groups somewhere ("51,234.5", "1,234,567"): thousands separators (US spreadsheets). "51,234"
        # alone could be a decimal comma of a GW figure, so it stays an error rather than a factor of 1000
        text = text.str.replace(",", "", regex=False)
    return _finite(path, pd.to_numeric(text.where(~missing), errors="coerce").astype("float64"), text, missing)


def _finite(path: Path, number: pd.Series, text: pd.Series, missing: pd.Series) -> pd.Series:
    """``number`` (a file's values read as floats, ``text`` as written) unless one that is not missing is not a
    finite number (text, an overflow such as ``1e999``, or an infinity): a one-line error quoting it."""
    if (bad := ~missing & ~np.isfinite(number)).any():
        raise BadRequestError(f"{path}: {int(bad.sum())} values are not numbers (e.g. {text[bad].iloc[0]!r})")
    return number


def read_history_file(path: Path | str, naive_tz: str = "UTC", columns: tuple[str, str] | None = None,
                      thousands_dots: bool = True) -> pd.DataFrame:
    """One history file in any of the module's formats → ``ts`` (UTC-aware), ``nature`` and numeric columns.

    ``columns``: (time, value) column names of a generic series whose header does not say ``timestamp,value``
    (e.g. ``("datetime", "load_mw")``), or ``("SETTLEMENT_DATE", "TSD")`` for another column of a NESO file.
    ``naive_tz``: the zone whose wall clock a generic file's timestamps without a UTC offset are (default: they
    are UTC). ``attrs``: ``format`` (:func:`history_format`), ``rejections`` (refused source records by reason:
    ODRÉ, RTE and NESO files; wall-clock times that do not exist in ``naive_tz``) and ``naive_timestamps``.
    ``thousands_dots``: whether a generic series' values can reach 1000 (not a temperature's), which makes
    ``37.888`` in a ``;``-separated file ambiguous (:func:`_generic_values`).
    """
    path = Path(path)
    text = _text(path)
    layout = _detect(path, text, columns)
    fmt, sep = layout.fmt, layout.sep
    if fmt == "odre" and not sep:
        df = _read_source_records(path, _records_from_json(path, text), Counter())
    elif fmt == "entsoe":
        df = _entsoe_frame(path, _string_table(text, sep, fold=False), layout.time_col, layout.clock, layout.value,
                           sep)
    elif fmt == "neso":
        df = _neso_frame(path, _string_table(text, sep), layout.value, sep)
    elif fmt in ("eco2mix", "generic"):
        # the product's own format (columns as they are, empty cells NaN) or a generic series
        # a generic series' values as written (dtype=str): "37.888" in a ';'-separated file may be 37 888 written with
        # a thousands dot, which a float read cannot tell from 37.888 (_generic_values)
        df = pd.read_csv(io.StringIO(text), sep=sep, low_memory=False, dtype=str if fmt == "generic" else None)
        df.columns = [column_key(str(c)) for c in df.columns]
        if fmt == "generic":
            df = _generic_frame(path, df, column_key(columns[0]) if columns else "timestamp", layout.value, sep,
                                naive_tz, thousands_dots)
        else:
            df = df.rename(columns={"date_heure": "ts"})
            df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")
            if "nature" not in df.columns:  # e.g. an export of date_heure and consommation alone
                df["nature"] = ""
    else:
        df = _read_source_records(path, *_records_from_table(path, _string_table(text, sep)))
    if df.empty and not df.attrs.get("rejections"):  # a header alone (a refused row is counted, and said, instead)
        raise BadRequestError(f"{path}: no data rows, only a header")
    df.attrs["format"] = fmt
    return df


def _conflicting_instants(frame: pd.DataFrame) -> int:
    """How many instants of ``frame`` (files concatenated) carry two or more different known loads."""
    listed = frame.loc[frame["ts"].duplicated(keep=False), ["ts", "consommation"]].dropna()
    return int((listed.groupby("ts")["consommation"].nunique() > 1).sum()) if len(listed) else 0


def read_history(
    files: Iterable[Path | str],
    start: pd.Timestamp | str | None = None,
    end: pd.Timestamp | str | None = None,
    naive_tz: str = "UTC",
    columns: tuple[str, str] | None = None,
) -> pd.DataFrame:
    """Concatenate history files (:func:`read_history_file`) into columns ``ts`` (UTC-aware), ``nature`` and the
    numeric fields.

    A generic ``timestamp,value`` CSV (or ``columns``, see :func:`read_history_file`) becomes ``consommation`` with
    an empty nature. Rows are restricted to
    ``start <= ts < end`` and sorted; duplicate timestamps keep the last file's row. ``attrs["rejections"]``
    sums the files' rejected source records by reason, ``attrs["formats"]`` lists their formats,
    ``attrs["naive_timestamps"]``: whether a generic file's timestamps had no UTC offset (``naive_tz``).
    """
    frames = []
    rejections: Counter[str] = Counter()
    formats: set[str] = set()
    naive = False
    for f in files:
        df = read_history_file(f, naive_tz, columns)
        naive |= bool(df.attrs.get("naive_timestamps"))
        rejections.update(df.attrs.get("rejections", {}))
        formats.add(df.attrs["format"])
        frames.append(df)
    if not frames:
        raise BadRequestError("no history files given")
    out = pd.concat(frames, ignore_index=True)
    out["nature"] = out["nature"].fillna("").astype(str)
    if start is not None:
        out = out[out["ts"] >= to_utc(start)]
    if end is not None:
        out = out[out["ts"] < to_utc(end)]
    if "consommation" in out.columns and (conflicts := _conflicting_instants(out)):
        # overlapping files (a real-time and a definitive export, or two downloads of one period) that disagree:
        # the later file's value is kept, as with equal values, but the user is told it was a choice
        rejections["instant in several files with different values (the later file's kept)"] += conflicts
    out = out.drop_duplicates("ts", keep="last").sort_values("ts").reset_index(drop=True)
    out.attrs = {"rejections": dict(rejections), "formats": sorted(formats), "naive_timestamps": naive}
    return out

"""Validate ODRÉ ``eco2mix-national-tr`` records and normalize them into long measurement rows.

Pure functions: a list of decoded JSON records in, accepted rows and rejections (with a reason) out.
Nothing raises for bad data — a record that cannot be used becomes a rejection, so one bad record
never fails a run and nothing is dropped without a trace.

Rules (see data/eco2mix/README.md):

* ``date_heure`` is the instant (ISO-8601 with an offset, normally ``+00:00``); it is the only
  time used downstream.  A value without an offset is rejected (its meaning is ambiguous).  It must
  lie on the source's 15-minute grid (UTC minute 0/15/30/45, zero seconds): the ukey keeps the UTC
  date and ``HH:MM`` only, so an off-grid instant such as ``12:00:30`` would share the 12:00 ukey
  while carrying another ``ts`` — it is rejected ("off-grid").
* ``perimetre`` must be the configured perimeter (``POWERSENSE_SOURCE_PERIMETER``, ``France``) and
  ``nature`` one of the configured labels (``POWERSENSE_SOURCE_NATURES``): every reader keys values
  by timestamp and nature only, so a ``Bretagne`` record would otherwise become national load.
  With these three rules the ukey determines (source, metric, ts) (tests/test_ingest_parse.py
  tries to break it with hypothesis).
* ``date``/``heure`` are the Europe/Paris wall-clock date and time of the same instant.  When
  present they must agree with ``date_heure``; on the spring-forward day ODRÉ pads the missing
  local hour with rows ``heure`` 02:00–02:45 whose ``date_heure`` repeats the 03:00–03:45 instants:
  those phantom rows are rejected with their own reason (they are copies, never real values).
* Numbers (:func:`to_number`): a JSON number, or a string holding a plain decimal number — optional
  sign, ASCII digits, optional fraction, optional exponent (the JSON number grammar, plus a leading
  ``+``), nothing around it (the real API sends ``"1586"``, ``"-7"``).  JSON ``null`` and the
  source's "not available" placeholders (``""``, ``"ND"``, ``"N/D"``, ``"NA"``, ``"N/A"``, exact
  spelling, any case) are SQL NULL (a value withdrawn or not yet published).  Everything else —
  ``"Infinity"``, ``"-inf"``, ``"NaN"``, non-finite JSON numbers, ``"1_586"``, Arabic-Indic or
  full-width digits, padded ``" 12 "``, booleans — rejects the record with the reason: a value
  that cannot be read must never be stored as a NULL (that would withdraw a good value).
* A numeric field absent from a record is *not observed* (no row), which differs from a field
  present with a null value (a row with value NULL: a value withdrawn upstream).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from shared.calendar import TZ
from shared.timeutil import utc_datetime

if TYPE_CHECKING:
    from shared.settings import Settings

PARIS = ZoneInfo(TZ)  # the one Paris zone (shared/calendar.py) as a zoneinfo for stdlib datetimes

# Numeric fields of eco2mix-national-tr (names as in the Explore API v2.1; see the real sample
# response data/eco2mix/odre_sample_response.json). Each becomes one measurement metric.
NUMERIC_FIELDS: tuple[str, ...] = (
    "consommation", "prevision_j1", "prevision_j", "fioul", "charbon", "gaz", "nucleaire", "eolien",
    "eolien_terrestre", "eolien_offshore", "solaire", "hydraulique", "pompage", "bioenergies",
    "ech_physiques", "taux_co2", "ech_comm_angleterre", "ech_comm_espagne", "ech_comm_italie",
    "ech_comm_suisse", "ech_comm_allemagne_belgique", "fioul_tac", "fioul_cogen", "fioul_autres",
    "gaz_tac", "gaz_cogen", "gaz_ccg", "gaz_autres", "hydraulique_fil_eau_eclusee", "hydraulique_lacs",
    "hydraulique_step_turbinage", "bioenergies_dechets", "bioenergies_biomasse", "bioenergies_biogaz",
    "stockage_batterie", "destockage_batterie",
)

# Placeholders the source uses for "not available" (exact text, compared case-insensitively, no
# stripping).  Only these and JSON null become SQL NULL; "NaN"/"null"/"none" are not source
# placeholders and are rejected (a NULL would withdraw the stored value).
NULL_TOKENS = frozenset({"", "nd", "n/d", "na", "n/a"})

# A plain decimal number: optional sign, ASCII digits (``[0-9]``, not ``\d``, which also matches
# Arabic-Indic and other Unicode digits that Python's float() accepts), optional fraction, optional
# exponent.  float() alone also accepts "inf", "Infinity", "nan", "1_586" and surrounding
# whitespace (Python docs, "float()": "the string may have leading and trailing whitespace",
# underscores per PEP 515, Unicode decimal digits) — all refused here.
PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# The source's native step: every instant of eco2mix-national-tr starts a quarter-hour (UTC).
GRID = timedelta(minutes=15)

# eco2mix-national-tr's measured national load. Every record carries the field (NULL until measured), so a record
# without it is another schema; its last non-NULL instant is the poll's watermark (shared/ingest/poll.py).
REQUIRED_FIELD = "consommation"

# Fields that are forecasts, published ahead of their instant (RTE's day-ahead and intraday); every other numeric
# field is measured, so a non-NULL value of it dated after the fetch is a corrupt record.
FORECAST_FIELDS = frozenset({"prevision_j1", "prevision_j"})

# No record of an RTE national series is older than this (the shipped history starts at 2000-01-01 local).
# An earlier instant (year 1, 1850) is a corrupt record: rejected, never stored as French load and never handed
# to pandas, whose nanosecond timestamps end at 1677 and 2262.
EARLIEST_INSTANT = datetime(1999, 12, 31, tzinfo=UTC)

# date_heure's text must be ISO-8601 with a date and a time: pydantic also reads a string of digits as Unix time
# (seconds or milliseconds, by size), which the source never sends.
ISO_INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")

LONG_COLUMNS = ["record_no", "ts", "nature", "perimetre", "metric", "value"]


def to_number(value: Any) -> float | None:
    """Coerce one source value to a float or None (SQL NULL); raise ValueError when it is not a number.

    None and the "not available" placeholders are NULL; a finite JSON number or a string matching
    :data:`PLAIN_NUMBER` is the number; anything else raises (the record is dead-lettered).
    """
    if value is None:
        return None
    if isinstance(value, bool):  # bool is an int subclass; True is not a megawatt figure
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int | float):
        try:
            f = float(value)
        except OverflowError:  # a JSON integer of 309+ digits; pydantic converts only ValueError
            raise ValueError(f"number out of range: {str(value)[:20]}… ({len(str(value))} digits)") from None
        if not math.isfinite(f):  # Python's json module decodes the non-JSON literals NaN/Infinity
            raise ValueError(f"not a finite number: {value!r}")
        return f
    if isinstance(value, str):
        if value.lower() in NULL_TOKENS:
            return None
        if PLAIN_NUMBER.fullmatch(value) is None:
            raise ValueError(f"not a plain decimal number: {value!r}")
        f = float(value)
        if not math.isfinite(f):  # "1e999" overflows to inf
            raise ValueError(f"number out of range: {value!r}")
        return f
    raise ValueError(f"not a number: {type(value).__name__}")


def _instant_text(value: Any) -> Any:
    """date_heure must be ISO-8601 text: pydantic would also read a number as Unix time (s or ms?)."""
    if not isinstance(value, str):
        raise ValueError(f"date_heure must be an ISO-8601 string, not {type(value).__name__}")
    if ISO_INSTANT.match(value) is None:
        raise ValueError(f"date_heure must be an ISO-8601 date and time, not {value[:40]!r}")
    return value


Number = Annotated[float | None, BeforeValidator(to_number)]


class _RecordBase(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    date_heure: Annotated[AwareDatetime, BeforeValidator(_instant_text)]
    nature: str | None = None
    perimetre: str | None = None
    date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    heure: str | None = Field(default=None, pattern=r"^\d{2}:\d{2}$")


OdreRecord: type[_RecordBase] = create_model(  # type: ignore[call-overload]
    "OdreRecord",
    __base__=_RecordBase,
    __doc__="One record of eco2mix-national-tr as the Explore API v2.1 returns it.",
    **{name: (Number, None) for name in NUMERIC_FIELDS},
)


@dataclass
class Rejection:
    """A record that was not accepted, with the reason and the payload as received."""

    record_no: int
    reason: str
    payload: str


@dataclass
class ParsedRecords:
    """Accepted long rows (``LONG_COLUMNS``) and rejections of one list of records."""

    rows: pd.DataFrame
    rejections: list[Rejection] = field(default_factory=list)
    accepted: int = 0


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "record"
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        parts.append(f"{loc}: {msg}")
    return "invalid record: " + "; ".join(parts)


def local_time_problem(date: str | None, heure: str | None, instant: datetime) -> str | None:
    """Why the local ``date``/``heure`` disagree with ``instant`` (None when consistent or absent).

    Distinguishes the spring-forward padding (a wall-clock time that does not exist in
    Europe/Paris) from a plain inconsistency.
    """
    if date is None or heure is None:
        return None
    local = instant.astimezone(PARIS)
    if local.strftime("%Y-%m-%d") == date and local.strftime("%H:%M") == heure:
        return None
    try:
        wall = datetime.strptime(f"{date} {heure}", "%Y-%m-%d %H:%M")
    except ValueError:
        return f"local date/heure {date} {heure} is not a valid date and time"
    # A non-existent wall time does not survive a round trip through UTC.
    roundtrip = wall.replace(tzinfo=PARIS).astimezone(UTC).astimezone(PARIS).replace(tzinfo=None)
    utc_text = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
    if roundtrip != wall:
        return (
            f"spring-forward padding: local {date} {heure} does not exist in Europe/Paris; "
            f"date_heure {utc_text} is {local:%Y-%m-%d %H:%M} local (a duplicate of that instant)"
        )
    return f"local date/heure {date} {heure} does not match date_heure {utc_text} ({local:%Y-%m-%d %H:%M} local)"


def off_grid_problem(instant: datetime) -> str | None:
    """Why ``instant`` is not on the source's 15-minute UTC grid (None when it is)."""
    utc = instant.astimezone(UTC)
    if utc.second or utc.microsecond or utc.minute % 15:
        return (f"off-grid: date_heure {utc.isoformat()} is not on the source's 15-minute grid "
                "(UTC minute 0/15/30/45, zero seconds)")
    return None


def time_problem(utc: datetime, observed: Sequence[str], values: Sequence[float | None], now: datetime,
                 latest: datetime) -> str | None:
    """Why a record of UTC instant ``utc`` with ``observed`` fields and their ``values`` cannot be true when fetched
    at ``now`` (None when it can); ``latest`` = ``now`` + the source's publication horizon.

    Outside [:data:`EARLIEST_INSTANT`, ``latest``] nothing is published; a measured field (not in
    :data:`FORECAST_FIELDS`) with a value more than one quarter-hour after ``now`` (clock skew) has not happened
    yet. Either would otherwise become the poll watermark and stop or skip the polling.
    """
    if utc < EARLIEST_INSTANT:
        return f"date_heure {utc.isoformat()} is before any published value ({EARLIEST_INSTANT:%Y-%m-%d})"
    if utc > latest:
        return (f"date_heure {utc.isoformat()} is beyond the source's publication horizon "
                f"(fetched {now.isoformat()} + {latest - now})")
    if utc > now + GRID:
        measured = sorted(k for k, v in zip(observed, values, strict=True) if v is not None
                          and k not in FORECAST_FIELDS)
        if measured:
            return (f"measured value(s) {', '.join(measured[:3])} dated {utc.isoformat()}, after the fetch at "
                    f"{now.isoformat()}")
    return None


def vocabulary_problem(perimetre: str | None, nature: str | None, perimeter: str,
                       natures: Collection[str]) -> str | None:
    """Why ``perimetre``/``nature`` are outside the configured vocabulary (None when inside)."""
    if perimetre != perimeter:
        return f"perimetre {perimetre!r} is not the configured perimeter {perimeter!r}"
    if nature not in natures:
        return f"nature {nature!r} is not one of the configured natures {sorted(natures)!r}"
    return None


def source_rules(settings: Settings) -> dict[str, Any]:
    """:func:`parse_records`' keyword arguments from ``settings``: the vocabulary (``source_perimeter``,
    ``source_natures``) and the publication horizon (``poll_lookahead_hours``), so that poll, its watermark and
    upsert-version judge a record alike."""
    return {"perimeter": settings.source_perimeter, "natures": settings.source_natures,
            "lookahead": timedelta(hours=settings.poll_lookahead_hours)}


def parse_records(
    records: list[Any],
    first_record_no: int = 0,
    *,
    perimeter: str | None = None,
    natures: Collection[str] | None = None,
    now: datetime | None = None,
    lookahead: timedelta | None = None,
    required: str = REQUIRED_FIELD,
) -> ParsedRecords:
    """Validate records; return long rows for accepted ones and a Rejection for each other one.

    ``record_no`` numbers records in the order given, starting at ``first_record_no``.
    ``perimeter``/``natures`` default to the process settings (``source_perimeter``,
    ``source_natures``) so that poll and upsert-version apply the same vocabulary; ``now`` (when the
    records were fetched: default the clock) and ``lookahead`` (``poll_lookahead_hours``) bound their
    instants (:func:`time_problem`); ``required`` is the field every record carries, NULL or not: a record
    without it is another schema, not "nothing observed". Records of one call that give the same
    instant, nature and perimeter different values are all rejected, so the stored value never depends on
    their order.
    """
    if perimeter is None or natures is None or lookahead is None:
        from shared.settings import get_settings

        rules = source_rules(get_settings())
        perimeter = rules["perimeter"] if perimeter is None else perimeter
        natures = rules["natures"] if natures is None else natures
        lookahead = rules["lookahead"] if lookahead is None else lookahead
    if now is None:
        from shared import clock

        now = clock.now()
    now = utc_datetime(now)  # naive = UTC, as the store returns fetched_at
    latest = now + lookahead
    allowed = frozenset(natures)
    # per accepted record: its identity once and its observed fields; the long rows are built with
    # np.repeat at the end (a one-year history file is ~1.2 M rows: per-row Python lists of datetime
    # objects made the frame's construction dominate the parse)
    rec_no: list[int] = []
    rec_ts: list[datetime] = []
    rec_nature: list[str | None] = []
    rec_perimetre: list[str | None] = []
    rec_count: list[int] = []
    metrics: list[str] = []
    values: list[float | None] = []
    rejections: list[Rejection] = []
    seen: dict[tuple[datetime, str | None, str | None], tuple[int, tuple[tuple[str, ...], tuple[Any, ...]]]] = {}
    conflicts: dict[int, datetime] = {}  # record_no → its instant
    for i, rec in enumerate(records, start=first_record_no):
        if not isinstance(rec, dict):
            rejections.append(Rejection(i, f"record is not a JSON object ({type(rec).__name__})", _dump(rec)))
            continue
        try:
            model = OdreRecord.model_validate(rec)
        except ValidationError as exc:
            rejections.append(Rejection(i, _reason(exc), _dump(rec)))
            continue
        observed = [name for name in NUMERIC_FIELDS if name in model.model_fields_set]
        vals = [getattr(model, name) for name in observed]
        try:
            utc = model.date_heure.astimezone(UTC)
        except (OverflowError, ValueError) as exc:  # e.g. year 1 with a positive offset has no UTC instant
            rejections.append(Rejection(i, f"date_heure {model.date_heure!r} cannot be converted to UTC: {exc}",
                                        _dump(rec)))
            continue
        try:
            problem = (
                vocabulary_problem(model.perimetre, model.nature, perimeter, allowed)
                or off_grid_problem(model.date_heure)
                or time_problem(utc, observed, vals, now, latest)
                or local_time_problem(model.date, model.heure, model.date_heure)
                or (None if required in observed else f"record has no {required!r} field (another schema?)")
            )
        except (OverflowError, ValueError) as exc:  # its Paris time out of range (local_time_problem)
            problem = f"date_heure {model.date_heure!r} cannot be converted to local time: {exc}"
        if problem:
            rejections.append(Rejection(i, problem, _dump(rec)))
            continue
        identity = (utc, model.nature, model.perimetre)
        content = (tuple(observed), tuple(vals))
        if identity in seen:
            first = seen[identity]
            if first[1] != content:  # the same row twice is fine; two values for one row are not
                conflicts[first[0]] = conflicts[i] = utc
        else:
            seen[identity] = (i, content)
        rec_no.append(i)
        rec_ts.append(utc)
        rec_nature.append(model.nature)
        rec_perimetre.append(model.perimetre)
        rec_count.append(len(observed))
        metrics.extend(observed)
        values.extend(vals)
    counts = np.asarray(rec_count, dtype="int64")
    frame = pd.DataFrame({
        "record_no": np.repeat(np.asarray(rec_no, dtype="int64"), counts),
        "ts": pd.DatetimeIndex(pd.to_datetime(rec_ts, utc=True)).repeat(counts),
        "nature": np.repeat(np.asarray(rec_nature, dtype=object), counts),
        "perimetre": np.repeat(np.asarray(rec_perimetre, dtype=object), counts),
        "metric": np.asarray(metrics, dtype=object),
        "value": np.asarray([np.nan if v is None else v for v in values], dtype="float64"),
    }, columns=LONG_COLUMNS)
    accepted = len(rec_no)
    if conflicts:  # both copies of a conflicting instant leave the accepted rows
        frame = frame[~frame["record_no"].isin(list(conflicts))].reset_index(drop=True)
        rejections += [Rejection(no, f"conflicting duplicate: another record of this response gives "
                                     f"{ts.isoformat()} other values", _dump(records[no - first_record_no]))
                       for no, ts in conflicts.items()]
        rejections.sort(key=lambda r: r.record_no)
        accepted -= len(conflicts)
    return ParsedRecords(rows=frame, rejections=rejections, accepted=accepted)


def _dump(rec: Any) -> str:
    """The record as JSON text (or its repr when it is not JSON-serialisable)."""
    try:
        return json.dumps(rec, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        return repr(rec)

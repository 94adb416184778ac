"""UTC normalisation, written once.

The product's one instant is UTC (README, "Data semantics"): a naive value is taken as UTC (chDB and
``clickhouse-connect`` return naive UTC datetimes), an aware one is converted.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd


def to_utc(value: Any) -> pd.Timestamp:
    """A tz-aware UTC ``pd.Timestamp`` from anything ``pd.Timestamp`` accepts; naive input is UTC."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def utc_datetime(value: datetime) -> datetime:
    """:func:`to_utc` for a stdlib ``datetime`` without the pandas round trip (the query API converts
    every row of a 10 000-point page, where ``pd.Timestamp`` would cost more than the query)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_day(text: str) -> str:
    """An ``argparse`` type for a command line's calendar day: ISO 8601 ``YYYY-MM-DD`` only, returned as that text.
    ``pd.Timestamp`` would read ``17/04/2023`` as 17 April but ``04/05/2023`` as 5 April (month first when it can
    be): a French user's 4 May would become a test period a month off without a word."""
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day as YYYY-MM-DD (e.g. 2023-05-04: day and month "
                                         "orders differ between countries)") from None


class InvalidTime(argparse.ArgumentTypeError, ValueError):
    """A day or instant that is not ISO 8601: argparse prints its message as the option's error (a plain
    ``ValueError`` becomes "invalid iso_instant value"), pydantic as the variable's."""


def parse_iso(text: str) -> datetime:
    """``datetime.fromisoformat`` of stripped text, a lower-case ``z`` (RFC 3339 allows it) read as ``Z``: the one
    reading of an ISO 8601 instant for the CLI and the query API. Raises ``ValueError``."""
    text = text.strip()
    if text.endswith("z"):
        text = text[:-1] + "Z"
    return datetime.fromisoformat(text)


def iso_instant(text: str) -> str:
    """An ISO 8601 instant (``2023-05-04``, ``2023-05-04T12:00``, ``2023-05-04T12:00:00+02:00``), returned as the
    UTC text it means (naive = UTC, as everywhere); refuses what ``pd.Timestamp`` would guess at (``04/05/2023``).
    Raises :class:`InvalidTime`."""
    try:
        value = parse_iso(text)
    except ValueError:
        raise InvalidTime(f"{text!r} is not an ISO 8601 instant (e.g. 2023-05-04 or 2023-05-04T12:00:00Z)") from None
    return utc_datetime(value).isoformat()


def from_wall_clock(wall: pd.Series, tz: str) -> pd.Series:
    """UTC instants of naive wall-clock times of zone ``tz``, in file order (NaT where there is none).

    The rule for the DST hours a wall clock cannot tell apart, as data files write them: a wall time listed
    twice is summer time the first time and standard time the second; listed once, it is the **second**
    occurrence (standard time) — RTE's downloads list the fall-back night's 02:00–02:45 once and mean UTC+1
    (data/eco2mix/README.upstream.md, "Time-zone handling"). A wall time that does not exist (the
    spring-forward hour) has no instant: NaT.
    """
    first_of_two = (wall.duplicated(keep="last") & wall.notna()).to_numpy()
    local = pd.DatetimeIndex(wall).tz_localize(tz, ambiguous=first_of_two, nonexistent="NaT")
    return pd.Series(local.tz_convert("UTC"), index=wall.index)

"""The French load calendar, defined once: Paris time, public holidays, bridge days, day types, DST.

Every stage that reasons about local days uses these functions (featurize's calendar columns, the
residual detector's day types and DST handling, the forecast model's events and seasons):

* :data:`TZ` — the series' local zone; all instants are UTC, local time is derived.
* :func:`public_holidays` — public holidays of a year from the ``holidays`` package (France by
  default; any ``holidays`` country code for the generic evaluation), cached per (country, year).
* :func:`bridge_days` — "ponts": the Monday before a Tuesday holiday, the Friday after a Thursday one.
* :func:`day_type` — the load-shape class of a local date (Monday / Tue–Thu / Friday / Saturday /
  Sunday-or-holiday); :func:`day_type_of` the same from featurize's ``dow`` / ``is_holiday`` columns.
* :func:`is_dst_transition`, :func:`local_day_bounds`, :func:`is_fallback_gap`, :func:`wall_clock` —
  summer time and the 23/25-hour days.
* :func:`expected_instants`, :func:`expected_steps` — the instants a series is expected to have, and how
  many a local day holds: poll's gap proof, detect's completeness, dbt's ``dim_calendar`` and the Grafana
  coverage panel count the same steps (tests/test_freshness.py … test_ops_sql.py tie the SQL to these).

``holidays`` is imported lazily, so light stages that only need :data:`TZ` never load it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from shared.timeutil import to_utc

TZ = "Europe/Paris"
COUNTRY = "FR"


class Calendar(NamedTuple):
    """A series' local calendar: the zone its days, day types and DST follow, and its public holidays (a
    :func:`public_holidays` calendar; '' = none). France's (:data:`FRANCE`) is the product's; another series'
    calendar comes from its file or the user (``evaluate``, ``evaluate-anomalies``)."""

    tz: str = TZ
    holidays: str = COUNTRY


FRANCE = Calendar()


# --- public holidays and bridges -----------------------------------------------------------------------
@lru_cache(maxsize=256)
def public_holidays(year: int, country: str = COUNTRY) -> dict[date, str]:
    """Public holidays of ``year`` (date → name) for a ``holidays`` country code (France by default), or a
    country and one of its subdivisions as ISO 3166-2 writes them (``GB-ENG``: England's bank holidays —
    ``GB`` alone has only those common to the whole United Kingdom, without Easter Monday)."""
    import holidays

    code, subdiv = _country_and_subdivision(country)
    return dict(holidays.country_holidays(code, subdiv=subdiv, years=year))


def _country_and_subdivision(country: str) -> tuple[str, str | None]:
    """``GB-ENG`` → ``("GB", "ENG")``, ``FR`` → ``("FR", None)``."""
    code, _, subdiv = country.partition("-")
    return code, subdiv or None


def check_holiday_calendar(country: str) -> None:
    """``ValueError`` with a one-line message unless ``country`` is a calendar :func:`public_holidays` reads."""
    import holidays

    code, subdiv = _country_and_subdivision(country)
    supported = holidays.list_supported_countries()
    if code not in supported:
        raise ValueError(f"unknown holiday calendar {country!r} (a `holidays` country code such as GB, a country "
                         "and subdivision such as GB-ENG, or 'none')")
    if subdiv and subdiv not in supported[code]:
        raise ValueError(f"unknown subdivision {subdiv!r} of {code} (its subdivisions: "
                         f"{', '.join(supported[code][:12])}{'…' if len(supported[code]) > 12 else ''})")


def check_calendar(calendar: Calendar) -> None:
    """``ValueError`` with a one-line message unless the calendar's zone is an IANA name and its holidays a
    calendar :func:`public_holidays` reads (or '')."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(calendar.tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {calendar.tz!r} (an IANA name such as Europe/London)") from exc
    if calendar.holidays:
        check_holiday_calendar(calendar.holidays)


def holidays_of_years(years: Iterable[int], country: str = COUNTRY) -> dict[date, str]:
    """Public holidays of several years, merged."""
    out: dict[date, str] = {}
    for y in sorted(set(years)):
        out.update(public_holidays(int(y), country))
    return out


def holiday_names(dates: pd.Series) -> pd.Series:
    """French public holiday name per local date (``datetime.date`` values; '' when none)."""
    names = holidays_of_years({d.year for d in dates})
    return dates.map(lambda d: names.get(d, ""))


def bridge_days(dates: Iterable[date]) -> set[date]:
    """The bridge days ("ponts") among ``dates``: a Monday before a Tuesday holiday or a Friday after a
    Thursday holiday (the years around each date are looked up, so 31 Dec / 1 Jan work)."""
    uniq = set(dates)
    hol = set(holidays_of_years({d.year + k for d in uniq for k in (-1, 0, 1)}))
    return {
        d for d in uniq
        if (d.weekday() == 0 and d + timedelta(days=1) in hol) or (d.weekday() == 4 and d - timedelta(days=1) in hol)
    }


def bridge_of(holiday: date) -> date | None:
    """The bridge day a holiday creates (Tuesday → the Monday before, Thursday → the Friday after), if any."""
    wd = holiday.weekday()
    if wd == 1:
        return holiday - timedelta(days=1)
    if wd == 3:
        return holiday + timedelta(days=1)
    return None


def day_type(dates: pd.DatetimeIndex, country: str = COUNTRY) -> np.ndarray:
    """Load-shape class of local dates: 0 Monday, 1 Tuesday–Thursday, 2 Friday, 3 Saturday,
    4 Sunday or public holiday (a holiday's load looks like a Sunday's; French holidays by default, ``country``
    another :func:`public_holidays` calendar, '' none)."""
    hol = holidays_of_years(dates.year, country) if country else {}
    is_holiday = np.array([d in hol for d in dates.date], dtype=bool)
    return day_type_of(dates.dayofweek.to_numpy(), is_holiday)


def day_type_of(dow: np.ndarray, is_holiday: np.ndarray) -> np.ndarray:
    """:func:`day_type` from a local day of week (0 = Monday) and a public-holiday flag — e.g. featurize's
    calendar columns ``dow`` and ``is_holiday``."""
    dow = np.asarray(dow, dtype=int)
    kind = np.select([dow == 0, dow <= 3, dow == 4, dow == 5], [0, 1, 2, 3], 4)
    return np.where(np.asarray(is_holiday, dtype=bool), 4, kind)


# --- local time, summer time and DST days ----------------------------------------------------------------
def wall_clock(index: pd.DatetimeIndex, tz: str = TZ) -> pd.DatetimeIndex:
    """Local wall-clock time (naive) of UTC instants."""
    return index.tz_convert(tz).tz_localize(None)


def day_start(day: Any, tz: str = TZ) -> pd.Timestamp:
    """The first instant of a local date, as UTC: its midnight — or, in a zone whose clocks skip midnight (Chile,
    Paraguay, Cuba, … spring forward at 00:00), the first wall-clock time that exists; an ambiguous midnight is its
    first occurrence. pandas raises on both by default, which stopped every calendar computation there."""
    d = pd.Timestamp(pd.Timestamp(day).date())
    return d.tz_localize(tz, nonexistent="shift_forward", ambiguous=True).tz_convert("UTC")


def local_dates(index: pd.DatetimeIndex, tz: str = TZ) -> pd.DatetimeIndex:
    """The local date of each UTC instant, as naive midnights (``normalize`` on the zone-aware index raises where
    the clocks skip midnight)."""
    return pd.DatetimeIndex(index).tz_convert(tz).tz_localize(None).normalize()


def local_day_bounds(day: Any, tz: str = TZ) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a local day as UTC instants: 23 h on the spring-forward day, 25 h on fall-back."""
    d = pd.Timestamp(pd.Timestamp(day).date())
    return day_start(d, tz), day_start(d + pd.Timedelta(days=1), tz)


def is_dst_transition(day: Any, tz: str = TZ) -> bool:
    """True when the local day's UTC offset changes (the 23-hour and the 25-hour day)."""
    start, end = local_day_bounds(str(day), tz)
    return bool(end - start != pd.Timedelta(days=1))


def is_summer_time(local: pd.DatetimeIndex) -> np.ndarray:
    """Summer time (CEST, UTC+2) flag of Paris-local instants."""
    return np.array([t.utcoffset().total_seconds() == 7200 for t in local], dtype=bool)


def is_fallback_gap(ts: pd.DatetimeIndex, tz: str = TZ) -> np.ndarray:
    """True for UTC instants in the first occurrence of the repeated local hour on fall-back days
    (RTE publishes that hour once, as its second occurrence)."""
    local = ts.tz_convert(tz)
    after = (ts + pd.Timedelta(hours=1)).tz_convert(tz)
    # the first occurrence is summer time (+02:00) and one hour later the wall clock shows the same hour
    same_wall = (local.hour == after.hour) & (local.minute == after.minute)
    return np.asarray(same_wall)



def expected_instants(
    start: Any, end: Any, step: pd.Timedelta = pd.Timedelta(minutes=15), *, ignore_fallback_gap: bool = True,
    tz: str = TZ,
) -> pd.DatetimeIndex:
    """The instants of a series with period ``step`` in ``[start, end)``, on the UTC grid (no DST hole, no duplicate).

    With ``ignore_fallback_gap`` (``POWERSENSE_DETECT_IGNORE_FALLBACK_GAP``) the first occurrence of the repeated
    local hour on fall-back days (00:00–00:45Z), which RTE never publishes (data/eco2mix/README.upstream.md), is not
    expected: a fall-back day holds 96 quarter-hours, not 100.
    """
    lo = to_utc(start).ceil(step)
    grid = pd.date_range(lo, to_utc(end), freq=step, inclusive="left")
    if ignore_fallback_gap and len(grid):
        grid = grid[~is_fallback_gap(grid, tz)]
    return grid


def expected_steps(day: Any, step_min: int = 15, *, ignore_fallback_gap: bool = True, tz: str = TZ) -> int:
    """Steps a local day is expected to hold: 92 / 96 / 96 quarter-hours on spring-forward / normal / fall-back
    days (100 on fall-back with ``ignore_fallback_gap`` off)."""
    start, end = local_day_bounds(day, tz)
    return len(expected_instants(start, end, pd.Timedelta(minutes=step_min),
                                 ignore_fallback_gap=ignore_fallback_gap, tz=tz))

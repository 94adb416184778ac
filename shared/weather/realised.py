"""The realised temperature a user brings to ``evaluate --weather`` (``--temperature FILE…``): the one reader.

Two kinds of file, told apart by their header:

* **Enedis's smoothed national temperature** (France; :mod:`shared.weather.enedis`, any shape that dataset comes
  in): already exponentially smoothed, so the weather features use it as the smoothed temperature;
* **a** ``timestamp,value`` **series in °C** — the raw temperature of whatever area the load series covers (a
  station, or a weighted mean the user built). It is read as a generic load file is
  (:func:`shared.ingest.history.read_history_file`: timestamps with a UTC offset, or without one as UTC or as
  ``--naive-timestamps local`` wall-clock times; plain, compressed or Parquet), and the product smooths it itself
  (:func:`shared.weather.features.derive`), as production smooths Open-Meteo's temperature.

One kind per run: Enedis's smoothed series and a raw one are different definitions of "the temperature" and are not
mixed. A raw file in °F or Kelvin is converted (``--temperature-unit``). A value outside :data:`PLAUSIBLE_C` is
refused with a one-line error (a file in another unit than the one given is the usual cause: 15 °C is 288 K and
59 °F), rather than trained on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from shared.errors import BadRequestError
from shared.ingest.history import _detect, _header, _separator, column_key, read_history_file
from shared.weather.enedis import read_enedis_file
from shared.weather.features import interpolate_on

# °C a 2 m air temperature can take anywhere people use electricity: the records are −89.2 (Vostok) and +56.7 (Death
# Valley); a value outside is a unit or a glitch, not weather
PLAUSIBLE_C = (-90.0, 60.0)
# a raw temperature file's unit (``--temperature-unit``) → °C
TO_CELSIUS = {"C": lambda v: v, "F": lambda v: (v - 32.0) * 5.0 / 9.0, "K": lambda v: v - 273.15}


class RealisedTemperature(NamedTuple):
    """The files' temperature: ``frame`` (``ts`` UTC, ``realised`` °C, sorted, one row per instant), whether it
    is already smoothed (Enedis's), and what it is, for the report."""

    frame: pd.DataFrame
    smoothed: bool
    what: str


def _first_line(path: Path) -> str:
    """The file's header line (its first, or a Parquet file's column names): read once per file."""
    return _header(path).split("\n", 1)[0].rstrip("\r")


def _names(first: str) -> set[str]:
    return {column_key(c) for c in first.split(_separator(first))}


def is_enedis(first: str) -> bool:
    """Whether a file whose header line is ``first`` holds Enedis's national temperature (its ``horodate`` field, or
    a JSON export) rather than a ``timestamp,value`` series."""
    return first.lstrip()[:1] in ("{", "[") or "horodate" in _names(first)


def _series_file(path: Path, first: str, naive_tz: str, columns: tuple[str, str] | None) -> pd.DataFrame:
    """A ``timestamp,value`` temperature file (or the two ``columns`` named; header line ``first``) → ``ts``,
    ``realised``; a history file of another format is refused (it is a load series, not a temperature), and so is a
    header that names neither."""
    try:
        fmt = _detect(path, first, columns).fmt
    except BadRequestError:
        if columns is not None:  # a column the file lacks: history's own error names it
            raise
        raise BadRequestError(f"{path}: not a temperature file this product reads (columns "
                              f"{', '.join(sorted(_names(first))[:8])}): Enedis's national temperature (horodate, "
                              "temperature_realisee_lissee_degc) or a timestamp,value CSV in °C; --temperature-columns "
                              "TIME,VALUE names other columns") from None
    if fmt != "generic":
        raise BadRequestError(f"{path}: a load history file, not a temperature (--temperature takes Enedis's national "
                              "temperature or a timestamp,value CSV in °C)")
    df = read_history_file(path, naive_tz, columns, thousands_dots=False)  # "5.125" °C is three decimals
    return pd.DataFrame({"ts": df["ts"], "realised": df["consommation"].astype(float)})


def read_temperature_files(files: Iterable[Path | str], naive_tz: str = "UTC",
                           columns: tuple[str, str] | None = None, unit: str = "C") -> RealisedTemperature:
    """``--temperature`` files as one series (see the module docstring); where files overlap the later file's rows
    win. ``columns``: the (time, value) columns of a raw temperature file whose header is not ``timestamp,value``
    (``--temperature-columns``); ``unit``: that file's unit, ``C``, ``F`` or ``K`` (:data:`TO_CELSIUS`; Enedis's is
    °C). No file, files of both kinds or an implausible value is a :class:`BadRequestError` with one line."""
    paths = [Path(f) for f in files]
    if not paths:
        raise BadRequestError("--temperature: no file given")
    firsts = [_first_line(p) for p in paths]
    kinds = {is_enedis(f) for f in firsts}
    if len(kinds) > 1:
        raise BadRequestError("--temperature: the files mix Enedis's smoothed national temperature with a "
                              "timestamp,value series; give one kind (they define the temperature differently)")
    enedis = kinds == {True}
    if enedis and (columns or unit != "C"):
        raise BadRequestError("--temperature-columns and --temperature-unit describe a timestamp,value temperature, "
                              "not Enedis's series (read by its field names, in °C)")
    if unit not in TO_CELSIUS:
        raise BadRequestError(f"--temperature-unit: {unit!r} is not one of {', '.join(TO_CELSIUS)}")
    frames = [read_enedis_file(p)[["ts", "realised"]] if enedis else _series_file(p, first, naive_tz, columns)
              for p, first in zip(paths, firsts, strict=True)]
    frame = (pd.concat(frames, ignore_index=True).drop_duplicates("ts", keep="last").sort_values("ts")
             .reset_index(drop=True))
    frame["realised"] = TO_CELSIUS[unit](frame["realised"].astype(float))
    values = frame["realised"].to_numpy(dtype=float)
    lo, hi = PLAUSIBLE_C
    if (bad := np.isfinite(values) & ((values < lo) | (values > hi))).any():
        at = frame.loc[bad, "ts"].iloc[0]
        raise BadRequestError(f"--temperature: {int(bad.sum())} values outside {lo:g} … {hi:g} °C (e.g. "
                              f"{values[bad][0]:g} at {at:%Y-%m-%dT%H:%MZ}, read as °{unit}): in another unit? "
                              "(--temperature-unit F or K)")
    if not np.isfinite(values).any():
        raise BadRequestError("--temperature: no temperature value in the files")
    what = ("Enedis's smoothed realised national temperature" if enedis else
            "the series' own temperature (timestamp,value, °C), smoothed by the product")
    return RealisedTemperature(frame, enedis, what)


def on_grid(frame: pd.DataFrame, ts: pd.Series | pd.DatetimeIndex) -> pd.DataFrame:
    """``frame``'s temperature (``ts``, ``realised``) at the instants ``ts``: ``ts, temp_degc``, short gaps (an
    hourly file on a 30-min grid) interpolated within the file's own values
    (:func:`shared.weather.features.interpolate_on`), NaN elsewhere."""
    idx = pd.DatetimeIndex(ts)
    temp = interpolate_on(frame.rename(columns={"realised": "temp_degc"}), idx)
    return pd.DataFrame({"ts": pd.Series(idx), "temp_degc": temp.to_numpy()})


def normal_of(frame: pd.DataFrame, ts: pd.Series | pd.DatetimeIndex) -> pd.DataFrame:
    """A climatological stand-in from the file itself at ``ts`` (``ts, temp_degc``): the mean of its values at the
    same day of year and time of day (UTC) over the years it covers, the file's mean where it has none. Used only
    where the backtest needs a temperature after the file ends (targets after the test period, never scored)."""
    idx = pd.DatetimeIndex(ts)
    s = frame.dropna(subset=["realised"])
    key = pd.DatetimeIndex(s["ts"])
    by_slot = s.groupby([key.dayofyear, key.hour * 60 + key.minute])["realised"].mean()
    want = pd.MultiIndex.from_arrays([idx.dayofyear, idx.hour * 60 + idx.minute])
    temp = by_slot.reindex(want).to_numpy()
    temp = np.where(np.isnan(temp), float(s["realised"].mean()), temp)
    return pd.DataFrame({"ts": pd.Series(idx), "temp_degc": temp})

"""Enedis's smoothed national temperature, read from a file: the one reader of that series.

Enedis publishes it in the open-data dataset ``donnees-de-temperature-et-de-pseudo-rayonnement`` (an Opendatasoft
portal, like ODRÉ). Every file shape that dataset comes in is read the same way:

* the shipped files (``data/weather/enedis_temperature_lissee_nationale_YYYY.csv.gz``: ``horodate`` in UTC with
  ``Z``, ``temperature_realisee_lissee_degc``, ``temperature_normale_lissee_degc``, ``,``-separated);
* the portal's CSV export (``;``-separated, ``horodate`` with its UTC offset, the same field names — or the
  portal's labels, compared as :func:`shared.ingest.history.column_key` folds them: case, accents, punctuation
  and a trailing unit such as ``(°C)`` do not matter), a decimal comma included;
* JSON: an Explore v2.1 records response (``{"results": […]}``, how the shipped files were saved day by day),
  an ``exports/json`` list, or API v1's ``{"records": [{"fields": …}]}``;

plain or gzip / xz / bzip2 / one-file zip. Enedis's step is 30 minutes (15 minutes from 2024-10-04T22:00Z); the
reader keeps the file's own step. Timestamps without a UTC offset are UTC (the product's rule). Duplicate instants
keep the last row; a file without ``horodate`` or the realised temperature is a one-line error.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from shared.errors import BadRequestError
from shared.ingest.history import (
    _generic_instants,
    _generic_values,
    _records_from_json,
    _separator,
    _string_table,
    _text,
    column_key,
)

COLUMNS = ("ts", "realised", "normal")
SHIPPED_FILES = "enedis_temperature_lissee_nationale_*.csv.gz"  # the shipped yearly files (data/weather)
# the dataset's field names, and the keys its labels fold to (the unit "(°C)" dropped)
_REALISED = ("temperature_realisee_lissee_degc", "temperature_realisee_lissee")
_NORMAL = ("temperature_normale_lissee_degc", "temperature_normale_lissee")


def read_enedis_file(path: Path | str) -> pd.DataFrame:
    """One file of Enedis's national temperature → ``ts`` (UTC), ``realised``, ``normal`` (°C; ``normal`` NaN
    where the file has none), sorted, one row per instant (see the module docstring for the shapes read)."""
    return _one_per_instant(_rows(Path(path)))


def _one_per_instant(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by ``ts``, the last of an instant's rows kept."""
    return df.drop_duplicates("ts", keep="last").sort_values("ts").reset_index(drop=True)


def _rows(path: Path) -> pd.DataFrame:
    """A file's rows as read (:func:`read_enedis_file` without the ordering)."""
    text = _text(path)
    if text.lstrip()[:1] in ("{", "["):
        table = pd.DataFrame(_records_from_json(path, text))
        table.columns = [column_key(str(c)) for c in table.columns]
        sep = ","
    else:
        sep = _separator(text.split("\n", 1)[0])
        table = _string_table(text, sep)
    realised = next((c for c in _REALISED if c in table.columns), None)
    if "horodate" not in table.columns or realised is None:
        found = ", ".join(map(str, table.columns))
        raise BadRequestError(f"{path}: not Enedis's national temperature (a horodate column and "
                              f"temperature_realisee_lissee_degc are needed; columns: {found})")
    if table.empty:
        raise BadRequestError(f"{path}: no rows")
    normal = next((c for c in _NORMAL if c in table.columns), None)
    return pd.DataFrame({
        "ts": _generic_instants(path, table["horodate"], "UTC")[0],
        "realised": _generic_values(path, table[realised], sep, thousands_dots=False),  # °C: decimals
        "normal": _generic_values(path, table[normal], sep, thousands_dots=False) if normal else float("nan"),
    })


def read_enedis(files: Iterable[Path | str]) -> pd.DataFrame:
    """Several files (:func:`read_enedis_file`) as one series; where they overlap the later file's rows win (a
    user's newer export over the shipped years). No file: an empty frame with the same columns."""
    frames = [_rows(Path(f)) for f in files]
    if not frames:
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "realised": pd.Series(dtype=float),
                             "normal": pd.Series(dtype=float)})
    return _one_per_instant(pd.concat(frames, ignore_index=True))[list(COLUMNS)]


def read_enedis_dir(directory: Path | str) -> pd.DataFrame:
    """The shipped files of ``directory`` (:data:`SHIPPED_FILES`, in year order) as one series."""
    return read_enedis(sorted(Path(directory).glob(SHIPPED_FILES)))

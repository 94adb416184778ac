"""Read the shipped eco2mix history (or any file in the same CSV format, or a generic
``timestamp,value`` CSV) into one UTC-indexed frame."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from shared.errors import BadRequestError
from shared.timeutil import to_utc

LOAD_COLUMNS = ("consommation", "prevision_j1", "prevision_j")


def read_history(
    files: Iterable[Path | str],
    start: pd.Timestamp | str | None = None,
    end: pd.Timestamp | str | None = None,
) -> pd.DataFrame:
    """Concatenate history files into columns ``ts`` (UTC-aware), ``nature`` and the numeric fields.

    eco2mix files (``date_heure`` column) keep every numeric column they have; a generic CSV with
    ``timestamp,value`` becomes ``consommation`` with an empty nature. Rows are restricted to
    ``start <= ts < end`` and sorted; duplicate timestamps keep the last file's row.
    """
    frames = []
    for f in files:
        df = pd.read_csv(f, low_memory=False)
        if "date_heure" in df.columns:
            df = df.rename(columns={"date_heure": "ts"})
        elif {"timestamp", "value"} <= set(df.columns):
            df = df.rename(columns={"timestamp": "ts", "value": "consommation"})[["ts", "consommation"]]
            df["nature"] = ""
        else:
            raise BadRequestError(f"{f}: expected an eco2mix CSV (date_heure, …) or a timestamp,value CSV")
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")
        frames.append(df)
    if not frames:
        raise BadRequestError("no history files given")
    out = pd.concat(frames, ignore_index=True)
    out["nature"] = out["nature"].fillna("").astype(str)
    if start is not None:
        out = out[out["ts"] >= to_utc(start)]
    if end is not None:
        out = out[out["ts"] < to_utc(end)]
    out = out.drop_duplicates("ts", keep="last").sort_values("ts").reset_index(drop=True)
    return out

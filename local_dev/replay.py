"""A replay of the shipped real eco2mix data behind an ODRÉ Explore API v2.1-compatible endpoint.

``GET /api/explore/v2.1/catalog/datasets/eco2mix-national-tr/records`` answers like ODRÉ does
(see data/eco2mix/odre_sample_response.json): ``{"total_count": N, "results": [...]}`` with flat
records ``perimetre, nature, date, heure`` (local Europe/Paris), ``date_heure`` (UTC, ``+00:00``)
and the numeric columns the shipped files have, as JSON numbers (null when absent).

Supported query parameters (the subset poll uses, with ODRÉ's caps and error shapes):

* ``where``: ``and``-joined comparisons ``date_heure <op> "ISO instant"`` (``date'…'`` and single
  quotes accepted; a literal without offset is taken as UTC), ``date <op> "YYYY-MM-DD"`` (local
  day), ``nature = "…"`` / ``perimetre = "…"``; ``<op>`` is ``>=, >, <=, <, =, !=`` (``!=`` only
  for text fields);
* ``order_by``: ``date_heure`` [``asc``|``desc``]; ``limit`` 0…100 (default 10); ``offset`` with
  ``offset + limit ≤ 10000`` (else HTTP 400 ``InvalidRESTParameterError`` as ODRÉ answers).  poll
  pages by keyset — ``date_heure > "<last instant read>" and date_heure < "<end>"`` at offset 0,
  and ``date_heure = "<instant>"`` to re-read the records sharing one instant — which these
  comparisons serve exactly like ODRÉ (``total_count`` counts what the ``where`` matches);
* ``select``: optional comma-separated field list.

Only rows with ``date_heure <= shared.clock.now()`` are visible, so with a simulated clock
(installed by the demo: ``shared.clock.install(SimulatedClock(start, speed))``) the data "arrives"
as time passes.  Like the real dataset on spring-forward days, the missing local hour is padded
with rows ``heure`` 02:00–02:45 whose ``date_heure`` repeats the 03:00–03:45 instants (values
null); poll must reject them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from shared import clock
from shared.calendar import TZ
from shared.ingest.history import read_history
from shared.settings import get_settings
from shared.timeutil import to_utc

DATASET = "eco2mix-national-tr"
API_PREFIX = "/api/explore/v2.1"
RECORDS_PATH = f"{API_PREFIX}/catalog/datasets/{{dataset}}/records"
MAX_LIMIT = 100
MAX_WINDOW = 10_000
TEXT_FIELDS = ("perimetre", "nature", "date", "heure", "date_heure")

_COND = re.compile(
    r"""^\s*(?P<field>[a-z_][a-z0-9_]*)\s*(?P<op>>=|<=|!=|=|>|<)\s*
        (?:date)?(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


class ReplayData:
    """The history as sorted arrays, with ODRÉ's spring-forward padding rows added."""

    def __init__(self, frame: pd.DataFrame, pad_spring_forward: bool = True) -> None:
        numeric = [c for c in frame.columns if c not in ("ts", "nature")]
        ts = frame["ts"].to_numpy(dtype="datetime64[ns]").view("int64")
        phantom = np.zeros(len(frame), dtype=bool)
        nature = frame["nature"].to_numpy(dtype=object)
        values = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy("float64") for c in numeric}
        if pad_spring_forward and len(frame):
            pad = self._spring_forward_instants(frame["ts"])
            if len(pad):
                at = np.searchsorted(ts, pad)
                ts = np.concatenate([ts, pad])
                phantom = np.concatenate([phantom, np.ones(len(pad), dtype=bool)])
                nature = np.concatenate([nature, nature[at]])
                values = {c: np.concatenate([v, np.full(len(pad), np.nan)]) for c, v in values.items()}
        # Order by instant; a padding row comes before the real row of the same instant.
        order = np.lexsort((~phantom, ts))
        self.ts = ts[order]
        self.phantom = phantom[order]
        self.nature = nature[order]
        self.values = {c: v[order] for c, v in values.items()}
        self.numeric = numeric
        self.fields = [*TEXT_FIELDS, *numeric]

    @staticmethod
    def _spring_forward_instants(ts: pd.Series) -> np.ndarray:
        """The UTC instants 01:00–01:45Z of each spring-forward day present in the data."""
        years = sorted(set(ts.dt.year))
        out = []
        present = set(ts.to_numpy(dtype="datetime64[ns]").view("int64").tolist())
        for y in years:
            march31 = pd.Timestamp(f"{y}-03-31")
            sunday = march31 - pd.Timedelta(days=(march31.weekday() + 1) % 7)
            for q in range(4):
                inst = pd.Timestamp(f"{sunday:%Y-%m-%d}T01:00:00Z") + pd.Timedelta(minutes=15 * q)
                if inst.value in present:
                    out.append(inst.value)
        return np.array(out, dtype="int64")

    def records(self, idx: np.ndarray, fields: Sequence[str]) -> list[dict[str, Any]]:
        """ODRÉ-shaped records of rows ``idx``."""
        if len(idx) == 0:
            return []
        utc = pd.DatetimeIndex(self.ts[idx].view("datetime64[ns]")).tz_localize("UTC")
        local = utc.tz_convert(TZ)
        out = []
        for k, i in enumerate(idx.tolist()):
            loc = local[k]
            heure = loc.strftime("%H:%M")
            if self.phantom[i]:  # the non-existent 02:xx wall time that ODRÉ lists for 03:xx
                heure = (loc.tz_localize(None) - timedelta(hours=1)).strftime("%H:%M")
            rec: dict[str, Any] = {
                "perimetre": "France",
                "nature": self.nature[i],
                "date": loc.strftime("%Y-%m-%d"),
                "heure": heure,
                "date_heure": utc[k].strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            }
            for c in self.numeric:
                v = self.values[c][i]
                rec[c] = None if np.isnan(v) else (int(v) if float(v).is_integer() else float(v))
            out.append({f: rec[f] for f in fields})
        return out


@lru_cache(maxsize=4)
def _load(files: tuple[str, ...], pad_spring_forward: bool) -> ReplayData:
    return ReplayData(read_history([Path(f) for f in files]), pad_spring_forward)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


class _QueryError(Exception):
    pass


def _instant(text: str) -> int:
    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise _QueryError(f"invalid date literal {text!r}") from exc
    return int(to_utc(ts).value)


def _local_midnight(day: str) -> int:
    try:
        return int(pd.Timestamp(day).tz_localize(TZ).tz_convert("UTC").value)
    except ValueError as exc:
        raise _QueryError(f"invalid date literal {day!r}") from exc


def _plan(where: str | None) -> tuple[int, int, list[tuple[str, str, str]]]:
    """Parse ``where`` into an inclusive ns range [lo, hi] and text filters."""
    lo, hi = np.iinfo("int64").min, np.iinfo("int64").max
    text: list[tuple[str, str, str]] = []
    if not where or not where.strip():
        return lo, hi, text
    for cond in _AND.split(where.strip()):
        m = _COND.match(cond)
        if not m:
            raise _QueryError(f"unsupported expression: {cond.strip()!r}")
        field, op = m["field"].lower(), m["op"]
        literal = m["dq"] if m["dq"] is not None else m["sq"]
        if field in ("date_heure", "date"):
            if op == "!=":
                raise _QueryError(f"operator != is not supported on {field}")
            if field == "date_heure":
                a = b = _instant(literal)
            else:  # a local day is the half-open UTC range [midnight, next midnight)
                a = _local_midnight(literal)
                b = _local_midnight((pd.Timestamp(literal) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")) - 1
            if op in (">=", "="):
                lo = max(lo, a)
            if op == ">":
                lo = max(lo, b + 1)
            if op in ("<=", "="):
                hi = min(hi, b)
            if op == "<":
                hi = min(hi, a - 1)
        elif field in ("nature", "perimetre") and op in ("=", "!="):
            text.append((field, op, literal))
        else:
            raise _QueryError(f"unsupported filter on field {field!r} with operator {op}")
    return lo, hi, text


def create_replay_app(
    history_files: Sequence[Path | str] | None = None, *, pad_spring_forward: bool = True
) -> FastAPI:
    """The replay app (mounted by the gateway at ``/replay``); data is loaded on the first request."""
    files = tuple(str(f) for f in (history_files if history_files is not None else get_settings().history_files))
    app = FastAPI(title="PowerSense replay of ODRÉ eco2mix-national-tr", version="0.1.0")

    @app.get(RECORDS_PATH)
    def records(
        dataset: str,
        where: str | None = None,
        order_by: str | None = None,
        limit: int = Query(default=10),
        offset: int = Query(default=0),
        select: str | None = None,
    ) -> JSONResponse:
        if dataset != DATASET:
            return _error(404, "NotFound", f"Unknown dataset: {dataset}")
        if not 0 <= limit <= MAX_LIMIT:
            return _error(400, "InvalidRESTParameterError",
                          f"Invalid value for limit API parameter: {limit} was found but -1 <= limit <= 100 "
                          "is expected.")
        if offset < 0:
            return _error(400, "InvalidRESTParameterError",
                          f"Invalid value for offset API parameter: {offset} was found but >= 0 is expected.")
        if offset + limit > MAX_WINDOW:
            return _error(400, "InvalidRESTParameterError",
                          f"Invalid value for sum of offset + limit API parameter: {offset + limit} was found "
                          f"but <= {MAX_WINDOW} is expected.")
        data = _load(files, pad_spring_forward)
        descending = False
        if order_by:
            parts = order_by.strip().lower().split()
            if parts[0] != "date_heure" or len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
                return _error(400, "ODSQLError", f"unsupported order_by: {order_by!r}")
            descending = len(parts) == 2 and parts[1] == "desc"
        fields = data.fields
        if select and select.strip() != "*":
            fields = [f.strip() for f in select.split(",") if f.strip()]
            unknown = [f for f in fields if f not in data.fields]
            if unknown:
                return _error(400, "ODSQLError", f"Unknown field: {unknown[0]}")
        try:
            lo, hi, text = _plan(where)
        except _QueryError as exc:
            return _error(400, "ODSQLError", str(exc))
        hi = min(hi, int(pd.Timestamp(clock.now()).value))  # the future is not published yet
        a = int(np.searchsorted(data.ts, lo, side="left"))
        b = int(np.searchsorted(data.ts, hi, side="right"))
        idx = np.arange(a, max(a, b))
        for field, op, literal in text:
            col = data.nature[idx] if field == "nature" else np.full(len(idx), "France", dtype=object)
            idx = idx[(col == literal) if op == "=" else (col != literal)]
        if descending:
            idx = idx[::-1]
        page = idx[offset:offset + limit]
        return JSONResponse({"total_count": int(len(idx)), "results": data.records(page, fields)})

    return app


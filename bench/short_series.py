"""Short series: is the issued forecast of a series with a few months of history ever worse than seasonal naive?

``python -m bench.short_series`` (≈ 5 min on 2 cores). The generic ``timestamp,value`` path (UTC, no holiday
calendar, 30 min) on 23 windows of the shipped national load 2017–2019, one every 45 days: 63 days of history, then
21 days of test (``make evaluate``'s backtest: one origin a day at 12:00, the model trained once on the history with
its holdout of a quarter of it, ~15 days; ``--retrain-days N``: retrained every N days with the promotion rule, as
production does daily; ``--history-days`` / ``--every-days``: other histories, e.g. ``182`` / ``75``, 12 half-year
windows; ``--step-minutes 60``: the series hourly, evaluated without ``--resolution``). Per window and D+k, the
issued forecast's MAPE against seasonal naive's; printed as JSON with the mean over windows and how many
window × D+k cells are worse / better than naive.
The shipped load stands in for a series the model was not built for (no holidays, no time zone); it is real data,
not a simulation. ``--data FILE…`` runs the same windows on another series (e.g. NESO's demand data for Great
Britain, with ``--timezone Europe/London --holidays GB-ENG``; a generic file's ``--columns`` and
``--naive-timestamps`` as ``evaluate`` takes them). Findings, the fix and the fixes tried and not kept:
README, *Never worse than naive*.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.detection.evaluate import default_files, no_shipped_history
from shared.errors import BadRequestError, PowerSenseError, run_cli
from shared.forecasting.gate import strict
from shared.ingest.history import (
    add_file_arguments,
    check_calendar_options,
    columns_option,
    naive_tz_option,
    read_history,
)
from shared.timeutil import iso_day

HISTORY_DAYS, TEST_DAYS, EVERY_DAYS, FIRST_START = 63, 21, 45, "2017-01-05"
END = pd.Timestamp("2020-01-01", tz="UTC")  # every window ends before it
DAYS = [f"D+{k}" for k in range(1, 8)]


def windows(history_days: int = HISTORY_DAYS, every_days: int = EVERY_DAYS,
            first_start: str = FIRST_START, end: pd.Timestamp = END) -> list[pd.Timestamp]:
    """Start of each window (UTC midnight): from ``first_start`` every ``every_days``, while history and test days
    end before ``end`` (default 2020: the windows stay clear of the 2020 lockdowns and of the 2019–2023 reports'
    test years; another series' files set their own, ``--end``)."""
    last = end - pd.Timedelta(days=history_days + TEST_DAYS)
    return list(pd.date_range(pd.Timestamp(first_start, tz="UTC"), last, freq=f"{every_days}D"))


def run_window(load: pd.DataFrame, start: pd.Timestamp, workdir: Path, retrain_days: int = 0,
               history_days: int = HISTORY_DAYS, step_minutes: int = 30,
               calendar: list[str] | None = None) -> dict[str, Any]:
    """One window through ``shared.forecasting.evaluate`` (in process); MAPE % of the issued forecast and naive.

    ``retrain_days``: the backtest's retrain cadence inside the 21 test days (0 = trained once, on the history).
    ``step_minutes`` 60: the series written hourly (its :00 values) and evaluated without ``--resolution``, as a
    user of an hourly series would (the grid step is inferred: 60). ``calendar``: ``evaluate``'s ``--timezone`` /
    ``--holidays`` arguments (default none: UTC days, no holidays)."""
    from shared.forecasting import evaluate

    end, test0 = start + pd.Timedelta(days=history_days + TEST_DAYS), start + pd.Timedelta(days=history_days)
    part = load[(load["timestamp"] >= start) & (load["timestamp"] < end)
                & (load["timestamp"].dt.minute % step_minutes == 0)].copy()
    part["timestamp"] = part["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    csv, out = workdir / f"{start:%Y%m%d}.csv", workdir / f"{start:%Y%m%d}"
    part.to_csv(csv, index=False)
    with contextlib.redirect_stdout(io.StringIO()):
        rc = evaluate.main(["--data", str(csv), *(["--resolution", "30"] if step_minutes == 30 else []),
                            "--test-start", f"{test0:%Y-%m-%d}", "--test-end", f"{end:%Y-%m-%d}", "--out", str(out),
                            "--no-progress", "--retrain-days", str(retrain_days), *(calendar or [])])
    if rc:
        # evaluate printed its own one-line error just above; this line says which window it was. Its exit status
        # is kept: 2 a bad input (a history too short, an unknown zone), 1 any other error it reports
        message = (f"evaluate failed on the window from {start:%Y-%m-%d} ({history_days} days of history, test "
                   f"period {test0:%Y-%m-%d} … {end:%Y-%m-%d}): its error is the line above")
        raise BadRequestError(message) if rc == 2 else PowerSenseError(message)
    models = json.loads((out / "forecast_eval.json").read_text())["models"]
    return {"start": f"{start:%Y-%m-%d}", **{d: _cell(models, d) for d in DAYS}}


def _cell(models: dict[str, Any], day: str) -> dict[str, Any]:
    """One window's figures at ``day`` (D+k) from evaluate's report; a null coverage keeps evaluate's reason."""
    ours = models["powersense"][day]
    cell = {"powersense": ours["mape"], "seasonal_naive": models["seasonal_naive"][day]["mape"],
            "coverage": ours["coverage"]}
    if ours.get("coverage_reason"):
        cell["coverage_reason"] = ours["coverage_reason"]
    return cell


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean MAPE per D+k over the windows, the window × D+k cells worse / better than naive, and the 80 %
    interval coverage (mean per D+k; cells inside 75–85 %; a window's three test weeks are few origins)."""
    def grid(key: str) -> np.ndarray:
        # a figure evaluate could not compute is null in its report: NaN here, left out of every mean and count
        return np.array([[np.nan if r[d].get(key) is None else r[d][key] for d in DAYS] for r in rows], dtype=float)

    def per_day(x: np.ndarray) -> dict[str, float | None]:
        # the mean over the windows with a figure; over none it is null (strict JSON has no NaN)
        return {d: round(float(np.mean(col[np.isfinite(col)])), 3) if np.isfinite(col).any() else None
                for d, col in zip(DAYS, x.T, strict=True)}

    def none_reason(x: np.ndarray, what: str) -> dict[str, str]:
        # beside each null mean, why it is null (as evaluate writes a null coverage's coverage_reason)
        return {d: f"no window has a {what} at {d}" for d, col in zip(DAYS, x.T, strict=True)
                if not np.isfinite(col).any()}

    p, n, c = grid("powersense"), grid("seasonal_naive"), grid("coverage")
    excess = p - n
    summary: dict[str, Any] = {
        "windows": len(rows), "mean_mape_powersense": per_day(p), "mean_mape_seasonal_naive": per_day(n),
        "cells_worse_than_naive": int((p > n + 1e-9).sum()), "cells_better_than_naive": int((p < n - 1e-9).sum()),
        "cells": int(p.size),
        "largest_excess_pp": round(float(np.max(excess[np.isfinite(excess)])), 2) if np.isfinite(excess).any()
        else None,
        "mean_coverage": per_day(c), "coverage_cells_in_75_85": int(((c >= 0.75) & (c <= 0.85)).sum()),
        "coverage_cells_above_85": int((c > 0.85).sum()), "coverage_cells_below_75": int((c < 0.75).sum())}
    reasons = {"mean_mape_powersense_reason": none_reason(p, "MAPE"),
               "mean_mape_seasonal_naive_reason": none_reason(n, "MAPE"),
               "mean_coverage_reason": none_reason(c, "coverage (an 80 % interval for every target of the horizon)")}
    summary.update({k: v for k, v in reasons.items() if v})
    if summary["largest_excess_pp"] is None:
        summary["largest_excess_pp_reason"] = "no window × D+k cell has both MAPEs"
    return summary


def check_options(args: argparse.Namespace) -> None:
    """A :class:`BadRequestError` (one line) for an option value argparse accepts but the windows cannot use:
    ``--every-days 0`` divided by zero, a negative one gave "no window … ends before …" (the wrong cause), an
    empty ``--timezone`` / ``--holidays`` was dropped without a word."""
    for option, value, least in (("--history-days", args.history_days, 1), ("--every-days", args.every_days, 1),
                                 ("--retrain-days", args.retrain_days, 0)):
        if value < least:
            raise BadRequestError(f"{option} must be ≥ {least} (got {value})")
    check_calendar_options(args.timezone, args.holidays)


def main(argv: list[str] | None = None) -> int:
    """Run every window; print the per-window figures and the summary (strict JSON). A bad input (a missing file, an
    unknown column, an option out of range, a window evaluate refuses) ends with one line on stderr and exit status
    2, as ``evaluate``'s does."""
    return run_cli("bench.short_series", _main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.short_series", description=__doc__.split("\n")[0])
    parser.add_argument("--retrain-days", type=int, default=0,
                        help="retrain every N days inside each window's test days, with the promotion rule, as "
                             "production does daily (default 0: trained once on the history; 7 ≈ 3× the time)")
    parser.add_argument("--history-days", type=int, default=HISTORY_DAYS,
                        help=f"days of history before each window's test days (default {HISTORY_DAYS})")
    parser.add_argument("--every-days", type=int, default=EVERY_DAYS,
                        help=f"days between window starts (default {EVERY_DAYS})")
    parser.add_argument("--first-start", type=iso_day, default=FIRST_START,
                        help=f"first window's start (default {FIRST_START}; longer histories "
                             "need earlier starts to get several windows before 2020)")
    parser.add_argument("--end", type=iso_day, default=None,
                        help="every window ends before this date (default 2020-01-01; e.g. 2024-01-01 for another "
                             "series' files of 2022-2023 with --first-start 2022-01-05)")
    parser.add_argument("--step-minutes", type=int, choices=(30, 60), default=30,
                        help="the series' step: 30 (default) or 60 (hourly, its :00 values; evaluated without "
                             "--resolution, the grid step inferred)")
    parser.add_argument("--data", nargs="+", type=Path, default=None,
                        help="another series' history files (any format `evaluate --data` reads, e.g. NESO's "
                             "demand data for Great Britain) instead of the shipped national load; same windows")
    parser.add_argument("--timezone", default=None, help="evaluate's --timezone for every window (default: UTC)")
    parser.add_argument("--holidays", default=None, help="evaluate's --holidays for every window (default: none)")
    add_file_arguments(parser)
    args = parser.parse_args(argv)
    check_options(args)
    end = pd.Timestamp(args.end, tz="UTC") if args.end else END
    starts = windows(args.history_days, args.every_days, args.first_start, end)
    if not starts:
        parser.error(f"no window of {args.history_days} + {TEST_DAYS} days from {args.first_start} ends before "
                     f"{end:%Y-%m-%d}")
    calendar = [*(["--timezone", args.timezone] if args.timezone else []),
                *(["--holidays", args.holidays] if args.holidays else [])]
    # the windows are written as UTC timestamp,value files: a generic file is read here the way evaluate reads it
    try:
        columns = columns_option(args)
    except BadRequestError as exc:
        parser.error(str(exc))
    files = args.data or default_files(starts[0], end - pd.Timedelta(days=1), 0)
    if not files:
        raise no_shipped_history(starts[0], end)
    load = read_history(files, naive_tz=naive_tz_option(args, args.timezone or "UTC"), columns=columns)
    load = load[load["ts"].dt.minute.isin([0, 30])][["ts", "consommation"]].rename(
        columns={"ts": "timestamp", "consommation": "value"})
    rows = []
    with tempfile.TemporaryDirectory(prefix="powersense-short-series-") as tmp:
        for i, start in enumerate(starts, start=1):
            rows.append(run_window(load, start, Path(tmp), args.retrain_days, args.history_days, args.step_minutes,
                                   calendar))
            print(f"window {i}/{len(starts)} from {start:%Y-%m-%d}: D+1 {rows[-1]['D+1']}, D+7 {rows[-1]['D+7']}",
                  file=sys.stderr, flush=True)
    doc = {"what": (__doc__ or "").split("\n")[0], "retrain_days": args.retrain_days,
           "history_days": args.history_days, "every_days": args.every_days, "step_minutes": args.step_minutes,
           "first_start": args.first_start, "end": f"{end:%Y-%m-%d}",
           "data": [str(f) for f in args.data] if args.data else "shipped",
           "calendar": calendar, "summary": summarize(rows),
           "windows": rows}
    # strict JSON: a figure that cannot be computed is null (with its reason), never NaN
    print(json.dumps(strict(doc), indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

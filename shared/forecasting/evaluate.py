"""Backtest harness (``make evaluate``): rolling daily origins over a test period.

``python -m shared evaluate [--data FILE …] [--train-start D] [--test-start D] [--test-end D] [--out DIR]``

* Input: any files in the shipped eco2mix CSV format, or generic ``timestamp,value`` CSVs.
* The model is trained once on data before the test period (``--retrain-days N`` retrains every N days
  inside it, each time only on data before the retraining date). Its last ``holdout`` days are kept
  out of training and used to calibrate the 80 % intervals (conformal), exactly like production.
* One origin per day at 12:00 Europe/Paris; each forecast only reads data strictly before its origin.
  D+k = the k-th local calendar day after the origin's day (D+1 is RTE's J-1 information horizon).
* Scores per horizon day: MAPE, MAE, RMSE, bias (mean forecast − actual, MW) and interval coverage,
  for ``powersense``, ``seasonal_naive`` and, where the file has it, RTE's ``prevision_j1`` (``rte_j1``, D+1).
* Writes ``DIR/forecast_eval.json`` and ``DIR/forecast_eval.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.features import TZ, build_grid
from shared.forecasting import baseline
from shared.settings import REPO_ROOT, Settings, get_settings

HORIZON_DAYS = 7


def local_midnight(day: str | pd.Timestamp) -> pd.Timestamp:
    """A local calendar date (YYYY-MM-DD) as the UTC instant of its Paris midnight."""
    ts = pd.Timestamp(day)
    if ts.tzinfo is None:
        ts = ts.tz_localize(TZ)
    return ts.tz_convert("UTC")


def daily_origins(test_start: pd.Timestamp, test_end: pd.Timestamp, hour: int = 12) -> pd.DatetimeIndex:
    """One origin per local day at ``hour``:00 Europe/Paris, from the day before ``test_start``.

    Starting the day before makes D+1 of the first origin the first test day; origins whose D+1…D+7
    fall entirely after ``test_end`` are not issued.
    """
    first = (test_start.tz_convert(TZ).normalize() - pd.Timedelta(days=1)).tz_localize(None)
    last = (test_end.tz_convert(TZ).normalize() - pd.Timedelta(days=2)).tz_localize(None)
    days = pd.date_range(first, last, freq="D")
    return pd.DatetimeIndex([(d + pd.Timedelta(hours=hour)).tz_localize(TZ) for d in days]).tz_convert("UTC")


def horizon_day(fc: pd.DataFrame) -> pd.Series:
    """D+k: local calendar days between the origin's day and the target's day."""
    o = pd.DatetimeIndex(fc["origin"]).tz_convert(TZ).normalize().tz_localize(None)
    t = pd.DatetimeIndex(fc["ts"]).tz_convert(TZ).normalize().tz_localize(None)
    return pd.Series(((t - o) / pd.Timedelta(days=1)).round().astype(int), index=fc.index)


def score(fc: pd.DataFrame, actual: pd.DataFrame, test_start: pd.Timestamp, test_end: pd.Timestamp,
          days: range = range(1, HORIZON_DAYS + 1)) -> dict[str, dict[str, float | int | None]]:
    """Metrics per horizon day over targets inside the test period with a known actual."""
    j = fc.merge(actual[["ts", "value"]], on="ts", how="inner")
    j = j[(j["ts"] >= test_start) & (j["ts"] < test_end)].dropna(subset=["value", "yhat"])
    j = j.assign(hday=horizon_day(j))
    out: dict[str, dict[str, float | int | None]] = {}
    for k in days:
        g = j[j["hday"] == k]
        if g.empty:
            continue
        err = g["yhat"] - g["value"]
        has_iv = "lower" in g and g["lower"].notna().all() and g["upper"].notna().all()
        cov = float(((g["value"] >= g["lower"]) & (g["value"] <= g["upper"])).mean()) if has_iv else None
        out[f"D+{k}"] = {
            "mape": round(float((err.abs() / g["value"].abs()).mean() * 100), 3),
            "mae": round(float(err.abs().mean()), 1),
            "rmse": round(float(np.sqrt((err**2).mean())), 1),
            "bias": round(float(err.mean()), 1),
            "coverage": round(cov, 3) if cov is not None else None,
            "n": int(len(g)),
        }
    return out


def load_data(files: list[Path], resolution_min: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(consumption grid, RTE prevision_j1 grid or None) from history files."""
    from shared.ingest.history import read_history

    h = read_history(files)
    grid = build_grid(h[["ts", "consommation"]].rename(columns={"consommation": "value"}), resolution_min,
                      max_interp_steps=0)[["ts", "value"]]
    rte = None
    if "prevision_j1" in h.columns and h["prevision_j1"].notna().any():
        rte = build_grid(h[["ts", "prevision_j1"]].rename(columns={"prevision_j1": "value"}), resolution_min,
                         max_interp_steps=0)[["ts", "value"]]
    return grid, rte


def backtest(
    grid: pd.DataFrame,
    rte: pd.DataFrame | None,
    train_start: pd.Timestamp,
    test_start: pd.Timestamp,
    test_end: pd.Timestamp,
    settings: Settings,
    retrain_days: int = 0,
    origin_hour: int = 12,
    progress: bool = True,
    perfect_weather: bool = False,
) -> dict[str, Any]:
    """Run the rolling-origin backtest; returns the report dict plus frames under ``_frames``.

    ``perfect_weather`` is a look-ahead *experiment* (observed temperature at the target time): its model is
    reported as ``powersense_perfect_weather`` and must never be read as the product's accuracy.
    """
    from tqdm import tqdm

    from shared.forecasting import model as fm
    from shared.forecasting.service import model_config, train_and_calibrate

    cfg = model_config(settings)
    cfg.perfect_weather = perfect_weather
    name = "powersense_perfect_weather" if perfect_weather else "powersense"
    step = pd.Timedelta(minutes=cfg.resolution_min)
    origins = daily_origins(test_start, test_end, origin_hour)
    steps = int(pd.Timedelta(days=HORIZON_DAYS + 1, hours=12) / step)  # to the end of D+7 from noon
    # training cuts: the first origin (so even its D+0 hours were never seen), then every ``retrain_days``;
    # each model trains on data strictly before its cut and serves only origins at or after it
    cut0 = origins[0]
    train_dates = [cut0]
    if retrain_days > 0:
        d = cut0 + pd.Timedelta(days=retrain_days)
        while d < test_end:
            train_dates.append(d)
            d += pd.Timedelta(days=retrain_days)
    fcs, timings, holdouts = [], [], []
    bar = tqdm(total=len(origins) + len(train_dates), desc="backtest", unit="step", disable=not progress,
               file=sys.stderr)
    for i, td in enumerate(train_dates):
        window_start = train_start + (td - cut0)
        train = grid[(grid["ts"] >= window_start) & (grid["ts"] < td)]
        bar.set_postfix_str(f"training on {window_start.tz_convert(TZ):%Y-%m-%d}…{td.tz_convert(TZ):%Y-%m-%d %H:%M}")
        t0 = time.perf_counter()
        m, holdout = train_and_calibrate(train, settings, cfg)
        timings.append(round(time.perf_counter() - t0, 2))
        holdouts.append(holdout)
        bar.update(1)
        nxt = train_dates[i + 1] if i + 1 < len(train_dates) else origins[-1] + pd.Timedelta(days=1)
        mine = origins[(origins >= td) & (origins < nxt)]
        for chunk in np.array_split(np.arange(len(mine)), max(1, len(mine) // 30)):
            if len(chunk) == 0:
                continue
            sel = mine[chunk]
            fc = fm.predict(m, grid[grid["ts"] < sel.max()], sel, horizon_end=step * steps)
            fcs.append(fc)
            bar.update(len(sel))
    bar.close()
    model_fc = pd.concat(fcs, ignore_index=True)
    # seasonal naive, with intervals calibrated the same way (on the last holdout before the test)
    hold_start = cut0 - pd.Timedelta(days=settings.forecast_holdout_days)
    hold_origins = daily_origins(hold_start + pd.Timedelta(days=1), cut0, origin_hour)
    hold_origins = hold_origins[hold_origins < cut0]
    hold_naive = baseline.seasonal_naive_many(grid[grid["ts"] < cut0], hold_origins, steps, step)
    hold_naive = hold_naive[hold_naive["ts"] < cut0]
    naive_cal = baseline.relative_error_quantiles(hold_naive, grid, cfg.interval_level)
    naive_fc = baseline.apply_intervals(baseline.seasonal_naive_many(grid, origins, steps, step), naive_cal)
    models = {
        name: score(model_fc, grid, test_start, test_end),
        "seasonal_naive": score(naive_fc, grid, test_start, test_end),
    }
    rte_fc = None
    if rte is not None:
        # RTE's J-1 forecast for the next local day, as published the day before (same horizon as D+1)
        d1 = model_fc.loc[horizon_day(model_fc) == 1, ["origin", "ts"]]
        rte_fc = d1.merge(rte.rename(columns={"value": "yhat"}), on="ts", how="inner")
        if rte_fc["yhat"].notna().any():
            models["rte_j1"] = score(rte_fc, grid, test_start, test_end, days=range(1, 2))
    return {
        "models": models,
        "test_period": [test_start.isoformat(), test_end.isoformat()],
        "train_window": [train_start.isoformat(), cut0.isoformat()],  # data strictly before the first origin
        "holdout_days": settings.forecast_holdout_days,
        "retrain_days": retrain_days,
        "origins": {"count": int(len(origins)), "local_hour": origin_hour, "first": origins[0].isoformat(),
                    "last": origins[-1].isoformat()},
        "resolution_min": cfg.resolution_min,
        "model_config": asdict(cfg),
        "train_seconds": timings,
        "holdout_metrics": holdouts[0].get("metrics") if holdouts else None,
        "experiment": ("perfect weather forecast: observed temperature at target times (LOOK-AHEAD, not the "
                       "product)") if perfect_weather else None,
        "_frames": {"powersense": model_fc, "seasonal_naive": naive_fc, "rte_j1": rte_fc, "actual": grid},
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """Forecast vs actual over a sample week (with intervals) and MAPE by horizon day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = report["_frames"]
    fc, actual = frames["powersense"], frames["actual"]
    origins = pd.DatetimeIndex(fc["origin"].unique())
    o = origins[min(len(origins) - 1, len(origins) // 3)]  # a week in the test period, same choice every run
    one = fc[fc["origin"] == o]
    act = actual[(actual["ts"] >= o - pd.Timedelta(days=2)) & (actual["ts"] < one["ts"].max())]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8))
    ax1.plot(act["ts"], act["value"] / 1000, color="black", lw=1, label="actual")
    ax1.plot(one["ts"], one["yhat"] / 1000, color="tab:blue", lw=1.2, label="PowerSense forecast")
    ax1.fill_between(one["ts"], one["lower"] / 1000, one["upper"] / 1000, color="tab:blue", alpha=0.2,
                     label=f"{int(report['model_config']['interval_level'] * 100)} % interval")
    nv = frames["seasonal_naive"]
    nv = nv[nv["origin"] == o]
    ax1.plot(nv["ts"], nv["yhat"] / 1000, color="tab:orange", lw=0.8, alpha=0.8, label="seasonal naive")
    ax1.axvline(o, color="grey", ls="--", lw=0.8)
    ax1.set_ylabel("GW")
    ax1.set_title(f"France consumption: forecast issued {o.tz_convert(TZ):%Y-%m-%d %H:%M} Europe/Paris")
    ax1.legend(loc="upper right", fontsize=8)
    days = [f"D+{k}" for k in range(1, HORIZON_DAYS + 1)]
    width = 0.27
    first = "powersense_perfect_weather" if "powersense_perfect_weather" in report["models"] else "powersense"
    for i, name in enumerate((first, "seasonal_naive", "rte_j1")):
        res = report["models"].get(name)
        if not res:
            continue
        vals = [res.get(d, {}).get("mape", np.nan) for d in days]
        ax2.bar(np.arange(len(days)) + (i - 1) * width, vals, width, label=name)
    ax2.set_xticks(range(len(days)), days)
    ax2.set_ylabel("MAPE %")
    tp = [pd.Timestamp(x).tz_convert(TZ) for x in report["test_period"]]
    tw = [pd.Timestamp(x).tz_convert(TZ) for x in report["train_window"]]
    ax2.set_title(f"Error by horizon: test {tp[0]:%Y-%m-%d} … {tp[1] - pd.Timedelta(days=1):%Y-%m-%d}, "
                  f"trained on {tw[0]:%Y-%m-%d} … {tw[1]:%Y-%m-%d %H:%M} (Europe/Paris)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(report: dict[str, Any]) -> str:
    """Markdown table of the report (what the README shows)."""
    lines = ["| model | horizon | MAPE % | MAE MW | RMSE MW | bias MW | 80 % coverage |",
             "|---|---|---|---|---|---|---|"]
    for name, res in report["models"].items():
        for d, m in res.items():
            cov = "–" if m["coverage"] is None else f"{m['coverage'] * 100:.1f} %"
            lines.append(f"| {name} | {d} | {m['mape']:.2f} | {m['mae']:.0f} | {m['rmse']:.0f} | {m['bias']:+.0f} "
                         f"| {cov} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see module docstring)."""
    settings = get_settings()
    p = argparse.ArgumentParser(prog="python -m shared evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", type=Path, default=None,
                   help="eco2mix CSV(.gz) or timestamp,value CSV files (default: the shipped eco2mix history)")
    p.add_argument("--test-start", default="2023-01-01", help="first local day of the test period")
    p.add_argument("--test-end", default="2024-01-01", help="local day after the test period")
    p.add_argument("--train-start", default=None,
                   help=f"first local day of training (default: test start − {settings.forecast_train_days} days)")
    p.add_argument("--retrain-days", type=int, default=0, help="retrain every N days inside the test period (0 = once)")
    p.add_argument("--origin-hour", type=int, default=12, help="local hour of the daily forecast origin")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--perfect-weather", action="store_true",
                   help="EXPERIMENT: the model sees the observed future temperature (look-ahead); own output files")
    a = p.parse_args(argv)
    test_start, test_end = local_midnight(a.test_start), local_midnight(a.test_end)
    train_start = (local_midnight(a.train_start) if a.train_start
                   else test_start - pd.Timedelta(days=settings.forecast_train_days))
    files = a.data or settings.history_files
    # only the years that matter are read from the shipped history (it starts in 2000)
    if a.data is None:
        files = [f for f in files if train_start.year - 1 <= int(f.name[-11:-7]) <= test_end.year]
    print(f"test period {test_start.tz_convert(TZ):%Y-%m-%d} … {test_end.tz_convert(TZ):%Y-%m-%d} (local, end "
          f"excluded); training window {train_start.tz_convert(TZ):%Y-%m-%d} … the first origin "
          f"({(test_start.tz_convert(TZ) - pd.Timedelta(days=1)):%Y-%m-%d} {a.origin_hour}:00; the last "
          f"{settings.forecast_holdout_days} days = calibration holdout); origins daily {a.origin_hour}:00 "
          f"Europe/Paris; files: {len(files)}", flush=True)
    grid, rte = load_data(files, settings.forecast_resolution_min)
    report = backtest(grid, rte, train_start, test_start, test_end, settings, a.retrain_days, a.origin_hour,
                      progress=not a.no_progress, perfect_weather=a.perfect_weather)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "forecast_eval_perfect_weather" if a.perfect_weather else "forecast_eval"
    plot(report, a.out / f"{stem}.png")
    report.pop("_frames")
    (a.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    if a.perfect_weather:
        print("EXPERIMENT with look-ahead (observed future temperature): not the product's accuracy")
    print(f"training time per fit: {report['train_seconds']} s; wrote {a.out / (stem + '.json')} and "
          f"{a.out / (stem + '.png')}")
    return 0

"""Side screens: would another temperature input, or cloud cover, explain load the shipped temperature does not?

``python -m bench.temperature_response`` (≈ 15 s). Three look-ahead screens with least-squares models on the
shipped national load (eco2mix 2020–2023, local days with at least 46 valid half-hours; the spring-2020 lockdown
left out of training) and the shipped Enedis smoothed realised temperature (``shared.weather.features.HDD_BASE_C`` /
``CDD_BASE_C`` degrees). Every weather input is *observed*: an upper bound on what it is worth, not the product's
model. They ask whether the perfect-temperature D+1 gap to RTE's J-1 (issue #12 (a)) could come from the
temperature's time response or from cloud cover:

1. **slower smoothing** — daily mean load on the calendar and heating / cooling degrees (and heating degrees
   squared) of the Enedis series, plus the same of the series smoothed again with a time constant of 48–240 h;
2. **faster temperature** — the Enedis smoothing (an exponential filter with τ ≈ 24 h, README *Weather features*)
   inverted to an estimate of the raw temperature, smoothed again at 3, 6 or 12 h, its degrees added;
3. **cloud cover and wind for the intraday shape** — per half-hour of the local day, the load divided by its day's
   mean, on the calendar, the half-hour's and the day's heating degrees and its cooling degrees, plus the daily
   national ``nebulosity_weighted`` / ``wind_weighted`` of ``daily_national_weather_netload_*`` (data/weather
   README, source 4; definitions undocumented, to 2023-10-01).

Scored out of sample as MAPE (%) of the daily mean (1, 2; also with a crude level correction: minus 0.7 × the
residual of two days before, and minus the mean residual of days −2 … −4) and of the shape (3).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.other_weather import ECO2MIX, calendar_columns, daily_weather
from shared.calendar import TZ
from shared.features import WEATHER_DIR
from shared.ingest.history import read_history
from shared.weather.enedis import read_enedis_dir
from shared.weather.features import CDD_BASE_C, HDD_BASE_C, SMOOTHING_TAU_H, smooth

LOCKDOWN = ("2020-03-15", "2020-07-01")
# (train from, train to, test from, test to): training starts after the 2020 lockdown; the last two rows test
# across the sobriety drop of autumn 2022, which no temperature explains (the level corrections absorb it)
DAILY_SPLITS = (("2020-07-01", "2021-12-31", "2022-01-01", "2022-06-30"),
                ("2020-07-01", "2022-09-30", "2022-10-01", "2023-03-31"),
                ("2020-07-01", "2022-12-31", "2023-01-01", "2023-12-31"))
SHAPE_SPLITS = (("2020-07-01", "2021-12-31", "2022-01-01", "2022-06-30"),
                ("2020-07-01", "2022-09-30", "2022-10-01", "2023-09-30"))


def load_and_temperature() -> tuple[pd.Series, pd.Series]:
    """The shipped half-hourly load 2020–2023 (valid values at :00 and :30) and the Enedis temperature, UTC."""
    hist = read_history([ECO2MIX / f"eco2mix_national_{y}.csv.gz" for y in range(2020, 2024)])
    load = hist[hist["consommation"] > 0].set_index("ts")["consommation"]
    load = load[load.index.minute.isin([0, 30])]
    return load, read_enedis_dir(WEATHER_DIR).set_index("ts")["realised"]


def smoothed(series: pd.Series, tau_h: float) -> pd.Series:
    """``series`` through the product's forward exponential smoothing (:func:`shared.weather.features.smooth`)."""
    return pd.Series(smooth(series.index, series.to_numpy(), tau_h), index=series.index)


def local_date(index: pd.DatetimeIndex) -> np.ndarray:
    """Local calendar day of each UTC instant."""
    return np.asarray(index.tz_convert(TZ).date)


def daily_frame(load: pd.Series, temps: dict[str, pd.Series]) -> pd.DataFrame:
    """Daily mean load and, per named temperature, the day's mean heating / cooling degrees."""
    daily = load.groupby(local_date(pd.DatetimeIndex(load.index))).agg(["mean", "count"])
    out = pd.DataFrame({"load": daily.loc[daily["count"] >= 46, "mean"]})
    for name, s in temps.items():
        day = local_date(pd.DatetimeIndex(s.index))
        out[f"hdd_{name}"] = np.maximum(HDD_BASE_C - s, 0).groupby(day).mean()
        out[f"cdd_{name}"] = np.maximum(s - CDD_BASE_C, 0).groupby(day).mean()
    out.index = pd.to_datetime(out.index)
    return out.dropna()


def daily_scores(df: pd.DataFrame, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Out-of-sample daily-mean MAPE (%) per split, plain and with the two crude level corrections."""
    def design(d: pd.DataFrame) -> np.ndarray:
        cols = calendar_columns(pd.DatetimeIndex(d.index), harmonics=2)
        for n in names:
            cols += [d[f"hdd_{n}"].to_numpy(), d[f"cdd_{n}"].to_numpy(), d[f"hdd_{n}"].to_numpy() ** 2]
        return np.column_stack(cols)

    train_ok = ~((df.index >= LOCKDOWN[0]) & (df.index < LOCKDOWN[1]))
    out = {}
    for a, b, c, d in DAILY_SPLITS:
        train, test = df[train_ok].loc[a:b], df.loc[c:d]
        coef, *_ = np.linalg.lstsq(design(train), train["load"].to_numpy(), rcond=None)
        resid = pd.Series(test["load"].to_numpy() - design(test) @ coef, index=test.index)
        actual = test["load"].to_numpy()
        variants = {"plain": resid, "level_0.7_lag2": resid - 0.7 * resid.shift(2).fillna(0.0),
                    "level_mean_lag2_4": resid - resid.shift(2).rolling(3).mean().fillna(0.0)}
        out[f"{c} … {d}"] = {k: round(float(np.mean(np.abs(v) / actual) * 100), 2) for k, v in variants.items()}
    return out


def shape_scores(load: pd.Series, temp: pd.Series, extra: Sequence[str]) -> dict[str, float]:
    """Out-of-sample MAPE (%) of the intraday shape (load / its day's mean), one regression per half-hour slot."""
    df = pd.DataFrame({"load": load}).join(temp.rename("t"), how="inner")
    local = pd.DatetimeIndex(df.index).tz_convert(TZ)
    df["date"], df["slot"] = pd.to_datetime(local.date), local.hour * 2 + local.minute // 30
    count = df.groupby("date")["load"].transform("count")
    df = df[count >= 46].copy()
    df["shape"] = df["load"] / df.groupby("date")["load"].transform("mean")
    df["t_day"] = df.groupby("date")["t"].transform("mean")
    df = df.join(daily_weather()[["nebulosity_weighted", "wind_weighted"]], on="date").dropna()
    days = pd.DatetimeIndex(df["date"])

    def design(sel: np.ndarray) -> np.ndarray:
        d = df[sel]
        cols = calendar_columns(days[sel], harmonics=2)[:-2]  # the break and August are daily levels, not shapes
        cols += [np.maximum(HDD_BASE_C - d["t"], 0).to_numpy(), np.maximum(HDD_BASE_C - d["t_day"], 0).to_numpy(),
                 np.maximum(d["t"] - CDD_BASE_C, 0).to_numpy()]
        return np.column_stack(cols + [d[c].to_numpy() for c in extra])

    train_ok = ~((days >= LOCKDOWN[0]) & (days < LOCKDOWN[1]))
    out = {}
    for a, b, c, d in SHAPE_SPLITS:
        errs = []
        for s in range(48):
            tr = (df["slot"] == s).to_numpy() & train_ok & (days >= a) & (days <= b)
            te = (df["slot"] == s).to_numpy() & (days >= c) & (days <= d)
            coef, *_ = np.linalg.lstsq(design(tr), df.loc[tr, "shape"].to_numpy(), rcond=None)
            actual = df.loc[te, "shape"].to_numpy()
            errs.append(np.abs(actual - design(te) @ coef) / actual)
        out[f"{c} … {d}"] = round(float(np.concatenate(errs).mean() * 100), 3)
    return out


def main() -> int:
    """Print the three screens' tables (JSON)."""
    load, temp = load_and_temperature()
    a = 1 - np.exp(-0.5 / SMOOTHING_TAU_H)
    raw = ((temp - (1 - a) * temp.shift(1)) / a).fillna(temp)  # the Enedis filter inverted (noisy: 0.1 °C steps)
    temps = {"enedis": temp, **{f"slow{h}": smoothed(temp, h) for h in (48, 72, 120, 240)},
             **{f"fast{h}": smoothed(raw, h) for h in (3, 6, 12)}}
    daily = daily_frame(load, temps)
    doc = {
        "what": (__doc__ or "").split("\n")[0],
        "look_ahead": True,
        "slower_smoothing": {" + ".join(n): daily_scores(daily, n) for n in
                             (["enedis"], ["enedis", "slow48"], ["enedis", "slow72"], ["enedis", "slow120"],
                              ["enedis", "slow240"], ["enedis", "slow72", "slow240"])},
        "faster_temperature": {" + ".join(n): daily_scores(daily, n) for n in
                               (["enedis"], ["enedis", "fast3"], ["enedis", "fast6"], ["enedis", "fast12"],
                                ["fast6"], ["fast12"])},
        "intraday_shape": {" + ".join(["temperature", *x]): shape_scores(load, temp, x) for x in
                           ([], ["nebulosity_weighted"], ["wind_weighted"], ["nebulosity_weighted", "wind_weighted"])},
    }
    print(json.dumps(doc, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Side experiment: do national wind and cloud cover say anything about the daily load level that temperature does not?

``python -m bench.other_weather`` (≈ 3 s). The shipped ``daily_national_weather_netload_*`` files (2013–2023, daily,
national, definitions undocumented: data/weather/README.md, source 4) hold wind and cloud cover besides temperature.
Before polling and storing them, this checks whether they could help at all, with the cheapest model that can tell:
a least-squares regression of the daily mean load (the shipped eco2mix series, local days with at least 40 valid
half-hours) on the calendar (day types of :func:`shared.calendar.day_type`, the Christmas break, August, four annual
harmonics) and heating / cooling degrees (the product's bases, ``shared.weather.features``) of the file's three
temperatures, without and with wind and cloud cover. Each row is trained on earlier years and scored out of sample
as the daily mean's MAPE, also with the residual of two days before carried at 0.7 (a crude D+1 level correction:
known at a noon origin for the next day). Every weather input is *observed* (look-ahead): an upper bound on what it
is worth, and not the product's model. README, *Weather* → "Other shipped weather data".
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from shared.calendar import TZ, day_type
from shared.features import WEATHER_DIR
from shared.ingest.history import read_history
from shared.settings import REPO_ROOT
from shared.weather.features import CDD_BASE_C, HDD_BASE_C

ECO2MIX = REPO_ROOT / "data" / "eco2mix"
TEMPS = ("temp_k", "temp_s95_k", "temp_s99_k")
# (train from, train to, test from, test to): 2020 is left out as a test year (lockdowns), and the last row starts
# after the sobriety drop of autumn 2022 that no temperature explains
SPLITS = (("2014-01-01", "2018-12-31", "2019-01-01", "2019-12-31"),
          ("2015-01-01", "2019-12-31", "2021-01-01", "2021-12-31"),
          ("2019-01-01", "2022-06-30", "2022-10-01", "2023-09-30"))
CANDIDATES = {"temperature only": [], "+ wind": ["wind_weighted"], "+ cloud cover": ["nebulosity_weighted"],
              "+ wind + cloud cover": ["wind_weighted", "nebulosity_weighted"],
              "+ wind × heating + cloud cover": ["wind_weighted", "nebulosity_weighted", "wind_x_hdd"]}


def daily_frame() -> pd.DataFrame:
    """Daily mean load joined with the file's weather columns and the degree days of its temperatures."""
    hist = read_history([ECO2MIX / f"eco2mix_national_{y}.csv.gz" for y in range(2014, 2024)])
    hist = hist[hist["consommation"] > 0]
    day = hist["ts"].dt.tz_convert(TZ).dt.date
    daily = hist.groupby(day)["consommation"].agg(["mean", "count"])
    load = daily.loc[daily["count"] >= 40, "mean"]
    load.index = pd.to_datetime(load.index)
    df = pd.DataFrame({"load": load}).join(daily_weather(), how="inner")
    for t in TEMPS:
        c = df[t] - 273.15
        df[f"{t}_hdd"], df[f"{t}_cdd"] = np.maximum(HDD_BASE_C - c, 0), np.maximum(c - CDD_BASE_C, 0)
    df["wind_x_hdd"] = df["wind_weighted"] * df["temp_s95_k_hdd"]
    return df


def daily_weather() -> pd.DataFrame:
    """The shipped daily national weather file's columns (source 4 of data/weather/README.md), by local date."""
    weather = pd.concat([pd.read_csv(f) for f in sorted(WEATHER_DIR.glob("daily_national_weather_netload_*.csv.gz"))])
    return weather.assign(date=pd.to_datetime(weather["date"])).set_index("date")


def calendar_columns(days: pd.DatetimeIndex, harmonics: int = 4) -> list[np.ndarray]:
    """Intercept, day types (:func:`shared.calendar.day_type`), ``harmonics`` annual harmonics, the Christmas break
    and August, as least-squares design columns."""
    kinds = day_type(days)
    doy = days.dayofyear.to_numpy()
    cols = [np.ones(len(days))] + [(kinds == k).astype(float) for k in range(1, 5)]
    for k in range(1, harmonics + 1):
        cols += [np.sin(2 * np.pi * k * doy / 365.25), np.cos(2 * np.pi * k * doy / 365.25)]
    cols.append((((days.month == 12) & (days.day >= 24)) | ((days.month == 1) & (days.day <= 1))).astype(float))
    cols.append((days.month == 8).astype(float))
    return cols


def design(df: pd.DataFrame, extra: list[str]) -> np.ndarray:
    """Calendar + degree days (+ ``extra`` columns) as a least-squares design matrix."""
    cols = calendar_columns(pd.DatetimeIndex(df.index))
    cols += [df[f"{t}_{d}"].to_numpy() for t in TEMPS for d in ("hdd", "cdd")]
    cols += [df[c].to_numpy() for c in extra]
    return np.column_stack(cols)


def score(df: pd.DataFrame, split: tuple[str, str, str, str], extra: list[str]) -> dict[str, float]:
    """Out-of-sample daily-mean MAPE (%) of one split: plain, and with the residual of two days before at 0.7."""
    train, test = df.loc[split[0]:split[1]], df.loc[split[2]:split[3]]
    coef, *_ = np.linalg.lstsq(design(train, extra), train["load"].to_numpy(), rcond=None)
    resid = pd.Series(test["load"].to_numpy() - design(test, extra) @ coef, index=test.index)
    corrected = resid - 0.7 * resid.shift(2).fillna(0.0)
    actual = test["load"].to_numpy()
    return {"mape": round(float(np.mean(np.abs(resid) / actual) * 100), 2),
            "mape_level_corrected": round(float(np.mean(np.abs(corrected) / actual) * 100), 2)}


def main() -> int:
    """Print the table (JSON): per test period, per input set."""
    df = daily_frame()
    out = {f"{s[2]} … {s[3]} (trained {s[0]} … {s[1]})":
           {name: score(df, s, extra) for name, extra in CANDIDATES.items()} for s in SPLITS}
    doc = {"what": (__doc__ or "").split("\n")[0], "look_ahead": True, "results": out}
    print(json.dumps(doc, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plausibility rule (shared/plausibility.py): real history and labelled edge cases.

Real data: data/eco2mix (shipped history).  Synthetic values appear only in the labelled edge cases
(a glitch injected into a copy of the real 2023 series, or a short hand-made series).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.plausibility import (
    ABOVE_MAX,
    BELOW_MIN,
    IMPOSSIBLE_JUMP,
    NON_POSITIVE,
    PlausibilityParams,
    plausibility_flags,
)
from shared.settings import Settings

DATA = Path(__file__).resolve().parent.parent / "data" / "eco2mix"
PARAMS = PlausibilityParams.from_settings(Settings())


def _real(year: int, metric: str = "consommation") -> pd.DataFrame:
    df = pd.read_csv(DATA / f"eco2mix_national_{year}.csv.gz", usecols=["date_heure", metric])
    out = pd.DataFrame({"ts": pd.to_datetime(df["date_heure"], utc=True), "value": df[metric].astype(float)})
    return out.dropna().sort_values("ts").reset_index(drop=True)


def _history(metric: str) -> pd.DataFrame:
    frames = [pd.read_csv(p, usecols=["date_heure", "nature", metric]) for p in sorted(DATA.glob("*.csv.gz"))]
    df = pd.concat(frames, ignore_index=True)
    df["ts"] = pd.to_datetime(df["date_heure"], utc=True)
    return df.rename(columns={metric: "value"}).dropna(subset=["value"]).sort_values("ts").reset_index(drop=True)


def _synthetic(values: list[float], start: str = "2023-01-02T00:00Z", step: str = "15min") -> pd.DataFrame:
    return pd.DataFrame({"ts": pd.date_range(start, periods=len(values), freq=step), "value": values})


def test_from_settings_takes_every_bound_from_settings() -> None:
    s = Settings(plausibility_min_value_mw=1.0, plausibility_max_value_mw=2.0, plausibility_max_step_mw=3.0,
                 plausibility_max_excursion_hours=4.0, plausibility_metrics=["x"])
    assert PlausibilityParams.from_settings(s) == PlausibilityParams(1.0, 2.0, 3.0, 4.0, ("x",))


def test_real_2023_consumption_is_all_plausible() -> None:
    frame = _real(2023)
    assert len(frame) > 34_000  # the real year, with its missing local day 2023-10-14
    assert (plausibility_flags(frame, PARAMS) == "").all()


def test_real_consumption_history_flags_only_the_2001_placeholders() -> None:
    # 2000–2023, 15-min and 30-min (2012–2019 definitive) data: the only implausible consumption
    # values are RTE's placeholder `100` on five local days of 2001 (README.upstream.md quirk 3).
    frame = _history("consommation")
    flags = plausibility_flags(frame[["ts", "value"]], PARAMS)
    flagged = frame[flags != ""]
    assert len(flagged) == 480
    assert (flagged["value"] == 100).all() and set(flags[flags != ""]) == {BELOW_MIN}
    local_days = set(flagged["ts"].dt.tz_convert("Europe/Paris").dt.strftime("%Y-%m-%d"))
    assert local_days == {"2001-06-03", "2001-06-04", "2001-07-29", "2001-07-30", "2001-12-02"}


@pytest.mark.parametrize(("metric", "nature", "expected_days"), [
    # the documented glitches of the forecast columns, per nature (README.upstream.md quirk 3)
    ("prevision_j", "Données définitives", {"2015-03-16", "2015-03-17"} | {f"2019-10-{d:02d}" for d in range(2, 15)}),
    ("prevision_j", "Données temps réel (API RTE short_term)", {"2021-04-09", "2021-04-10", "2021-04-11"}),
])
def test_real_forecast_glitches_are_flagged(metric: str, nature: str, expected_days: set[str]) -> None:
    frame = _history(metric)
    frame = frame[frame["nature"] == nature].reset_index(drop=True)
    flags = plausibility_flags(frame[["ts", "value"]], PARAMS)
    assert set(frame.loc[flags != "", "ts"].dt.strftime("%Y-%m-%d")) == expected_days


def test_zero_run_injected_into_real_data_is_flagged_whole() -> None:
    # Labelled synthetic glitch on real data: a day and a half of zeros (as eco2mix published).
    frame = _real(2023)
    glitch = (frame["ts"] >= "2023-03-07T10:00Z") & (frame["ts"] < "2023-03-08T22:00Z")
    frame.loc[glitch, "value"] = 0.0
    flags = plausibility_flags(frame, PARAMS)
    assert glitch.sum() == 144
    assert (flags[glitch] == NON_POSITIVE).all()
    assert (flags[~glitch] == "").all()


def test_in_bounds_excursion_is_flagged_whole_not_only_its_edges() -> None:
    # Labelled synthetic glitch on real data: six hours at half the real load (inside the bounds,
    # so only the jump on both sides of the run can tell it).
    frame = _real(2023)
    glitch = (frame["ts"] >= "2023-02-01T06:00Z") & (frame["ts"] < "2023-02-01T12:00Z")
    frame.loc[glitch, "value"] = frame.loc[glitch, "value"] / 2
    flags = plausibility_flags(frame, PARAMS)
    assert (flags[glitch] == IMPOSSIBLE_JUMP).all()
    assert (flags[~glitch] == "").all()


def test_single_spike_flags_one_point() -> None:
    flags = plausibility_flags(_synthetic([50_000, 50_200, 90_000, 50_400, 50_300]), PARAMS)
    assert flags.tolist() == ["", "", IMPOSSIBLE_JUMP, "", ""]


def test_bounds() -> None:
    flags = plausibility_flags(_synthetic([-5.0, 0.0, 100.0, 14_000.0, 14_001.0, 150_001.0]), PARAMS)
    assert flags.tolist() == [NON_POSITIVE, NON_POSITIVE, BELOW_MIN, BELOW_MIN, "", ABOVE_MAX]


def test_nan_gap_scales_the_allowed_step() -> None:
    # 3 h without values then a 30 GW lower value: 12 000 × sqrt(12 steps) = 41.6 GW allowed.
    values = [70_000.0] + [np.nan] * 11 + [40_000.0, 40_100.0]
    assert (plausibility_flags(_synthetic(values), PARAMS) == "").all()
    # The same change between consecutive quarter-hours is impossible (an open excursion).
    flags = plausibility_flags(_synthetic([70_000.0, 40_000.0, 40_100.0]), PARAMS)
    assert flags.tolist() == ["", IMPOSSIBLE_JUMP, IMPOSSIBLE_JUMP]


def test_thirty_minute_resolution_uses_the_elapsed_time() -> None:
    # 15 GW in 30 min is allowed (12 000 × sqrt 2 = 16.97 GW) but not in 15 min.
    assert (plausibility_flags(_synthetic([50_000, 65_000, 65_100], step="30min"), PARAMS) == "").all()
    assert plausibility_flags(_synthetic([50_000, 65_000, 50_100]), PARAMS).tolist() == ["", IMPOSSIBLE_JUMP, ""]


def test_staircase_excursion_is_flagged_until_the_jump_back() -> None:
    flags = plausibility_flags(_synthetic([50_000, 65_000, 80_000, 80_100, 50_200, 50_100]), PARAMS)
    assert flags.tolist() == ["", IMPOSSIBLE_JUMP, IMPOSSIBLE_JUMP, IMPOSSIBLE_JUMP, "", ""]


def test_level_held_longer_than_the_excursion_limit_is_accepted() -> None:
    params = PlausibilityParams(14_000.0, 150_000.0, 12_000.0, max_excursion_hours=1.0, metrics=("consommation",))
    held = [50_000.0] + [30_000.0] * 6  # 1 h 15 min at the new level
    assert (plausibility_flags(_synthetic(held), params) == "").all()
    short = [50_000.0] + [30_000.0] * 4  # 1 h: still a (pending) excursion
    assert plausibility_flags(_synthetic(short), params).tolist() == [""] + [IMPOSSIBLE_JUMP] * 4


def test_empty_and_index_alignment() -> None:
    assert plausibility_flags(_synthetic([]), PARAMS).empty
    frame = _synthetic([50_000.0, 0.0]).set_axis([10, 20])
    assert plausibility_flags(frame, PARAMS).to_dict() == {10: "", 20: NON_POSITIVE}


# --- another series: the jump rule scaled to its level (shared.plausibility.scaled_to) ----------------------------
OTHER = Path(__file__).resolve().parent / "data"


def _gated(files: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    from shared.forecasting.gate import gate
    from shared.ingest.history import read_history

    h = read_history([OTHER / f for f in files])
    frame = h[["ts", "consommation"]].rename(columns={"consommation": "value"}).dropna().reset_index(drop=True)
    return frame, gate(frame, Settings(), metric=None).reasons


def test_the_scaled_rule_allows_frances_step_in_proportion_to_the_level() -> None:
    from shared.plausibility import FRANCE_MEDIAN_LOAD_MW, scaled_to

    p = scaled_to(PARAMS, FRANCE_MEDIAN_LOAD_MW / 4)
    assert p.max_step_mw == PARAMS.max_step_mw / 4 and p.max_value_mw == np.inf and p.min_value_mw == 0.0


def test_another_series_single_quarter_hour_glitch_is_gated() -> None:
    """Real: the Dutch ENTSO-E export of 24 Aug 2023, whose 23:45 quarter-hour reads 29 333 MW between 12 312 and
    11 990 (the source repeats this ~+17 GW glitch 11 times in 2023)."""
    frame, reasons = _gated(["entsoe_total-load_NL_2023-08-24.csv"])
    flagged = frame.loc[reasons != "", "value"].tolist()
    assert flagged == [29333.0] and set(reasons[reasons != ""]) == {IMPOSSIBLE_JUMP}


def test_another_series_drop_into_a_stuck_feed_is_gated_as_one_excursion() -> None:
    """Real: Switzerland, 16-17 Feb 2023: 7 510 MW, then 3 856, then 3 747 stuck for ten hours, then 9 169. Before,
    only the stuck hours were gated (a flatline) and the drop into them was trained on; now the whole excursion is."""
    frame, reasons = _gated(["entsoe_total-load_CH_2023-Q1.csv.gz"])
    assert frame.loc[reasons == IMPOSSIBLE_JUMP, "value"].tolist() == [3856.0] + [3747.0] * 10


@pytest.mark.parametrize("day", ["neso_demanddata_2021_fall-back.csv", "neso_demanddata_2022_spring-forward.csv",
                                 "entsoe_total-load_ES_2023-10-29.csv", "entsoe_total-load_CH_2018_dst-days.csv"])
def test_another_series_real_clock_change_days_keep_every_value(day: str) -> None:
    _, reasons = _gated([day])
    assert (reasons == "").all()

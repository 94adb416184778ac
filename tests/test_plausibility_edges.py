"""The plausibility rule and the training-data gate at their edges (each test fails on a plausible one-line change
that every other test let through). Short hand-made series: labelled synthetic edge cases, as in
tests/test_plausibility.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.forecasting.gate import NONPOSITIVE, gate
from shared.plausibility import ABOVE_MAX, IMPOSSIBLE_JUMP, PlausibilityParams, plausibility_flags
from shared.settings import Settings

PARAMS = PlausibilityParams.from_settings(Settings())
ONE_HOUR = PlausibilityParams(14_000.0, 150_000.0, 12_000.0, max_excursion_hours=1.0, metrics=("consommation",))


def _synthetic(values: list[float], step: str = "15min") -> pd.DataFrame:
    return pd.DataFrame({"ts": pd.date_range("2023-01-02T00:00Z", periods=len(values), freq=step), "value": values})


def test_a_spike_after_an_accepted_level_shift_is_still_flagged() -> None:
    """One accepted level shift in a frame must not end the search for later glitches in it."""
    values = [50_000.0] + [30_000.0] * 8 + [60_000.0] + [30_000.0] * 3
    flags = plausibility_flags(_synthetic(values), ONE_HOUR).tolist()
    assert flags == [""] * 9 + [IMPOSSIBLE_JUMP] + [""] * 3


def test_an_excursion_of_exactly_the_limit_is_still_a_glitch() -> None:
    """'Longer than max_excursion_hours' is accepted; exactly 1 h (first to last point) is not."""
    flags = plausibility_flags(_synthetic([50_000.0] + [30_000.0] * 5), ONE_HOUR).tolist()
    assert flags == [""] + [IMPOSSIBLE_JUMP] * 5


def test_sub_quarter_hour_data_is_allowed_at_least_one_step() -> None:
    """10 GW in 5 minutes is within one 15-min step."""
    assert (plausibility_flags(_synthetic([50_000.0, 60_000.0, 60_100.0, 60_050.0], step="5min"), PARAMS) == "").all()


def test_the_upper_bound_itself_is_plausible() -> None:
    """The lower bound is pinned at its exact value by test_bounds; this pins the upper one."""
    assert plausibility_flags(_synthetic([150_000.0, 150_000.5]), PARAMS).tolist() == ["", ABOVE_MAX]


def test_the_gate_rejects_zeros_of_a_metric_the_plausibility_rule_does_not_cover() -> None:
    """A series metric outside plausibility_metrics (5 GW wind-like levels) keeps its values and loses its zeros:
    the gate's own zero check, and France's bounds applied only to the metrics they cover."""
    values = 5_000.0 + 300.0 * np.sin(np.arange(24) / 3.0)
    values[10] = 0.0
    g = gate(_synthetic(list(values)), Settings(), metric="eolien")
    assert g.reasons.tolist() == [""] * 10 + [NONPOSITIVE] + [""] * 13

"""Plausibility of national load values: what no grid can physically produce.

A value is *implausible* when it is outside France's physical bounds or sits behind a jump no grid
can make.  Implausible values are stored as received (nothing is lost) but flagged, and "the series"
every consumer reads leaves them out (ch/init/007.plausibility.sql).  This module is the one
definition of the rule: pure functions over one series, no I/O.

Bounds learned from the shipped real history (``data/eco2mix/eco2mix_national_2000…2023.csv.gz``,
682 742 consumption values; the 480 placeholder values ``100`` of 2001 left out, see
data/eco2mix/README.upstream.md quirk 3):

* lowest real load 28 399 MW (2002-08-11T05:00Z), highest 102 098 MW (2012-02-08T18:00Z, the record);
* largest real change between consecutive 15-min values 5 521 MW (2006-01-04T17:00Z), between
  consecutive 30-min values (2012–2019 definitive data) 5 769 MW (2013-03-03T18:00Z);
* largest real change over a lag of h hours (every pair of instants, 2000–2023):
  0.25 h 5 521 · 0.5 h 6 658 · 1 h 9 733 · 2 h 14 763 · 3 h 19 081 · 4 h 20 135 · 6 h 21 365 ·
  12 h 21 567 · 24 h 24 530 MW — it grows like ``5 521 × sqrt(h / 0.25)`` up to 3 h and then
  saturates, so the allowed step over a gap of ``dt`` is ``max_step_mw × sqrt(dt / 15 min)``
  (never less than one step): this tolerates 30-min data and NaN gaps without letting a long gap
  excuse any value.

Defaults (``Settings.plausibility_*``): ``min_value_mw`` 14 000 (half the lowest real load),
``max_value_mw`` 150 000 (≈ 1.5 × the record), ``max_step_mw`` 12 000 per 15 min (≈ 2.2 × the
largest real 15-min step).  On the real 2000–2023 history they flag exactly the 2001 placeholders
(tests/test_plausibility.py).

Reasons (one string per row, ``''`` = plausible):

* ``non_positive`` — value ≤ 0 (eco2mix has published ``consommation = 0`` for ~33 hours);
* ``below_min`` / ``above_max`` — outside the physical bounds;
* ``impossible_jump`` — an excursion: the values after a jump larger than the allowed step, up to
  the first impossible jump back (opposite sign).  The whole excursion is flagged, not only its
  edges.  An excursion that lasts longer than ``max_excursion_hours`` is accepted as a real new
  level (nothing physical explains it, but flagging data forever would hide a source change, which
  the anomaly detector reports as a level shift instead).  An excursion still open at the end of
  the frame is flagged (pending): when a later value comes back, the excursion is proven; when the
  new level lasts, it is accepted on re-evaluation.

**Another series** (another operator's file, a ``timestamp,value`` CSV: :func:`scaled_to`): France's MW bounds
mean nothing there, but the jump rule does once scaled to the series' level — the allowed step is France's
(``max_step_mw`` at France's median load, :data:`FRANCE_MEDIAN_LOAD_MW`) times the series' median over France's.
Checked on real files it was not chosen on (``tests/test_plausibility.py`` pins the Dutch case): no value flagged
in NESO's Great Britain 2009 – Sep 2022 (239 710 half-hours) nor in ENTSO-E's Germany 2022 and Spain 2023; in the
Netherlands 2023 the source's 11 single quarter-hours ~17 GW above their neighbours (e.g. 12 312 → 29 333 → 11 990
MW), a halved quarter-hour and two hour-long excursions to +70 %; in Switzerland 2015 – Jul 2024 a drop to
3 856 MW before 10 stuck hours (2023-02-16) and one hour at 9 476 MW between 5 199 and 5 660 (2024-07-25).

Values outside the bounds take no part in the jump check (a run of zeros has plausible neighbours
on both sides, and those neighbours are compared with each other across the gap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from shared.settings import Settings

NON_POSITIVE = "non_positive"
BELOW_MIN = "below_min"
ABOVE_MAX = "above_max"
IMPOSSIBLE_JUMP = "impossible_jump"
REASONS = (NON_POSITIVE, BELOW_MIN, ABOVE_MAX, IMPOSSIBLE_JUMP)

_STEP_NS = 15 * 60 * 10**9  # the jump rule's unit step (15 minutes)
# France's median national load, the level ``max_step_mw`` was set at: the shipped history 2000–2023 (682 262
# real values, the 2001 placeholders left out), 51 994 MW
FRANCE_MEDIAN_LOAD_MW = 51_994.0


@dataclass(frozen=True)
class PlausibilityParams:
    """Bounds of a plausible national load value; every default lives in Settings."""

    min_value_mw: float
    """a load at or below this is implausible (0 and negative load are impossible for France)"""
    max_value_mw: float
    """physical upper bound"""
    max_step_mw: float
    """largest possible change in 15 minutes; over a gap dt the bound is max_step × sqrt(dt / 15 min)"""
    max_excursion_hours: float
    """a level reached by an impossible jump and held longer than this is accepted as real"""
    metrics: tuple[str, ...]
    """metrics (national load in MW) the rule applies to"""

    @classmethod
    def from_settings(cls, settings: Settings) -> PlausibilityParams:
        """The parameters configured in ``settings`` (``POWERSENSE_PLAUSIBILITY_*``)."""
        return cls(
            min_value_mw=settings.plausibility_min_value_mw,
            max_value_mw=settings.plausibility_max_value_mw,
            max_step_mw=settings.plausibility_max_step_mw,
            max_excursion_hours=settings.plausibility_max_excursion_hours,
            metrics=tuple(settings.plausibility_metrics),
        )

    def applies_to(self, metric: str) -> bool:
        """True when ``metric`` is checked by this rule."""
        return metric in self.metrics

    def context(self) -> pd.Timedelta:
        """How far around a changed window a neighbour can change a value's flag.

        An excursion is bounded by max_excursion_hours, so values further away than that (plus a
        day of margin for the gap before the excursion's entry) cannot change a flag.
        """
        return pd.Timedelta(hours=self.max_excursion_hours + 24)


def scaled_to(params: PlausibilityParams, level: float) -> PlausibilityParams:
    """The rule for another series whose median value is ``level``: France's allowed step scaled by ``level`` over
    :data:`FRANCE_MEDIAN_LOAD_MW` (the same excursion rule), no value bounds (France's MW bounds mean nothing
    elsewhere; a non-positive value stays implausible). ``metrics`` is empty: the caller applies it to its series."""
    return replace(params, min_value_mw=0.0, max_value_mw=math.inf,
                   max_step_mw=params.max_step_mw * level / FRANCE_MEDIAN_LOAD_MW, metrics=())


def plausibility_flags(frame: pd.DataFrame, params: PlausibilityParams) -> pd.Series:
    """Per row the reason the value is implausible (``''`` = plausible, also for NaN values).

    ``frame``: one series, columns ``ts`` (UTC) and ``value``, sorted by ``ts``.  Returns a string
    Series aligned with ``frame``'s index.  A missing value (NaN) is not implausible: it is a gap,
    and the jump rule compares the values on both sides of it across the gap.
    """
    n = len(frame)
    reasons = np.full(n, "", dtype=object)
    if n == 0:
        return pd.Series(reasons, index=frame.index, dtype=object)
    value = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype="float64")
    present = ~np.isnan(value)
    reasons[present & (value <= 0)] = NON_POSITIVE
    reasons[present & (value > 0) & (value <= params.min_value_mw)] = BELOW_MIN
    reasons[present & (value > params.max_value_mw)] = ABOVE_MAX
    in_bounds = np.flatnonzero(present & (reasons == ""))
    if len(in_bounds) >= 2:
        ts = pd.to_datetime(frame["ts"], utc=True).to_numpy(dtype="datetime64[ns]").view("int64")
        excursion = _excursions(ts[in_bounds], value[in_bounds], params)
        reasons[in_bounds[excursion]] = IMPOSSIBLE_JUMP
    return pd.Series(reasons, index=frame.index, dtype=object)


def _excursions(ts_ns: np.ndarray, value: np.ndarray, params: PlausibilityParams) -> np.ndarray:
    """Mask of the in-bound values that lie inside an impossible excursion (see module doc)."""
    dt_steps = np.maximum(np.diff(ts_ns) / _STEP_NS, 1.0)
    step = np.diff(value)
    allowed = params.max_step_mw * np.sqrt(dt_steps)
    # jump_sign[k]: sign of an impossible jump from point k to point k + 1 (0 = possible change)
    jump_sign = np.where(np.abs(step) > allowed, np.sign(step), 0.0)
    flagged = np.zeros(len(value), dtype=bool)
    max_ns = params.max_excursion_hours * 3600 * 10**9
    jumps = np.flatnonzero(jump_sign)
    j = 0
    while j < len(jumps):
        entry = jumps[j]  # the excursion starts at point entry + 1
        sign = jump_sign[entry]
        back = next((k for k in jumps[j + 1:] if jump_sign[k] == -sign), None)
        last = len(value) - 1 if back is None else back  # last point of the excursion
        if ts_ns[last] - ts_ns[entry + 1] <= max_ns:
            flagged[entry + 1:last + 1] = True
            if back is None:
                break
            j = int(np.searchsorted(jumps, back, side="right"))
        else:
            # Held too long to be a glitch: accepted as a real new level; look for the next jump.
            j += 1
    return flagged

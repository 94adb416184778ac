"""One scale of fresh data (shared.series.freshness_status) and the places that state its thresholds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.series import freshness_status
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {name: Settings.model_fields[name].default
            for name in ("dq_freshness_max_min", "query_max_data_age_s", "forecast_max_staleness_hours")}
LATE_S = DEFAULTS["dq_freshness_max_min"] * 60
STALE_S = DEFAULTS["query_max_data_age_s"]
TOO_OLD_S = DEFAULTS["forecast_max_staleness_hours"] * 3600


@pytest.mark.parametrize(("age_s", "status"), [
    (0.0, "ok"), (LATE_S, "ok"), (LATE_S + 1, "late"), (STALE_S, "late"), (STALE_S + 1, "stale"),
    (TOO_OLD_S, "stale"), (TOO_OLD_S + 1, "too_old"),
])
def test_each_level_starts_just_past_its_setting(age_s: float, status: str) -> None:
    assert freshness_status(age_s, Settings()) == status


def test_levels_out_of_order_fail_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # /health stale after 8 h while the model already stops at 6 h: the settings contradict each other
    from tests.fixtures_forecast import assert_start_up_fails

    assert_start_up_fails(monkeypatch, "POWERSENSE_QUERY_MAX_DATA_AGE_S", str(8 * 3600),
                          r"fresh-data levels out of order: .* got 5400 s, 28800 s, 21600 s")


def _rule_threshold(name: str) -> float:
    rules = yaml.safe_load((ROOT / "observability/prometheus/rules/powersense.alerts.yml").read_text())
    expr = next(r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)
    m = re.search(r"\)\s*>\s*([0-9.]+)\s*\*\s*([0-9.]+)\s*$", expr.strip())
    assert m, expr
    return float(m[1]) * float(m[2])


def test_the_data_stale_alerts_fire_at_the_stale_and_too_old_levels() -> None:
    assert (_rule_threshold("PowerSenseDataStale"), _rule_threshold("PowerSenseDataStaleCritical")) == (
        STALE_S, TOO_OLD_S)


def test_the_freshness_panels_turn_orange_when_stale_and_red_when_too_old() -> None:
    import importlib.util

    path = ROOT / "observability/grafana/build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    steps = {s["color"]: s["value"] for s in module.FRESHNESS_THRESHOLDS["steps"]}
    assert (steps["orange"], steps["red"]) == (STALE_S, TOO_OLD_S)


def _dbt_series_source() -> dict[str, Any]:
    sources = yaml.safe_load((ROOT / "dbt/models/sources.yml").read_text())
    return next(t for s in sources["sources"] for t in s["tables"] if t["name"] == "series")


def test_dbt_source_freshness_warns_when_stale_and_errors_when_too_old() -> None:
    table = _dbt_series_source()

    def seconds(after: dict[str, int | str]) -> float:
        return float(after["count"]) * {"minute": 60, "hour": 3600, "day": 86400}[str(after["period"])]

    fresh = table["freshness"]
    assert (seconds(fresh["warn_after"]), seconds(fresh["error_after"])) == (STALE_S, TOO_OLD_S)

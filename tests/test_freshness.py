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


def _alert_expr(name: str) -> str:
    rules = yaml.safe_load((ROOT / "observability/prometheus/rules/powersense.alerts.yml").read_text())
    expr: str = next(r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)
    return expr


@pytest.mark.parametrize(("alert", "level"), [("PowerSenseDataStale", "stale"),
                                              ("PowerSenseDataStaleCritical", "too_old")])
def test_each_data_stale_alert_compares_with_its_exported_level(alert: str, level: str) -> None:
    # written as 3 * 3600 and 6 * 3600 until 2026-12-07, they stayed there when an operator changed the settings;
    # promtool's rule tests fire them at 2 h / 3 h when the gauge says so (observability/prometheus/tests)
    assert re.findall(r'powersense_data_freshness_threshold_seconds\{level="(\w+)"\}', _alert_expr(alert)) == [level]
    assert level in Settings().freshness_levels()


def test_the_query_function_exports_the_settings_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import settings as settings_mod
    from shared.errors import StoreError
    from shared.query.metrics import StoreCollector

    monkeypatch.setenv("POWERSENSE_QUERY_MAX_DATA_AGE_S", "7200")
    monkeypatch.setenv("POWERSENSE_FORECAST_MAX_STALENESS_HOURS", "3")
    settings_mod.get_settings.cache_clear()

    def no_store() -> Any:
        raise StoreError("store down")

    try:
        # even with the store down: they are the settings', not the store's
        family = next(m for m in StoreCollector(no_store).collect()
                      if m.name == "powersense_data_freshness_threshold_seconds")
    finally:
        settings_mod.get_settings.cache_clear()
    assert {s.labels["level"]: s.value for s in family.samples} == {"late": LATE_S, "stale": 7200.0,
                                                                     "too_old": 10800.0}


def _dashboards(store: Any) -> Any:
    import importlib.util

    path = ROOT / "observability/grafana/build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.build(store(module))


def _freshness_steps(dash: Any) -> list[dict[str, float]]:
    panels = [p for p in dash.json()["panels"] if p.get("title", "").startswith("Data freshness")]
    assert len(panels) == 2
    return [{s["color"]: s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]} for p in panels]


def test_the_freshness_panels_turn_orange_when_stale_and_red_when_too_old() -> None:
    _, built = _dashboards(lambda m: m.Store.of(Settings()))
    for steps in _freshness_steps(built["pipeline-health"]):
        assert (steps["orange"], steps["red"]) == (STALE_S, TOO_OLD_S)


def test_the_freshness_panels_follow_the_deployments_levels() -> None:
    _, built = _dashboards(lambda m: m.Store.of(Settings(query_max_data_age_s=7200, forecast_max_staleness_hours=3)))
    for steps in _freshness_steps(built["pipeline-health"]):
        assert (steps["orange"], steps["red"]) == (7200, 10800)

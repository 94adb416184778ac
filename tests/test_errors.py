"""Errors as a command-line user sees them (shared/errors.py): one line naming the cause, exit status 2."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import settings as settings_mod
from shared.forecasting import evaluate
from shared.settings import RETIRED_SETTINGS, Settings
from tests.fixtures_forecast import assert_start_up_fails


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Settings read from this test's environment, not an earlier test's cached object."""
    settings_mod.get_settings.cache_clear()
    yield
    settings_mod.get_settings.cache_clear()


def test_an_invalid_setting_stops_a_command_with_one_line_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fresh_settings: None) -> None:
    monkeypatch.setenv("POWERSENSE_FORECAST_HOLDOUT_DAYS", "-1")
    assert evaluate.main(["--years", "2023", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate: error: invalid configuration: POWERSENSE_FORECAST_HOLDOUT_DAYS")
    assert "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", sorted(RETIRED_SETTINGS))
def test_a_retired_setting_stops_the_start_up(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # pydantic-settings ignores a variable that names no field: after the rename of
    # POWERSENSE_DETECT_LEVEL_SHIFT_MIN_STEPS an operator's 16 became the default 120 minutes without a word
    assert_start_up_fails(monkeypatch, name, "16", rf"^invalid configuration: {name} is no longer read: ")


def test_no_retired_setting_is_a_current_one() -> None:
    assert not {n.removeprefix("POWERSENSE_").lower() for n in RETIRED_SETTINGS} & set(Settings.model_fields)

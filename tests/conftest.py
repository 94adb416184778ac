"""Test fixtures: one chDB data directory per test process, a fresh database per test.

chDB allows one data directory per process, so the directory is created once per session and
every test isolates itself in its own database inside it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

_CHDB_DIR = tempfile.mkdtemp(prefix="powersense-chdb-")
os.environ["POWERSENSE_CHDB_PATH"] = _CHDB_DIR
_SESSION_DIRS = [_CHDB_DIR]
if "POWERSENSE_SECRETS_DIR" not in os.environ:
    os.environ["POWERSENSE_SECRETS_DIR"] = tempfile.mkdtemp(prefix="powersense-secrets-")
    _SESSION_DIRS.append(os.environ["POWERSENSE_SECRETS_DIR"])
os.environ["POWERSENSE_ARTIFACTS_DIR"] = tempfile.mkdtemp(prefix="powersense-artifacts-")
# the tests' archive is the local replay, which has no rate limit: no pacing (the pacing test sets its own budget)
os.environ.setdefault("POWERSENSE_WEATHER_ARCHIVE_CALLS_PER_MINUTE", "0")
_SESSION_DIRS.append(os.environ["POWERSENSE_ARTIFACTS_DIR"])


@atexit.register
def _remove_session_dirs() -> None:
    # the session's chDB data (~330 MB after a full run) and artifacts go when the test process ends, so repeated
    # runs do not fill /tmp; a clean-up error never fails a run
    for d in _SESSION_DIRS:
        shutil.rmtree(d, ignore_errors=True)


for _k in [k for k in os.environ if k.startswith("POWERSENSE_CLICKHOUSE_URL")]:
    del os.environ[_k]

from shared import settings as settings_mod  # noqa: E402
from shared import store as store_mod  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty ClickHouse database name for this test (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("POWERSENSE_CLICKHOUSE_DATABASE", name)
    settings_mod.get_settings.cache_clear()
    store_mod.reset_store()
    yield name
    try:
        store_mod.get_store().command(f"drop database if exists {name}")
    finally:
        settings_mod.get_settings.cache_clear()
        store_mod.reset_store()


@pytest.fixture
def settings(database: str) -> settings_mod.Settings:
    """Settings bound to the per-test database."""
    return settings_mod.get_settings()


ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
def admin_headers(database: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An admin token configured (POWERSENSE_ADMIN_TOKEN) and the header a stage's request options need."""
    monkeypatch.setenv("POWERSENSE_ADMIN_TOKEN", ADMIN_TOKEN)
    settings_mod.get_settings.cache_clear()
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def store(settings: settings_mod.Settings) -> store_mod.Store:
    """The process store, schema applied, on the per-test database."""
    return store_mod.get_store(settings)


@pytest.fixture(scope="module")
def winter_2023() -> pd.DataFrame:
    """Real consommation 2023-01-01 … 2023-03-15 10:00 UTC (the forecast tests' shared history)."""
    from tests.fixtures_forecast import history

    return history("2023-01-01", "2023-03-15 10:00")


@pytest.fixture
def fc_settings(store: store_mod.Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                winter_2023: pd.DataFrame) -> Iterator[settings_mod.Settings]:
    """Winter 2023 in the store and the tests' fast model settings (tests.fixtures_forecast.fast_model_settings):
    the forecast stage tests' settings (a module may define its own)."""
    from tests.fixtures_forecast import fast_model_settings, insert_measurements

    insert_measurements(store, winter_2023)
    yield from fast_model_settings(monkeypatch, tmp_path)

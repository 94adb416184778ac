"""Light functions (poll, upsert-version, query) must not load the ML stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "neuralprophet", "pytorch_lightning", "lightning", "matplotlib")


@pytest.mark.parametrize("function", ["poll", "upsert-version", "query"])
def test_handler_import_loads_no_ml_module(function: str, tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from local_dev.functions import load_handler\n"
        f"module = load_handler({function!r})\n"
        "assert hasattr(module, 'app') and hasattr(module, 'handler')\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "POWERSENSE_CHDB_PATH": str(tmp_path / "chdb")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_handler_exposes_app_and_mangum_handler(tmp_path: Path) -> None:
    code = (
        "from local_dev.functions import STAGES, load_handler\n"
        "from mangum import Mangum\n"
        "from fastapi import FastAPI\n"
        "for name in STAGES:\n"
        "    m = load_handler(name)\n"
        "    assert isinstance(m.app, FastAPI) and isinstance(m.handler, Mangum), name\n"
        "print('ok')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "POWERSENSE_CHDB_PATH": str(tmp_path / "chdb")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_misconfigured_function_fails_at_start_up_naming_the_variable(tmp_path: Path) -> None:
    code = "from local_dev.functions import load_handler\nload_handler('poll')\n"
    env = {"PATH": "/usr/bin:/bin", "POWERSENSE_CLICKHOUSE_URL": "ftp://nowhere"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "ConfigurationError" in out.stderr and "POWERSENSE_CLICKHOUSE_URL" in out.stderr

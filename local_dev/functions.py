"""Load function apps from ``functions/<name>/handler.py`` (folder names may contain '-')."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from shared.settings import REPO_ROOT

FUNCTIONS_DIR = REPO_ROOT / "functions"
STAGES = ("poll", "poll-weather", "upsert-version", "featurize", "forecast", "detect", "query")


def available() -> list[str]:
    """Stage names whose handler.py exists."""
    return [s for s in STAGES if (FUNCTIONS_DIR / s / "handler.py").is_file()]


def load_handler(name: str) -> ModuleType:
    """Import ``functions/<name>/handler.py`` once per process and return the module."""
    mod_name = f"powersense_fn_{name.replace('-', '_')}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    path: Path = FUNCTIONS_DIR / name / "handler.py"
    if not path.is_file():
        raise FileNotFoundError(f"no function {name!r} ({path} missing)")
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module

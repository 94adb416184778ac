"""Each stage's image carries what the stage imports, and the light images (requirements/base.txt) never
load the ML stack.

The image of a stage is picked by ``build_args.REQUIREMENTS`` in openfaas-stack.yml (and the same
``REQUIREMENTS`` build arg in template.yaml for Lambda).  Two views of what a stage imports:

* at run time: importing the handler in a fresh interpreter (what a cold start loads);
* statically: every ``import`` of the handler and of the first-party modules it reaches, function-level
  (lazy) imports included and ``if TYPE_CHECKING:`` blocks excluded — so an import made only on the
  first call (e.g. poll's HTTP client) is checked too.  Third-party top-level modules are mapped to
  their distributions with ``importlib.metadata.packages_distributions()`` and must be in the closure of
  the stage's requirements file under the distributions' declared dependencies.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.fixtures_topology import REPO, load_sam, sam_functions

HEAVY = ("torch", "neuralprophet", "pytorch_lightning", "lightning", "matplotlib")
FIRST_PARTY = {"shared", "local_dev", "functions", "bench"}
# No exceptions: the static view follows every import, lazy ones included (the artifact store holds bytes
# only; model (de)serialisation lives in shared/forecasting/registry.py, which only forecast imports).


def stack_requirements() -> dict[str, str]:
    """Stage → requirements file name (without .txt) from openfaas-stack.yml's build_args."""
    stack = yaml.safe_load((REPO / "openfaas-stack.yml").read_text())
    return {name: fn["build_args"]["REQUIREMENTS"] for name, fn in stack["functions"].items()}


def sam_requirements() -> dict[str, str]:
    """Stage → requirements from template.yaml's DockerBuildArgs."""
    return {stage: fn["Metadata"]["DockerBuildArgs"]["REQUIREMENTS"] for stage, fn in sam_functions(load_sam()).items()}


BASE_STAGES = sorted(name for name, req in stack_requirements().items() if req == "base")


def test_stack_and_sam_build_every_stage_on_the_same_requirements() -> None:
    assert sam_requirements() == stack_requirements()
    assert {"poll", "upsert-version", "query"} <= set(BASE_STAGES)


@pytest.mark.parametrize("function", BASE_STAGES)
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


def test_the_settings_load_without_pandas() -> None:
    """Every function and command builds the settings first; their import stays off pandas (a start-up validator
    once pulled it in through shared.timeutil: ~0.1 → ~0.3 s for `import shared.settings`)."""
    code = "import sys, shared.settings\nprint('pandas' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


# --- the static view --------------------------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Modules a file imports at run time (anywhere in it; ``if TYPE_CHECKING:`` bodies excluded)."""
    found: list[str] = []

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            ):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.extend(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            assert node.level == 0 and node.module, "relative imports are not used in this repository"
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`

    Visitor().visit(tree)
    return found


@cache
def static_imports(handler: Path) -> frozenset[str]:
    """Third-party top-level modules reachable from ``handler`` through first-party imports."""
    seen: set[Path] = set()
    third: set[str] = set()
    todo = [handler]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _runtime_imports(ast.parse(path.read_text())):
            top = name.split(".")[0]
            if top not in FIRST_PARTY:
                third.add(top)
                continue
            parts = name.split(".")
            todo.extend(f for f in (_module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)) if f)
    return frozenset(third - set(sys.stdlib_module_names) - {"__future__"})


def _requirement_names(path: Path) -> set[str]:
    """Distributions a requirements file lists (following ``-r``)."""
    names: set[str] = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r"):
            names |= _requirement_names(path.parent / line[2:].strip())
        elif line and not line.startswith("-"):
            names.add(canonicalize_name(Requirement(line).name))
    return names


@cache
def installable(requirements: str) -> frozenset[str]:
    """The distributions an image built on ``requirements/<requirements>.txt`` holds: the file's, and
    everything they declare as dependencies (markers evaluated for this interpreter, extras followed)."""
    todo = [(name, "") for name in _requirement_names(REPO / "requirements" / f"{requirements}.txt")]
    out: set[str] = set()
    while todo:
        name, extra = todo.pop()
        key = f"{name}[{extra}]" if extra else name
        if key in out:
            continue
        out.add(key)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (a platform-specific dependency): nothing to follow
        for spec in map(Requirement, requires):
            if spec.marker is None or spec.marker.evaluate({"extra": extra}):
                dep = canonicalize_name(spec.name)
                todo.append((dep, ""))
                todo.extend((dep, e) for e in spec.extras)
    return frozenset(k for k in out if "[" not in k)


@pytest.mark.parametrize("function", BASE_STAGES)
def test_light_stage_never_reaches_the_ml_stack_even_lazily(function: str) -> None:
    reached = static_imports(REPO / "functions" / function / "handler.py")
    assert not reached & set(HEAVY), sorted(reached & set(HEAVY))


@pytest.mark.parametrize(("function", "requirements"), sorted(stack_requirements().items()))
def test_every_stage_image_has_what_its_handler_imports(function: str, requirements: str) -> None:
    providers = metadata.packages_distributions()
    needed: dict[str, str] = {}
    for module in static_imports(REPO / "functions" / function / "handler.py"):
        dists = providers.get(module)
        assert dists, f"{function} imports {module}, which no installed distribution provides"
        needed.update({canonicalize_name(d): module for d in dists})
    missing = {d: m for d, m in needed.items() if d not in installable(requirements)}
    assert not missing, f"{function}'s image (requirements/{requirements}.txt) lacks {missing}"


def test_the_static_view_sees_lazy_imports() -> None:
    # poll imports its HTTP client on first use only (shared/ingest/poll.py): the static view must see it
    assert {"httpx", "tenacity"} <= static_imports(REPO / "functions" / "poll" / "handler.py")
    assert {"torch", "neuralprophet"} <= static_imports(REPO / "functions" / "forecast" / "handler.py")


def test_every_handler_exposes_app_and_mangum_handler(tmp_path: Path) -> None:
    code = (
        "from local_dev.functions import STAGES, load_handler\n"
        "from mangum import Mangum\n"
        "from fastapi import FastAPI\n"
        "for name in STAGES:\n"
        "    m = load_handler(name)\n"
        "    assert isinstance(m.app, FastAPI) and isinstance(m.handler, Mangum), name\n"
        "    # the stages fail their Lambda invocation when a scheduled run fails (query is never scheduled)\n"
        "    assert (type(m.handler).__name__ == 'LambdaHandler') == (name != 'query'), name\n"
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

"""Read ``openfaas-stack.yml``: function names, cron-connector schedules, labels, environment.

The stack is read the way ``faas-cli`` reads it (github:openfaas/faas-cli,
``vendor/github.com/openfaas/go-sdk/stack/stack.go`` ``ParseYAMLData``): ``${VAR}`` /
``${VAR:-default}`` references are substituted over the whole text first (drone/envsubst), then
the YAML is parsed; each function's ``environment_file`` list is read as YAML
``{environment: {KEY: VALUE}}`` and merged over its ``environment`` (``commands/deploy.go``
``readFiles`` + ``compileEnvironment``: the file wins). The files hold the per-topology
infrastructure addresses (``deploy/<topology>/functions.env.yml``); ``POWERSENSE_TOPOLOGY`` picks
the topology, ``faasd`` by default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shared.errors import ConfigurationError
from shared.settings import REPO_ROOT, five_field_cron

STACK_FILE = REPO_ROOT / "openfaas-stack.yml"

# ${NAME}, ${NAME:-default} (default when unset or empty), ${NAME-default} (default when unset):
# the subset of drone/envsubst's syntax the stack uses; $NAME without braces is left alone, as is $$.
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Substitute ``${VAR}``-style references like faas-cli's envsubst (unset and no default → "")."""
    env = os.environ if environ is None else environ

    def one(m: re.Match[str]) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        return value or ""

    return _VAR.sub(one, text)


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the stack as the gateway and the cron-connector see it."""

    name: str
    image: str
    schedule: str | None  # 5-field cron (UTC) when annotated with topic: cron-function
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # watchdog/function environment (read_timeout, exec_timeout, max_inflight, POWERSENSE_*), with the
    # selected topology's environment_file merged over it, as faas-cli deploys it
    environment: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    environment_files: tuple[str, ...] = ()


def _env_file(path: Path, function: str) -> dict[str, str]:
    if not path.is_file():
        raise ConfigurationError(f"function {function!r}: environment_file {path} does not exist")
    doc = yaml.safe_load(path.read_text()) or {}
    env = doc.get("environment") if isinstance(doc, dict) else None
    if not isinstance(env, dict):
        raise ConfigurationError(f"{path}: expected a mapping under 'environment:' (faas-cli's format)")
    return {str(k): str(v) for k, v in env.items()}


def read_stack(path: Path = STACK_FILE, environ: Mapping[str, str] | None = None) -> list[FunctionSpec]:
    """Parse the stack file; invalid cron expressions fail loudly here, not at fire time.

    ``environ`` replaces ``os.environ`` for the ``${…}`` substitution (e.g.
    ``{"POWERSENSE_TOPOLOGY": "compose"}``); ``environment_file`` paths are relative to the stack
    file's directory (faas-cli reads them relative to its working directory: run it from there).
    """
    doc = yaml.safe_load(expand_env(path.read_text(), environ))
    specs = []
    for name, fn in (doc.get("functions") or {}).items():
        annotations = {str(k): str(v) for k, v in (fn.get("annotations") or {}).items()}
        schedule = None
        if annotations.get("topic") == "cron-function":
            schedule = annotations.get("schedule", "").strip()
            if not five_field_cron(schedule):
                raise ConfigurationError(f"{path.name}: function {name!r} has invalid schedule {schedule!r}")
        files = tuple(str(f) for f in (fn.get("environment_file") or []))
        environment = {str(k): str(v) for k, v in (fn.get("environment") or {}).items()}
        for f in files:
            environment.update(_env_file(path.parent / f, name))
        specs.append(
            FunctionSpec(
                name=name,
                image=str(fn.get("image", "")),
                schedule=schedule,
                annotations=annotations,
                labels={str(k): str(v) for k, v in (fn.get("labels") or {}).items()},
                environment=environment,
                secrets=tuple(str(s) for s in (fn.get("secrets") or [])),
                environment_files=files,
            )
        )
    return specs

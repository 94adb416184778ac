"""Read ``openfaas-stack.yml``: function names, cron-connector schedules, labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from croniter import croniter

from shared.errors import ConfigurationError
from shared.settings import REPO_ROOT

STACK_FILE = REPO_ROOT / "openfaas-stack.yml"


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the stack as the gateway and the cron-connector see it."""

    name: str
    image: str
    schedule: str | None  # 5-field cron (UTC) when annotated with topic: cron-function
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # watchdog/function environment (read_timeout, exec_timeout, max_inflight, POWERSENSE_*)
    environment: dict[str, str] = field(default_factory=dict)


def read_stack(path: Path = STACK_FILE) -> list[FunctionSpec]:
    """Parse the stack file; invalid cron expressions fail loudly here, not at fire time."""
    doc = yaml.safe_load(path.read_text())
    specs = []
    for name, fn in (doc.get("functions") or {}).items():
        annotations = {str(k): str(v) for k, v in (fn.get("annotations") or {}).items()}
        schedule = None
        if annotations.get("topic") == "cron-function":
            schedule = annotations.get("schedule", "").strip()
            if not croniter.is_valid(schedule) or len(schedule.split()) != 5:
                raise ConfigurationError(f"{path.name}: function {name!r} has invalid schedule {schedule!r}")
        specs.append(
            FunctionSpec(
                name=name,
                image=str(fn.get("image", "")),
                schedule=schedule,
                annotations=annotations,
                labels={str(k): str(v) for k, v in (fn.get("labels") or {}).items()},
                environment={str(k): str(v) for k, v in (fn.get("environment") or {}).items()},
            )
        )
    return specs

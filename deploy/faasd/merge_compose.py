#!/usr/bin/env python3
"""Merge PowerSense's faasd services into faasd's own compose file (idempotent).

    python3 deploy/faasd/merge_compose.py /var/lib/faasd/docker-compose.yaml \
        deploy/faasd/docker-compose.powersense.yaml

faasd reads exactly one compose file, /var/lib/faasd/docker-compose.yaml (github:openfaas/faasd
cmd/up.go), so PowerSense's services are merged into it rather than layered with `-f`:
- every service of the fragment is added, replacing a previous copy of itself (re-running the
  install after a PowerSense upgrade updates them);
- ``x-faasd-overrides`` changes faasd's own services: environment keys are set (faasd writes its
  environment as a list of ``KEY=value``; the list form is kept), volumes are appended once;
- faasd's other services and settings are left as they are.
Needs Python 3 and PyYAML only (Debian/Ubuntu: python3-yaml), so it runs on a bare faasd host.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


def _set_env(service: dict[str, Any], values: dict[str, Any]) -> None:
    env = service.get("environment")
    if isinstance(env, dict):
        env.update({k: str(v) for k, v in values.items()})
        return
    items = [str(e) for e in (env or [])]
    for key, value in values.items():
        entry = f"{key}={value}"
        for i, existing in enumerate(items):
            if existing.split("=", 1)[0] == key:
                items[i] = entry
                break
        else:
            items.append(entry)
    service["environment"] = items


def _add_volumes(service: dict[str, Any], volumes: list[Any]) -> None:
    current = service.setdefault("volumes", [])

    def target(v: Any) -> str:
        return str(v.get("target")) if isinstance(v, dict) else str(v).split(":")[1]

    for volume in volumes:
        current[:] = [v for v in current if target(v) != target(volume)]
        current.append(volume)


def merge(faasd: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    """faasd's compose document with the fragment's services and overrides applied (in place)."""
    services = faasd.setdefault("services", {})
    for name, service in (fragment.get("services") or {}).items():
        services[name] = service
    for name, override in (fragment.get("x-faasd-overrides") or {}).items():
        if name not in services:
            raise SystemExit(f"faasd's compose file has no service {name!r} to override")
        if "environment" in override:
            _set_env(services[name], override["environment"])
        if "volumes" in override:
            _add_volumes(services[name], override["volumes"])
    return faasd


def main(argv: list[str]) -> int:
    """Rewrite argv[0] (faasd's compose file) with argv[1] (the fragment) merged in."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    target, fragment = Path(argv[0]), Path(argv[1])
    merged = merge(yaml.safe_load(target.read_text()), yaml.safe_load(fragment.read_text()))
    tmp = target.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(merged, sort_keys=False, default_flow_style=False, width=120))
    tmp.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

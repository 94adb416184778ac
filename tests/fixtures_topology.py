"""Helpers shared by the deployment tests (single host, Kubernetes, SAM, ops configs).

One definition each of: the stages, the image rules (pinned, not from a dead repository), Go durations,
the AWS cron minutes, template.yaml read with its CloudFormation tags, and finding a validator binary.
"""

from __future__ import annotations

import re
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from croniter import croniter

REPO = Path(__file__).resolve().parent.parent
STAGES = frozenset({"poll", "poll-weather", "upsert-version", "featurize", "forecast", "detect", "query"})

# Repositories that stopped serving images (a fresh host cannot pull them) or reached end of life:
# minio/minio and minio/mc (community edition source-only since 2025), bitnami/* (free images moved to
# bitnamilegacy in 2025), grafana/promtail (end of life 2026-03-02).
DEAD_REPOSITORIES = ("minio/", "bitnami/", "grafana/promtail")


def image_is_pinned(image: str) -> bool:
    """A version tag (with a digit; not ``latest``), optionally followed by a digest."""
    ref = image.split("@", 1)[0]
    name, _, tag = ref.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest") and any(c.isdigit() for c in tag)


def image_is_dead(image: str) -> bool:
    """The image comes from one of :data:`DEAD_REPOSITORIES` (with or without a ``docker.io/`` prefix)."""
    return any(f"/{dead}" in f"/{image.removeprefix('docker.io/')}" for dead in DEAD_REPOSITORIES)


def go_duration_s(value: str) -> float:
    """Seconds of a Go duration ("1m05s", "310s") or of plain seconds ("120")."""
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a Go duration: {value!r}"
    return sum(float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


def aws_minutes(expr: str) -> set[int]:
    """The minutes of the hour an hourly EventBridge ``cron(...)`` expression fires at."""
    fields = re.fullmatch(r"cron\((.+)\)", expr)[1].split()  # type: ignore[index]
    assert fields[1:] == ["*", "*", "*", "?", "*"], expr  # every hour, every day
    minute = fields[0]
    if "/" in minute:
        start, step = minute.split("/")
        return set(range(0 if start == "*" else int(start), 60, int(step)))
    return {int(minute)}


def cron_minutes(schedule: str) -> set[int]:
    """The minutes of the hour a (hourly) Unix cron schedule fires at."""
    it = croniter(schedule, datetime(2026, 1, 5))
    return {it.get_next(datetime).minute for _ in range(60)}


class _CfnLoader(yaml.SafeLoader):
    """CloudFormation short-form tags as {"Ref": x} / {"Fn::If": [...]} like the long form."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    key = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {key: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {key: loader.construct_sequence(node, deep=True)}
    return {key: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _tag)


def load_sam() -> dict[str, Any]:
    """template.yaml, its short-form tags read as the long form."""
    return yaml.load((REPO / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def sam_functions(sam: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The SAM functions by stage name."""
    return {r["Metadata"]["DockerBuildArgs"]["STAGE"]: r for r in sam["Resources"].values()
            if r["Type"] == "AWS::Serverless::Function"}


def tool(name: str, install: str) -> str:
    """Path of a validator binary (PATH or the venv of this interpreter), or skip naming its install."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} not installed: {install}")
    return found

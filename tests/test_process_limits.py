"""shared/process_limits.py: the CPUs and the memory limit read from a cgroup (v2, v1, none). The cgroup files are
written to a temporary directory, as the kernel shows them (Documentation/admin-guide/cgroup-v2.rst; v1
scheduler/sched-bwc.rst and memory.limit_in_bytes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from shared.process_limits import available_cpus, memory_limit_bytes


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(("files", "quota_cpus"), [
    ({"cpu.max": "100000 100000\n"}, 1),  # cgroup v2, one CPU (Kubernetes limits.cpu: 1)
    ({"cpu.max": "150000 100000\n"}, 2),  # v2, 1.5 CPUs: a second process still gets half a CPU
    ({"cpu.max": "max 100000\n"}, None),  # v2, no quota
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1, half a CPU
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no quota
    ({}, None),  # no cgroup files
])
def test_available_cpus_are_capped_by_the_cgroup_quota(tmp_path: Path, files: dict[str, str],
                                                       quota_cpus: int | None) -> None:
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if quota_cpus is None else min(affinity, quota_cpus)
    assert available_cpus(_cgroup(tmp_path, files)) == expected


@pytest.mark.parametrize(("files", "expected"), [
    ({"memory.max": "3221225472\n"}, 3221225472.0),  # cgroup v2, limits.memory 3Gi
    ({"memory.max": "max\n"}, float("nan")),  # v2, no limit
    ({"memory/memory.limit_in_bytes": "1073741824\n"}, 1073741824.0),  # cgroup v1
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, float("nan")),  # v1, no limit
    ({}, float("nan")),  # no cgroup file (not Linux, or not mounted)
])
def test_memory_limit_is_read_from_the_cgroup(tmp_path: Path, files: dict[str, str], expected: float) -> None:
    np.testing.assert_equal(memory_limit_bytes(_cgroup(tmp_path, files)), expected)

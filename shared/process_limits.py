"""What this process may use and has used: CPUs, the memory limit, peak resident memory (one place for each).

Limits come from the process's cgroup, v2 first, then v1 (the kernel's Documentation/admin-guide/cgroup-v2.rst,
``cpu.max`` / ``memory.max``; v1 scheduler/sched-bwc.rst ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` and
``memory.limit_in_bytes``). Inside a container the cgroup namespace makes the container's own cgroup the root of
/sys/fs/cgroup (containerd, faasd, Kubernetes), so these are the function's limits. Standard library only: light
stages may import it.
"""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
# cgroup v1 writes a page-rounded 2^63 − 1 for "no memory limit"
_V1_UNLIMITED = 2**62


def _values(path: Path) -> list[float] | None:
    """The numbers of a cgroup file ("max" = no limit = inf); None when it is absent or unreadable."""
    try:
        return [math.inf if word == "max" else float(word) for word in path.read_text().split()]
    except (OSError, ValueError):
        return None


def available_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs this process can use: its CPU affinity, capped by its cgroup's CPU quota rounded up (1.5 CPUs → 2: a
    second process still gets half a CPU)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    v2 = _values(cgroup / "cpu.max")  # "quota period" or "max period"
    if v2 is not None and len(v2) == 2:
        quota, period = v2
    else:  # v1: quota −1 = none
        quota = (_values(cgroup / "cpu" / "cpu.cfs_quota_us") or [math.inf])[0]
        period = (_values(cgroup / "cpu" / "cpu.cfs_period_us") or [0.0])[0]
    if 0 < quota < math.inf and period > 0:
        cpus = min(cpus, math.ceil(quota / period))
    return max(1, cpus)


def memory_limit_bytes(cgroup: Path = CGROUP) -> float:
    """This process's cgroup memory limit in bytes (NaN when unlimited or unknown)."""
    for path in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        values = _values(path)
        if values is not None:
            limit = values[0] if len(values) == 1 else math.nan
            return limit if limit < _V1_UNLIMITED else math.nan
    return math.nan


def peak_rss_bytes() -> tuple[float, float]:
    """Peak resident memory of this process and of the largest of its reaped child processes (e.g. training
    workers, reaped when their pool shuts down), in bytes (``ru_maxrss`` is in KiB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024.0
    return own, children

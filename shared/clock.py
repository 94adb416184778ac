"""The product's notion of "now".

Real UTC time by default; the embedded demo installs a simulated clock (replay of real data at a
chosen start and speed) so that every stage, the cron loop and the replay source agree on time.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class SimulatedClock:
    """A clock that starts at ``start`` and runs ``speed`` times faster than wall time."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.start = start.astimezone(UTC)
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        """Simulated current time (UTC)."""
        elapsed = (time.monotonic() - self._t0) * self.speed
        return datetime.fromtimestamp(self.start.timestamp() + elapsed, tz=UTC)


_lock = threading.Lock()
_clock: SimulatedClock | None = None


def now() -> datetime:
    """Current UTC time from the installed clock."""
    c = _clock
    return c.now() if c is not None else datetime.now(UTC)


def install(clock: SimulatedClock | None) -> None:
    """Install (or remove, with None) a simulated clock for the whole process."""
    global _clock
    with _lock:
        _clock = clock

"""A lease in ClickHouse: single-flight that holds across threads, processes, pods and hosts.

Why: upsert-version assigns versions by read-latest-then-insert, so two writers of ``measurements`` at
once (two replicas during a rolling redeploy, a manual run next to the cron one, the history bootstrap
next to an upsert) could assign the same version twice or skip one.  A per-process lock cannot see
the other pod; a lease in the store that every writer already shares can.

How (table ``leases``, ``ch/init/005.lease.sql``):

* The state of a lease is its highest epoch N: the holder of N is the (single) ``claim`` row of N;
  it is *free* when that holder wrote a ``release`` row for N or its ``expires_at`` has passed.
* **acquire**: read the state; if free (or already ours), insert a claim row for N+1 with
  ``insert_deduplication_token = 'lease:<name>:<N+1>:claim'``, then read the claim of N+1 back.
  ClickHouse block deduplication keeps exactly one of several concurrent claims of N+1 (the token, not
  the row content, is the block id; the check and the commit happen under one parts lock on a
  single server and chDB, and through one Keeper multi-op on a replicated table), so exactly one
  claimant reads its own holder id back and owns the lease; every other one reads someone else's
  (or, on a lagging replica, nothing) and backs off.  A claimant never decides on anything but its
  own row read back, so a stale read can only make it back off, never make two holders.
* **renew**: the holder claims N+2 the same way (a renewal races a takeover through the same
  deduplication, so the two can never both win); the holder's local deadline restarts.
* **release**: the holder inserts a ``release`` row for its epoch (idempotent: its own token).
* **expiry**: a holder that crashed never releases; its epoch is free once ``expires_at`` passed.

Time: ``acquired_at``/``expires_at`` are column defaults (``now64(3)``) and expiry is compared with
``now64(3)`` in the same statement, so every decision uses the *server's* clock — one clock for all
pods, whatever their own clocks' skew (pods never compare their wall clock with another pod's).
The product clock (``shared.clock``, simulated in the demo) is deliberately not used: a lease is an
operational timeout, not a data time.  Locally the holder only measures elapsed time (monotonic),
started *before* its claim was inserted, so its own deadline is never later than the server's.

TTL: ``POWERSENSE_UPSERT_LEASE_TTL_S`` must exceed the longest invocation of a writer (upsert-version's
``exec_timeout``), and writers call :meth:`Lease.keep_alive` between units of work, which renews after
a third of the TTL and raises :class:`LeaseLostError` rather than continue once the lease is gone.

Limits: a holder frozen for longer than the TTL between two ``keep_alive`` calls (a stopped VM) can
overlap with the next holder for that one unit of work (no fencing token is checked by the inserts);
the deduplication scope remembers the last 10 000 blocks of the table (``non_replicated_deduplication
_window``; on a cluster ``replicated_deduplication_window`` and ``replicated_deduplication_window_seconds``,
3600 s by default), far more than the milliseconds between a claimant's read and its claim; a replica
lagging further than that cannot mislead a claimant, because quorum writes and sequentially consistent
reads make it refuse to answer instead.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import pandas as pd

from shared.errors import ConflictError, StoreError
from shared.logs import log_event
from shared.store import Store

log = logging.getLogger(__name__)

TABLE = "leases"
# The one lease every writer of measurements (upsert-version, the history bootstrap) takes, and featurize, which
# must not read a batch between its insert and its plausibility flags (shared/features.py run_featurize).
MEASUREMENTS_WRITER = "measurements-writer"

# On a replicated lease table (cluster): a claim is acknowledged only once a majority of replicas hold
# it, in insert order, and reads refuse to answer from a replica that lacks an acknowledged claim.
# A non-replicated MergeTree (chDB, one server) accepts and ignores both, so one code path serves all.
_WRITE_SETTINGS: dict[str, Any] = {"insert_quorum": "auto", "insert_quorum_parallel": 0}
_READ = "settings select_sequential_consistency = 1"


class LeaseHeldError(ConflictError):
    """The lease is held by another holder (HTTP 409)."""


class LeaseLostError(ConflictError):
    """The holder's lease expired and/or was taken over before it renewed (HTTP 409)."""


@dataclass(frozen=True)
class LeaseState:
    """The latest epoch of a lease as the server sees it."""

    epoch: int  # 0: never claimed
    holder: str | None  # claimant of ``epoch`` (None: no claim visible)
    expires_at: datetime | None
    released: bool
    expired: bool  # expires_at <= the server's now64(3)

    @property
    def free(self) -> bool:
        """True when anyone may claim the next epoch."""
        return self.holder is None or self.released or self.expired

    def claimable_by(self, holder: str) -> bool:
        """True when ``holder`` may claim the next epoch (free, or its own: renewal)."""
        return self.free or self.holder == holder


def state_from_rows(rows: list[tuple[Any, ...]]) -> LeaseState:
    """The state from the rows of the highest epoch: ``(epoch, kind, holder, expires_at, expired)``.

    Pure.  Several claim rows of one epoch cannot exist within the deduplication window; if they
    ever did, the earliest (rows arrive ordered by acquired_at, holder) is the holder, the same rule
    the read-back applies.
    """
    if not rows:
        return LeaseState(epoch=0, holder=None, expires_at=None, released=False, expired=False)
    claims = [r for r in rows if r[1] == "claim"]
    epoch = int(rows[0][0])
    if not claims:  # a release row whose claim is not visible here (lagging replica): treat as free
        return LeaseState(epoch=epoch, holder=None, expires_at=None, released=True, expired=False)
    _, _, holder, expires_at, expired = claims[0]
    released = any(r[1] == "release" and r[2] == holder for r in rows)
    return LeaseState(epoch=epoch, holder=str(holder), expires_at=expires_at, released=released,
                      expired=bool(expired))


def new_holder_id() -> str:
    """A holder id unique per Lease object: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Lease:
    """A named lease with expiry, held by this object (one holder id per instance).

    ``acquire()`` → bool; ``renew()``/``keep_alive()`` raise :class:`LeaseLostError` once lost;
    ``release()`` is idempotent.  As a context manager it acquires (raising :class:`LeaseHeldError`
    when held elsewhere) unless already held, and always releases on exit.
    """

    def __init__(self, store: Store, name: str, *, ttl_s: float, holder: str | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.store = store
        self.name = name
        self.ttl_s = float(ttl_s)
        self.holder = holder or new_holder_id()
        self.epoch: int | None = None  # the epoch we hold
        self._claimed_at = 0.0  # monotonic, taken before the claim was inserted
        self.last_state: LeaseState | None = None

    # --- I/O ------------------------------------------------------------------------------------
    def state(self) -> LeaseState:
        """Read the lease's latest epoch (server time decides expiry)."""
        rows = self.store.query_rows(
            f"""
            select epoch, kind, holder, expires_at, expires_at <= now64(3) as expired
            from {{db:Identifier}}.{TABLE}
            where name = {{name:String}}
              and epoch = (select max(epoch) from {{db:Identifier}}.{TABLE} where name = {{name:String}})
            order by kind, acquired_at, holder
            {_READ}
            """,
            {"name": self.name},
        )
        self.last_state = state_from_rows(rows)
        return self.last_state

    def _claim(self, epoch: int) -> bool:
        """Insert our claim of ``epoch`` and report whether ours is the claim that landed."""
        started = time.monotonic()
        row = {"name": self.name, "epoch": epoch, "kind": "claim", "holder": self.holder,
               "ttl_ms": round(self.ttl_s * 1000)}
        try:
            self.store.insert_df(TABLE, pd.DataFrame([row]), dedup_token=f"lease:{self.name}:{epoch}:claim",
                                 settings=_WRITE_SETTINGS)
        except StoreError as exc:
            # On a replicated lease table a concurrent quorum insert is refused while another one is in
            # flight (insert_quorum_parallel = 0): that is contention, not an outage. The read-back decides
            # (and raises if the store is really unreachable).
            log_event(log, "lease_claim_refused", lease=self.name, epoch=epoch, holder=self.holder, error=str(exc))
        winner = self.store.scalar(
            f"""
            select holder from {{db:Identifier}}.{TABLE}
            where name = {{name:String}} and epoch = {{epoch:UInt64}} and kind = 'claim'
            order by acquired_at, holder limit 1
            {_READ}
            """,
            {"name": self.name, "epoch": epoch},
        )
        if winner != self.holder:
            return False
        self.epoch = epoch
        self._claimed_at = started
        return True

    def try_acquire(self) -> bool:
        """One attempt: claim the next epoch if the lease is free; True when we hold it."""
        if self.held:
            return True
        state = self.state()
        if not state.claimable_by(self.holder):
            return False
        won = self._claim(state.epoch + 1)
        log_event(log, "lease_acquired" if won else "lease_contended", lease=self.name, epoch=state.epoch + 1,
                  holder=self.holder)
        if not won:
            self.state()  # who won, for the caller's skip reason
        return won

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> bool:
        """Acquire, retrying for up to ``wait_s`` seconds while another holder has it."""
        deadline = time.monotonic() + max(wait_s, 0.0)
        while True:
            if self.try_acquire():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(poll_s, remaining))

    def renew(self) -> None:
        """Claim the next epoch as the current holder; raise LeaseLostError when no longer the holder."""
        if self.epoch is None:
            raise LeaseLostError(f"lease {self.name} is not held by {self.holder}")
        state = self.state()
        if state.epoch != self.epoch or state.holder != self.holder or state.released:
            self.epoch = None
            raise LeaseLostError(f"lease {self.name} was taken over (epoch {state.epoch} by {state.holder})")
        if not self._claim(state.epoch + 1):
            self.epoch = None
            raise LeaseLostError(f"lease {self.name} was taken over while renewing epoch {state.epoch + 1}")
        log_event(log, "lease_renewed", lease=self.name, epoch=self.epoch, holder=self.holder)

    def keep_alive(self) -> None:
        """Call between units of work: renew once a third of the TTL has passed since the last claim.

        Raises LeaseLostError when the lease is gone, so the caller stops instead of writing on
        after another holder may have started.
        """
        if self.epoch is None:
            raise LeaseLostError(f"lease {self.name} is not held by {self.holder}")
        if self.elapsed_s >= self.ttl_s / 3:
            self.renew()

    def release(self) -> None:
        """Give the lease back (no-op when not held)."""
        if self.epoch is None:
            return
        epoch, self.epoch = self.epoch, None
        row = {"name": self.name, "epoch": epoch, "kind": "release", "holder": self.holder, "ttl_ms": 0}
        self.store.insert_df(TABLE, pd.DataFrame([row]), dedup_token=f"lease:{self.name}:{epoch}:release",
                             settings=_WRITE_SETTINGS)
        log_event(log, "lease_released", lease=self.name, epoch=epoch, holder=self.holder)

    # --- local view -----------------------------------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        """Seconds since our current claim was sent (monotonic; 0 when not held)."""
        return time.monotonic() - self._claimed_at if self.epoch is not None else 0.0

    @property
    def held(self) -> bool:
        """True while we hold an epoch and its TTL has not run out by our own (conservative) count."""
        return self.epoch is not None and self.elapsed_s < self.ttl_s

    def describe_other(self) -> str:
        """Who holds the lease, as last read (for skip reasons and logs)."""
        s = self.last_state
        if s is None or s.holder is None:
            return f"lease {self.name}"
        return f"lease {self.name} held by {s.holder} until {s.expires_at} (server time)"

    def __enter__(self) -> Lease:
        if not self.held and not self.acquire():
            raise LeaseHeldError(f"{self.describe_other()}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

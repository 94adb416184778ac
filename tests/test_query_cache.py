"""shared.query.cache.QueryCache.memo under concurrent callers (the /metrics render, the per-watermark facts)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.query.cache import QueryCache


def test_concurrent_callers_of_one_key_compute_it_once() -> None:
    # 30 concurrent /metrics scrapes at the start of a 10 s window ran the collector's queries 30 times
    cache, calls, gate = QueryCache(ttl_s=1.0), [], threading.Barrier(30)

    def compute() -> bytes:
        calls.append(1)
        time.sleep(0.2)  # a slow render: every other caller arrives while it runs
        return b"rendered"

    def scrape() -> bytes:
        gate.wait()
        return bytes(cache.memo(("db", "metrics", 0), compute))

    with ThreadPoolExecutor(30) as pool:
        results = list(pool.map(lambda _: scrape(), range(30)))
    assert results == [b"rendered"] * 30 and len(calls) == 1


def test_a_failed_computation_is_not_cached() -> None:
    cache = QueryCache(ttl_s=1.0)

    def fail() -> None:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        cache.memo("k", fail)
    assert cache.memo("k", lambda: 42) == 42

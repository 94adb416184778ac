"""The local gateway served by uvicorn in a thread (tests/test_gateway.py, tests/test_readme_examples.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from local_dev.gateway import create_gateway_app


@contextmanager
def serve_gateway(port: int, join_timeout_s: float = 10) -> Iterator[str]:
    """``create_gateway_app()`` (settings as the environment has them now) on 127.0.0.1:``port``; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(create_gateway_app(), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "gateway did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=join_timeout_s)

"""``python -m local_dev scheduler`` — the cron-connector of the plain-compose topology.

Without OpenFaaS there is no gateway and no cron-connector: this process reads the schedules from
``openfaas-stack.yml`` (the same annotations the cron-connector reads) and fires them with the
embedded :class:`~local_dev.cron.CronConnector` — the one cron of the product — on the real clock,
calling each function's watchdog directly (``POST http://<service>:8080/`` with the connector's
method, empty body and ``X-Topic``/``X-Connector`` headers). SIGTERM/SIGINT stop it after the
calls in flight return.

Its HTTP timeout stands in for the gateway's: it must exceed every scheduled ``exec_timeout``, or a
long run (forecast training) would be reported as failed while it goes on. Start-up refuses a
shorter one.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from pathlib import Path
from types import FrameType

from local_dev.cron import CronConnector
from local_dev.stack import STACK_FILE, FunctionSpec, read_stack
from shared.errors import ConfigurationError
from shared.logs import configure_logging, current_function, log_event

log = logging.getLogger(__name__)

# of-watchdog reads durations as Go durations or as plain seconds (github:openfaas/of-watchdog
# config/config.go parseIntOrDurationValue); the stack uses "60s" / "5m" / "120".
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration_s(value: str) -> float:
    """Seconds of a watchdog duration value (``"65s"``, ``"5m"``, ``"120"``)."""
    m = _DURATION.match(value.strip())
    if not m:
        raise ConfigurationError(f"not a duration: {value!r}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def exec_timeout_s(spec: FunctionSpec) -> float:
    """The function's ``exec_timeout`` in seconds (of-watchdog's default is 10 s)."""
    return duration_s(spec.environment.get("exec_timeout", "10s"))


def function_urls(specs: list[FunctionSpec], url_template: str) -> dict[str, str]:
    """URL of every function: ``url_template`` with ``{name}`` replaced by the function name."""
    return {s.name: url_template.format(name=s.name) for s in specs}


def resolve_timeout_s(specs: list[FunctionSpec], requested: float | None) -> float:
    """The scheduler's HTTP timeout: ``requested`` or the longest scheduled exec_timeout + 30 s;
    one not above every scheduled exec_timeout is a misconfiguration."""
    longest = max((exec_timeout_s(s) for s in specs if s.schedule), default=0.0)
    timeout = longest + 30.0 if requested is None else requested
    if timeout <= longest:
        raise ConfigurationError(
            f"scheduler timeout {timeout:g} s must exceed the longest exec_timeout ({longest:g} s)"
        )
    return timeout


def main(argv: list[str]) -> int:
    """Run the scheduler until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m local_dev scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", type=Path, default=STACK_FILE, help="stack file with the schedules")
    parser.add_argument("--url-template", default=os.environ.get("POWERSENSE_FUNCTION_URL_TEMPLATE",
                                                                "http://{name}:8080/"),
                        help="URL of a function; {name} is its name (default http://{name}:8080/)")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="HTTP timeout per call (default: longest exec_timeout + 30 s)")
    args = parser.parse_args(argv)
    if not args.stack.is_file():  # was a FileNotFoundError traceback
        parser.error(f"--stack {args.stack}: no such file")

    configure_logging(os.environ.get("POWERSENSE_LOG_LEVEL", "INFO"))
    current_function.set("scheduler")
    specs = read_stack(args.stack)
    timeout = resolve_timeout_s(specs, args.timeout_s)
    connector = CronConnector("", specs, timeout_s=timeout,
                              function_urls=function_urls(specs, args.url_template))

    def stop(signum: int, _frame: FrameType | None) -> None:
        log_event(log, "scheduler_stopping", signal=signal.Signals(signum).name)
        connector.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log_event(log, "scheduler_started", timeout_s=timeout,
              schedules={s.name: s.schedule for s in connector.specs},
              urls=connector.function_urls)
    try:
        connector.run()
    finally:
        connector.close()
    log_event(log, "scheduler_stopped", ticks=connector.ticks)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

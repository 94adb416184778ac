"""JSON-lines logging: every record carries ``function``, ``run_id`` and ``event``.

``time`` is UTC (``YYYY-MM-DD HH:MM:SS,mmm``). ``function`` and ``run_id`` live in context variables so that a
record logged anywhere below a handler (store, source client, model code) is attributed to the invocation that
caused it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger import jsonlogger

current_function: ContextVar[str] = ContextVar("current_function", default="-")
current_run_id: ContextVar[str] = ContextVar("current_run_id", default="-")

# Keys that must never reach a log line, whatever a caller passes in ``extra``.
_REDACT = ("password", "token", "secret", "authorization")


_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _event_of(record: logging.LogRecord) -> str:
    """The event of a record logged without one: its message when that is an event name (``log.info("x_done")``),
    else its logger's name."""
    message = record.msg if isinstance(record.msg, str) and not record.args else ""
    return message if _EVENT_NAME.fullmatch(message) else record.name


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.function = getattr(record, "function", None) or current_function.get()
        record.run_id = getattr(record, "run_id", None) or current_run_id.get()
        # Alloy makes `event` a Loki label, so it must come from a bounded set: a record logged without one (another
        # library's: uvicorn's "Started server process [28438]") is named by its logger, not by its free text
        record.event = getattr(record, "event", None) or _event_of(record)
        for key in list(record.__dict__):
            if any(word in key.lower() for word in _REDACT):
                record.__dict__[key] = "***"
        return True


_configured = False


def configure_logging(level: str = "INFO", path: str | None = None) -> None:
    """Install the JSON handler on the root logger once per process (stderr, or ``path``:
    the embedded runtime writes a file that Grafana Alloy can tail, keeping the console readable)."""
    global _configured
    root = logging.getLogger()
    root.setLevel(level)
    if _configured:
        return
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    formatter = jsonlogger.JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(function)s %(run_id)s %(event)s",
        rename_fields={"levelname": "level", "asctime": "time"},
    )
    # ``time`` in UTC, the product's one clock: Alloy reads it as UTC (observability/alloy/config.alloy,
    # stage.timestamp). logging's default is the host's local time, so a host east of UTC (the embedded
    # runtime on an analyst's machine) stamped lines in Loki's future, which Loki rejects beyond 10 minutes
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_ContextFilter())
    root.handlers = [handler]
    for noisy in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a structured event: ``event`` is a short snake_case name, ``fields`` its data; an exception passed as
    ``exc_info`` adds its traceback to the line (``exc_info`` in the JSON)."""
    exc_info = fields.pop("exc_info", None)
    logger.log(level, event, exc_info=exc_info, extra={"event": event, **fields})

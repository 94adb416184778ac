"""``python -m local_dev demo [options]`` — the embedded runtime; ``python -m local_dev scheduler`` — the
plain-compose topology's cron (local_dev/scheduler.py)."""

from __future__ import annotations

import sys


def main() -> int:
    """Dispatch local_dev commands."""
    args = sys.argv[1:]
    if args[:1] == ["demo"]:
        from local_dev.demo import main as demo

        return demo(args[1:])
    if args[:1] == ["scheduler"]:
        from local_dev.scheduler import main as scheduler

        return scheduler(args[1:])
    print("usage: python -m local_dev demo [--ticks N] [--speed X] [--start ISO] [--port P] [--source-url URL]\n"
          "                              [--weather-url URL]\n"
          "       python -m local_dev scheduler [--stack FILE] [--url-template URL] [--timeout-s S]")
    return 2


if __name__ == "__main__":
    sys.exit(main())

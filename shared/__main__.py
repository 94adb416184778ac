"""Command line: ``python -m shared <command> …``.

Commands are imported lazily so that a light command never loads the ML stack.
"""

from __future__ import annotations

import importlib
import sys

from shared.errors import run_cli

COMMANDS = {
    "evaluate": ("shared.forecasting.evaluate", "main", "backtest the forecast model (make evaluate)"),
    "evaluate-weather-store": ("shared.weather.provider", "main",
                               "backtest the weather model with the temperature forecasts stored as known then"),
    "evaluate-anomalies": ("shared.detection.evaluate", "main", "evaluate anomaly detectors (make evaluate-anomalies)"),
    "bootstrap": ("shared.ingest.bootstrap", "main", "load the shipped history into the store"),
    "weather-backfill": ("shared.weather.service", "main", "load realised temperature (shipped Enedis; --archive)"),
    "reflag": ("shared.ingest.versioning", "reflag_main", "flag implausible values already stored (after an upgrade)"),
    "set-current-model": ("shared.artifacts", "set_current_main",
                          "point a series' current model at a stored version (rollback); no version: list them"),
    "config": ("shared.config_doc", "main", "print every setting (POWERSENSE_*) as a Markdown table"),
    "ddl": ("shared.schema", "main", "print the DDL; --cluster NAME: its sharded, replicated rendering"),
    "apply-schema": ("shared.schema", "apply_main", "apply the DDL to the configured server now (before an upgrade)"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a command's ``main(argv)``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        asked = bool(args) and args[0] in ("-h", "--help")
        # help asked for goes to stdout (exit 0); after a mistake, as argparse does, the usage and the error go to
        # stderr (exit 2), and a mistyped command is named: the usage alone did not say what was wrong
        out = sys.stdout if asked else sys.stderr
        print("usage: python -m shared <command> [options]\n\ncommands:", file=out)
        for name, (_, _, help_) in COMMANDS.items():
            print(f"  {name:<20} {help_}", file=out)
        if asked:
            return 0
        problem = f"unknown command {args[0]!r}" if args else "no command given"
        print(f"python -m shared: error: {problem}", file=out)
        return 2
    name = args[0]
    module, func, _ = COMMANDS[name]
    command = getattr(importlib.import_module(module), func)
    # every command goes through run_cli: a bad date or a command run before the one it needs is one line and
    # exit 2 / 1, never a traceback (the commands that wrap themselves keep their own program name)
    return run_cli(name, lambda rest: int(command(rest) or 0), args[1:])


if __name__ == "__main__":
    sys.exit(main())

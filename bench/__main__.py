"""Run benchmark sections and merge their results into bench/results.json.

``python -m bench`` runs every section; ``python -m bench ingest query`` runs only those.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"
SECTIONS = ("ingest", "forecast", "query")


def main(argv: list[str]) -> int:
    """Run the named sections (default: all) and write the merged results file."""
    wanted = argv or list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"unknown sections: {unknown}; known: {SECTIONS}", file=sys.stderr)
        return 2
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in wanted:
        module = importlib.import_module(f"bench.{name}")
        t0 = time.perf_counter()
        print(f"[bench] {name} …", flush=True)
        section = module.run()
        section["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        section["bench_wall_s"] = round(time.perf_counter() - t0, 2)
        section["machine"] = {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}
        results[name] = section
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(json.dumps({name: section}, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

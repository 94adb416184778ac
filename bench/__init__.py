"""Benchmarks (``make bench``): each section module exposes ``run() -> dict`` and the results are
merged into ``bench/results.json`` so figures can be compared run to run."""

"""An app served the way a function's ``fprocess`` serves ``handler:app`` (the ``uvicorn`` console script as the
process's ``__main__``), whose one route trains a model with a worker process (tests/test_fprocess_training.py).

Not collected by pytest (no ``test_`` prefix): it runs in the server's own process.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.post("/train")
def train() -> dict[str, Any]:
    """Two level seeds and two training processes: seed 1 trains in a ``spawn``ed worker (``model._fit_seeds``)."""
    from shared.forecasting import model as fm
    from shared.process_limits import peak_rss_bytes
    from tests.fixtures_forecast import grid_2022, tiny_model_config

    grid = grid_2022("2022-03-01", start="2022-01-01")
    model = fm.fit(grid, tiny_model_config(level_seeds=2, train_processes=2))
    # the reaped children's peak, as the stage reports it: > 0 once a worker has run and been joined
    return {"pid": os.getpid(), "levels": 1 + len(model.extra_levels), "workers_peak_rss_bytes": peak_rss_bytes()[1]}

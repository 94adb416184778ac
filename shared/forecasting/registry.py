"""Model (de)serialisation on top of the artifact store's bytes API.

The artifact store (``shared/artifacts.py``) keeps versioned files, their metadata and a ``current``
pointer, and knows nothing of what the files mean; this module is the one place that turns a trained
:class:`shared.forecasting.model.LoadModel` into files and back. Keeping it on the domain side lets the
light query stage list versions through the store without any path to torch.
"""

from __future__ import annotations

from typing import Any

from shared.artifacts import ArtifactStore
from shared.errors import ModelError
from shared.forecasting import model as fm


def save_model(artifacts: ArtifactStore, series: str, version: str, model: fm.LoadModel,
               meta: dict[str, Any]) -> None:
    """Serialise ``model`` and store it as ``series/version`` with ``meta`` (meta written last)."""
    artifacts.save_version(series, version, fm.to_files(model), meta)


def load_model(artifacts: ArtifactStore, series: str, version: str) -> fm.LoadModel:
    """The trained model of ``series/version`` (ModelError when its files do not deserialise)."""
    files = artifacts.get_files(series, version)
    try:
        return fm.from_files(files)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 -- damaged bytes raise whatever their reader raises
        # a truncated or zeroed state dict is EOFError / UnpicklingError from torch.load, a missing key KeyError, a
        # bad archive RuntimeError: each is "this version does not load", and the stage falls back or retrains
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ModelError(f"cannot load model {series}/{version}: {detail}") from exc

"""Data layer: atomic files, dataset resolution/download, splits, the collaborative graph.

The names below are imported on first use (PEP 562), so that ``import kgglm.data.dataset`` (the
model, decoding and serving need it) does not pull in pandas, which only parsing atomic files needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "CollaborativeGraph": "kgglm.data.graph",
    "Dataset": "kgglm.data.dataset",
    "DatasetError": "kgglm.data.atomic",
    "Interactions": "kgglm.data.dataset",
    "load_dataset": "kgglm.data.loader",
    "DataConfig": "kgglm.data.loader",
}
__all__ = ["CollaborativeGraph", "DataConfig", "Dataset", "DatasetError", "Interactions", "load_dataset"]

if TYPE_CHECKING:
    from kgglm.data.atomic import DatasetError
    from kgglm.data.dataset import Dataset, Interactions
    from kgglm.data.graph import CollaborativeGraph
    from kgglm.data.loader import DataConfig, load_dataset


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""Data layer: atomic files, dataset resolution/download, splits, the collaborative graph."""

from kgglm.data.atomic import DatasetError
from kgglm.data.dataset import Dataset, Interactions
from kgglm.data.graph import CollaborativeGraph
from kgglm.data.loader import load_dataset, load_dataset_from_config

__all__ = ["CollaborativeGraph", "Dataset", "DatasetError", "Interactions", "load_dataset",
           "load_dataset_from_config"]

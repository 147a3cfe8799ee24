"""Data layer: the Dataset, readers, built-in datasets, filtering, splits and sampling."""

from polyrec.data.dataset import Dataset, IdMap, Sequences

__all__ = ["Dataset", "IdMap", "Sequences"]

"""Data layer: the Dataset, readers, built-in datasets, filtering, splits and sampling."""

from polyrec.data.dataset import Dataset, IdMap, Sequences
from polyrec.data.filtering import FilterReport, binarize, compact, dedupe, k_core
from polyrec.data.io import (
    read_lcrec,
    read_lightgcn_split,
    read_movielens,
    read_recbole,
    read_sequences,
    read_table,
    read_user_item_lists,
)
from polyrec.data.registry import list_datasets, load_dataset, load_given_split
from polyrec.data.split import Split, leave_one_out, ratio_split, temporal_split

__all__ = [
    "Dataset",
    "FilterReport",
    "IdMap",
    "Sequences",
    "Split",
    "binarize",
    "compact",
    "dedupe",
    "k_core",
    "leave_one_out",
    "list_datasets",
    "load_dataset",
    "load_given_split",
    "ratio_split",
    "read_lcrec",
    "read_lightgcn_split",
    "read_movielens",
    "read_recbole",
    "read_sequences",
    "read_table",
    "read_user_item_lists",
    "temporal_split",
]

"""Precomputed item feature matrices: MMRec's ``text_feat.npy`` / ``image_feat.npy`` layout.

MMRec (Zhou, "MMRec: Simplifying Multimodal Recommendation", 2023; enoche/MMRec) stores one
float matrix per modality in the dataset folder, row ``r`` being the item whose ``itemID`` in
the ``.inter`` file is ``r``. :func:`load_feature_matrices` reads the modalities asked for, aligns
their rows to a :class:`~polyrec.data.Dataset`'s internal item order (by the dataset's external
item ids, or by an explicit ``row_ids`` list), optionally reduces each with PCA, and
:func:`attach_features` stores them in ``Dataset.item_vectors`` where the multimodal models read
them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError

#: modality name -> file name in the MMRec layout
MMREC_FILES: dict[str, str] = {"text": "text_feat.npy", "image": "image_feat.npy"}


def load_feature_matrices(
    folder: str | Path,
    dataset: Dataset,
    modalities: Sequence[str] = ("text", "image"),
    *,
    required: bool = True,
    row_ids: Sequence[Any] | np.ndarray | None = None,
    pca: int | Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Feature matrices of ``modalities`` aligned to ``dataset``'s items: ``{name: (n_items, d)}``.

    Args:
        folder: directory holding ``text_feat.npy`` / ``image_feat.npy``.
        dataset: rows are reordered to its internal item order.
        modalities: which files to read (keys of :data:`MMREC_FILES`).
        required: a missing file is an error; with ``False`` that modality is left out.
        row_ids: the external item id of each file row; default: row ``r`` is item id ``r``
            (MMRec's 0-based ``itemID``), matched against the dataset's ids as integers.
        pca: target dimension for every modality, or per modality; ``None`` keeps the raw size.
        seed: seed of the randomized PCA solver (used for large matrices).
    """
    root = Path(folder)
    unknown = [m for m in modalities if m not in MMREC_FILES]
    if unknown:
        raise PolyrecError(f"unknown modality {unknown[0]!r}; known: {', '.join(MMREC_FILES)}")
    out: dict[str, np.ndarray] = {}
    for name in modalities:
        path = root / MMREC_FILES[name]
        if not path.is_file():
            if required:
                raise PolyrecError(f"{name} features not found: expected {path}")
            continue
        raw = np.load(path, allow_pickle=False)
        if raw.ndim != 2:
            raise PolyrecError(f"{path} must be a 2-d (items x dim) matrix, got shape {raw.shape}")
        matrix = align_rows(raw, dataset, row_ids, where=str(path))
        dim = pca.get(name) if isinstance(pca, Mapping) else pca
        out[name] = reduce_pca(matrix, dim, seed=seed) if dim is not None else matrix
    if not out:
        raise PolyrecError(f"no feature file of {list(modalities)} found in {root}")
    return out


def align_rows(
    matrix: np.ndarray,
    dataset: Dataset,
    row_ids: Sequence[Any] | np.ndarray | None = None,
    *,
    where: str = "feature matrix",
) -> np.ndarray:
    """Rows of ``matrix`` reordered to ``dataset``'s internal items (float32, finite).

    Every item of the dataset must have a row; extra rows (items filtered out of the dataset)
    are dropped.
    """
    n_rows = matrix.shape[0]
    if row_ids is None:
        ids = np.arange(n_rows)
        try:
            wanted = dataset.item_ids.external.astype(np.int64)
        except (TypeError, ValueError) as exc:
            raise PolyrecError(
                f"{where}: dataset item ids are not integers; pass row_ids to align rows"
            ) from exc
    else:
        ids = np.asarray(row_ids)
        if len(ids) != n_rows:
            raise PolyrecError(f"{where} has {n_rows} rows but row_ids has {len(ids)} entries")
        wanted = dataset.item_ids.external
    position = {key: row for row, key in enumerate(ids.tolist())}
    rows = np.fromiter((position.get(key, -1) for key in wanted.tolist()), np.int64, len(wanted))
    if (rows < 0).any():
        missing = int((rows < 0).sum())
        first = wanted[np.flatnonzero(rows < 0)[0]]
        raise PolyrecError(
            f"{where} has {n_rows} rows for a dataset of {dataset.n_items} items: "
            f"{missing} item(s) have no row (first: {first!r})"
        )
    out = np.ascontiguousarray(matrix[rows], dtype=np.float32)
    if not np.isfinite(out).all():
        raise PolyrecError(f"{where} contains NaN or infinite values")
    return out


def reduce_pca(matrix: np.ndarray, dim: int, *, seed: int = 0) -> np.ndarray:
    """Project the centred rows on their top ``dim`` principal components (float32).

    Exact SVD for small matrices, a randomized range finder (Halko, Martinsson, Tropp 2011,
    two power iterations) when the smaller side exceeds 2,000, which keeps 4096-d image
    features of tens of thousands of items within seconds.
    """
    n, d = matrix.shape
    if dim < 1 or dim > min(n, d):
        raise PolyrecError(f"PCA dimension must be in [1, {min(n, d)}], got {dim}")
    x = matrix.astype(np.float64) - matrix.mean(axis=0, dtype=np.float64)
    if min(n, d) <= 2000:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        components = vt[:dim]
    else:
        rng = np.random.default_rng(seed)
        q = x @ rng.standard_normal((d, dim + 10))
        for _ in range(2):
            q, _ = np.linalg.qr(x @ (x.T @ q))
        _, _, vt = np.linalg.svd(q.T @ x, full_matrices=False)
        components = vt[:dim]
    return (x @ components.T).astype(np.float32)


def attach_features(dataset: Dataset, features: Mapping[str, np.ndarray]) -> Dataset:
    """A dataset with the same interactions whose ``item_vectors`` also hold ``features``."""
    for name, matrix in features.items():
        if matrix.ndim != 2 or matrix.shape[0] != dataset.n_items:
            raise PolyrecError(
                f"{name} features have shape {matrix.shape}; expected ({dataset.n_items}, d)"
            )
    out = dataset.with_interactions(np.arange(dataset.n_interactions))
    out.item_vectors = {**dataset.item_vectors, **{k: np.asarray(v) for k, v in features.items()}}
    return out


def select_modalities(dataset: Dataset, modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """The ``item_vectors`` named in ``modalities`` (in that order), with a clear error when a
    modality the caller needs was never attached."""
    missing = [m for m in modalities if m not in dataset.item_vectors]
    if missing:
        have = ", ".join(sorted(dataset.item_vectors)) or "none"
        raise PolyrecError(
            f"modality {missing[0]!r} is not among the dataset's item features ({have}); "
            "attach it with polyrec.features.matrix.attach_features"
        )
    out = {}
    for m in modalities:
        matrix = np.asarray(dataset.item_vectors[m], dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != dataset.n_items:
            raise PolyrecError(
                f"{m} features have shape {matrix.shape}; expected ({dataset.n_items}, d)"
            )
        out[m] = matrix
    return out

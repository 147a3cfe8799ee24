"""The ``features:`` section of a run config attaches item feature matrices before the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polyrec.errors import PolyrecError
from polyrec.experiment import prepare_data, resolve_config

OPTIONS = {"n_users": 60, "n_items": 40, "n_interactions": 600}


def test_mmrec_matrices_are_attached_in_item_order(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(OPTIONS["n_items"], 6)).astype(np.float32)
    np.save(tmp_path / "image_feat.npy", image)
    spec = resolve_config(
        "vbpr",
        "synthetic",
        overrides={
            "dataset_options": OPTIONS,
            "features": {"folder": str(tmp_path), "modalities": ["image"], "pca": 3},
        },
    )
    split = prepare_data(spec).split
    vectors = split.train.item_vectors["image"]
    assert vectors.shape == (OPTIONS["n_items"], 3)
    assert split.test.item_vectors["image"] is vectors  # every part shares the matrix
    ids = split.train.item_ids.external.astype(int)
    centred = image[ids] - image[ids].mean(0)
    # PCA keeps the rows' geometry up to rotation: the Gram matrices of the top-3 subspace agree
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    expected = (u[:, :3] * s[:3]) @ (u[:, :3] * s[:3]).T
    np.testing.assert_allclose(vectors @ vectors.T, expected, atol=1e-3)
    assert resolve_config("vbpr", "synthetic", overrides=spec.to_dict()).features == spec.features


def test_unknown_features_key_is_one_line() -> None:
    with pytest.raises(PolyrecError, match="features") as err:
        resolve_config("vbpr", "synthetic", overrides={"features": {"txt": {}}})
    assert "\n" not in str(err.value)

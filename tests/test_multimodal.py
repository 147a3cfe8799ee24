"""Multimodal features (matrix loader, PCA, image embeddings) and models (VBPR, FREEDOM)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.features.image import PixelEncoder, embed_item_images, load_image_encoder
from polyrec.features.matrix import (
    attach_features,
    load_feature_matrices,
    reduce_pca,
    select_modalities,
)
from polyrec.models.multimodal.common import knn_item_graph
from polyrec.models.multimodal.freedom import FREEDOM, prune_edges
from polyrec.models.multimodal.vbpr import VBPR

torch.set_num_threads(1)
FAST = {"epochs": 3, "batch_size": 256, "progress": False, "early_stopping": None}


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(60, 40, 900, seed=1)
    rng = np.random.default_rng(0)
    feats = {
        "text": ds.item_vectors["latent"] + 0.1 * rng.normal(size=ds.item_vectors["latent"].shape),
        "image": rng.normal(size=(ds.n_items, 6)),
    }
    return attach_features(ds, {k: v.astype(np.float32) for k, v in feats.items()})


# ----------------------------------------------------------------------------- feature loaders
def test_load_feature_matrices_aligns_rows_and_skips_missing(tmp_path, data):
    n = data.n_items
    raw = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    ids = data.item_ids.external[::-1]  # file rows in reverse item order
    np.save(tmp_path / "text_feat.npy", raw)
    out = load_feature_matrices(tmp_path, data, ["text", "image"], required=False, row_ids=ids)
    assert set(out) == {"text"}  # image_feat.npy absent: left out
    np.testing.assert_array_equal(out["text"], raw[::-1])
    with pytest.raises(PolyrecError, match="image features not found"):
        load_feature_matrices(tmp_path, data, ["image"])


def test_mismatched_item_count_is_a_clear_error(tmp_path, data):
    np.save(tmp_path / "text_feat.npy", np.zeros((data.n_items - 2, 4), np.float32))
    with pytest.raises(PolyrecError, match=r"rows for a dataset of \d+ items"):
        load_feature_matrices(tmp_path, data, ["text"], row_ids=data.item_ids.external[:-2])
    with pytest.raises(PolyrecError, match="row_ids has"):
        load_feature_matrices(tmp_path, data, ["text"], row_ids=data.item_ids.external)
    with pytest.raises(PolyrecError, match="expected"):
        attach_features(data, {"text": np.zeros((3, 2))})
    with pytest.raises(PolyrecError, match="modality 'audio'"):
        select_modalities(data, ["audio"])


def test_pca_keeps_the_top_variance_directions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)) @ np.array([[5.0, 0, 0, 0], [0, 1.0, 0, 0]])
    x += 0.01 * rng.normal(size=(200, 4))
    z = reduce_pca(x.astype(np.float32), 2)
    assert z.shape == (200, 2)
    var = z.var(axis=0)
    assert var[0] > 20 * var[1] > 0  # first component carries the 5x axis
    # variance kept = variance of the data in the top-2 subspace
    assert np.isclose(var.sum(), x.var(axis=0)[:2].sum(), rtol=0.02)
    with pytest.raises(PolyrecError, match="PCA dimension"):
        reduce_pca(x, 9)


class _TinyCNN:
    """A randomly initialised conv net with sentence-transformers' ``encode`` for images."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(4, 5),
        )

    def encode(self, images, batch_size=32, **kwargs):
        x = torch.stack(
            [torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1) for im in images]
        )
        with torch.no_grad():
            return self.net(x)


def test_image_embeddings_from_files(tmp_path, data):
    from PIL import Image

    colors = {0: (255, 0, 0), 1: (0, 0, 255), 2: (255, 0, 0)}
    for item, color in colors.items():
        ext = data.item_ids.external[item]
        Image.new("RGB", (8, 8), color).save(tmp_path / f"{ext}.png")
    emb, has = embed_item_images(data, tmp_path, _TinyCNN(), pattern="{item}.png")
    assert emb.shape == (data.n_items, 5) and has.sum() == 3
    assert np.allclose(np.linalg.norm(emb[has], axis=1), 1, atol=1e-5)
    assert not emb[~has].any()  # items without an image: zero rows
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)  # same pixels, same vector
    assert not np.allclose(emb[0], emb[1])
    with pytest.raises(PolyrecError, match="no item image found"):
        embed_item_images(data, tmp_path, _TinyCNN(), pattern="{item}.jpg")


def test_pixel_encoder_hand_computed(tmp_path, data):
    from PIL import Image

    img = Image.new("RGB", (2, 1))
    img.putpixel((0, 0), (255, 0, 0))
    img.putpixel((1, 0), (0, 0, 255))
    got = PixelEncoder(size=2).encode([img])
    # resized 2x2 (nearest rows repeat); centred on the image mean (1/3 of full intensity)
    assert got.shape == (1, 12)
    np.testing.assert_allclose(got.mean(), 0.0, atol=1e-6)
    first = got[0, :3] + 1 / 3
    np.testing.assert_allclose(first, [1.0, 0.0, 0.0], atol=1e-6)
    ext = data.item_ids.external[1]
    img.save(tmp_path / f"{ext}.png")
    emb, has = embed_item_images(data, tmp_path, PixelEncoder(size=4), pattern="{item}.png")
    assert emb.shape == (data.n_items, 48) and has.tolist().count(True) == 1
    with pytest.raises(PolyrecError, match="size must be >= 1"):
        PixelEncoder(size=0)


@pytest.mark.slow  # importing sentence-transformers (transformers) takes ~20 s on this machine
def test_unavailable_image_model_is_a_clear_error(tmp_path):
    pytest.importorskip("sentence_transformers")
    with pytest.raises(PolyrecError, match="unavailable offline"):
        load_image_encoder(tmp_path / "no-such-clip-model")


# ----------------------------------------------------------------------------- FREEDOM pieces
def test_knn_item_graph_is_normalised_and_skips_zero_rows():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0, 0]], np.float32)
    g = knn_item_graph(x, k=2).toarray()
    assert not g[3].any() and not g[:, 3].any()  # a wiped item has no edge
    assert g[0, 0] > 0 and g[0, 1] > 0 and g[0, 2] == 0  # itself and its nearest neighbour
    np.testing.assert_allclose(g[0, 1], 0.5)  # every row has degree 2: 2^-1/2 * 2^-1/2


def test_degree_sensitive_pruning_prefers_low_degree_edges():
    # user 0 has many items (high degree), user 1 one item shared by no one else
    rows = [0] * 20 + [1]
    cols = [*list(range(20)), 20]
    r = sp.csr_matrix((np.ones(21), (rows, cols)), shape=(2, 21))
    rng = np.random.default_rng(0)
    kept_low = sum(prune_edges(r, 0.5, rng)[1, 20] for _ in range(200))
    assert prune_edges(r, 0.5, rng).nnz == 10  # round(0.5 * 21)
    assert kept_low > 150  # weight 1 vs 1/sqrt(20): almost always kept


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("cls", [VBPR, FREEDOM])
def test_models_train_score_and_round_trip(cls, data, tmp_path):
    model = cls({**FAST, "modalities": ["text", "image"]}).fit(data)
    losses = [h["loss"] for h in model.history]
    assert losses[-1] < losses[0]
    scores = model.score([0, 1, 2])
    assert scores.shape == (3, data.n_items) and torch.isfinite(scores).all()
    loaded = cls.load(model.save(tmp_path / cls.name))
    torch.testing.assert_close(loaded.score([0, 1, 2]), scores)


def test_vbpr_score_matches_the_paper_formula(data):
    model = VBPR({**FAST, "epochs": 1, "modalities": ["text"]}).fit(data)
    net = model.module
    u, i = 3, 5
    f = torch.from_numpy(data.item_vectors["text"][i])
    expected = (
        net.item_bias.weight[i, 0]
        + net.gamma_user.weight[u] @ net.gamma_item.weight[i]
        + net.theta_user.weight[u] @ (net.projection.weight @ f)
        + net.feature_bias.weight[0] @ f
    )
    torch.testing.assert_close(model.score([u])[0, i], expected.detach(), rtol=1e-5, atol=1e-5)


def test_missing_modality_is_a_clear_error(data):
    with pytest.raises(PolyrecError, match="modality 'audio'"):
        FREEDOM({**FAST, "modalities": ["audio"]}).fit(data)


def test_drop_modality_removes_its_parameters(data):
    vbpr = VBPR({**FAST, "epochs": 1}).fit(data)
    vbpr.drop_modality("image")
    assert vbpr.config.modalities == ["text"]
    assert vbpr.module.projection.weight.shape[1] == data.item_vectors["text"].shape[1]
    freedom = FREEDOM({**FAST, "epochs": 1}).fit(data)
    freedom.drop_modality("image")
    assert list(freedom.module.heads) == ["text"] and "image" not in freedom.module.features
    assert torch.isfinite(freedom.score([0])).all()

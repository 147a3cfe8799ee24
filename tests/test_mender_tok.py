"""Mender-Tok: preferences as text tokens in the encoder context, on tiny synthetic data (a tiny
random sentence encoder for the preference matching; no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_SEQ2SEQ

from polyrec.data.split import leave_one_out
from polyrec.data.synthetic import make_synthetic
from polyrec.models.generative.mender import (
    TEXT_PAD,
    TEXT_SEP,
    TEXT_SPECIALS,
    TEXT_UNK,
    MenderTok,
    preference_tokenizer,
)
from polyrec.models.generative.tiger import prefix_examples

TINY = {**TINY_SEQ2SEQ, "epochs": 4, "max_preference_tokens": 8}


@pytest.fixture(scope="module")
def data():
    return leave_one_out(make_synthetic(40, 30, 400, n_categories=4, seed=0))


@pytest.fixture(scope="module")
def model(data, tmp_path_factory: pytest.TempPathFactory) -> MenderTok:
    from test_text_features import tiny_sentence_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    encoder = tiny_sentence_model(tmp_path_factory.mktemp("enc"))
    return MenderTok({**TINY, "preference_model": encoder}).fit(data.train)


def _ids(model: MenderTok, text: str) -> list[int]:
    return model.tokenizer.encode([text])[0]


def test_vocabulary_from_training_preferences_and_unk() -> None:
    tok = preference_tokenizer(["Prefers fragrance", "Avoid skincare", "Prefers makeup"], 100)
    vocab = tok.tok.get_vocab()
    assert [vocab[s] for s in TEXT_SPECIALS] == [TEXT_PAD, TEXT_UNK, TEXT_SEP]
    assert tok.vocab_size == len(TEXT_SPECIALS) + 5  # prefers avoid fragrance skincare makeup
    assert tok.encode(["PREFERS Fragrance"]) == [[vocab["prefers"], vocab["fragrance"]]]
    assert tok.encode(["Avoid glitter!"]) == [[vocab["avoid"], TEXT_UNK, TEXT_UNK]]


def test_fit_learns_the_vocabulary_and_loss_decreases(model: MenderTok, data) -> None:
    words = {w for t in model.pref_texts for w in t.lower().split()}
    assert set(model.tokenizer.tok.get_vocab()) == words | set(TEXT_SPECIALS)
    assert model._train_prefs.shape[0] == len(prefix_examples(data.train, 5)[0])
    losses = [h["loss"] for h in model.history]
    assert losses[-1] < losses[0]


def test_prefix_packs_preference_tokens_and_masks_padding(model: MenderTok) -> None:
    texts = ["Prefers fragrance", "Avoid makeup"]
    rows = model._inputs_of(texts)
    assert rows.shape == (2, TINY["max_preference_tokens"])
    a, b = _ids(model, texts[0]), _ids(model, texts[1])
    out = model._prefix(rows, np.array([[0, 1], [-1, 1], [-1, -1]]))
    width = len(a) + len(b) + 2
    expected = torch.zeros(3, width, dtype=torch.long)
    expected[0] = torch.tensor([*a, TEXT_SEP, *b, TEXT_SEP])
    expected[1, : len(b) + 1] = torch.tensor([*b, TEXT_SEP])
    torch.testing.assert_close(out["prefix"], expected)
    torch.testing.assert_close(out["prefix_mask"], expected == TEXT_PAD)
    long_text = " ".join(["prefers"] * 20)
    cut = model._prefix(model._inputs_of([long_text]), np.array([[0, 0]]))["prefix"]
    assert cut.shape == (1, TINY["max_preference_tokens"])  # cut to max_preference_tokens


def test_preference_tokens_are_in_the_encoder_input(model: MenderTok) -> None:
    net = model._net()
    users = np.arange(3)
    enc = model._encoder_tokens(model.histories[users], users)
    rows = model._inputs_of(["Prefers fragrance", "Avoid makeup"])
    ctx = model._prefix(rows, np.array([[0, 1], [1, -1], [-1, -1]]))
    with torch.no_grad():
        memory, keys = net.encode(enc, **ctx)
        width = ctx["prefix"].shape[1]
        assert memory.shape == (3, width + enc.shape[1], TINY["dim"])
        torch.testing.assert_close(keys[:, 0, 0, :width], ~ctx["prefix_mask"])
        # extra padding columns change nothing at the real positions
        padded = {
            "prefix": torch.nn.functional.pad(ctx["prefix"], (0, 2), value=TEXT_PAD),
            "prefix_mask": torch.nn.functional.pad(ctx["prefix_mask"], (0, 2), value=True),
        }
        memory2, _ = net.encode(enc, **padded)
    real = torch.cat([~ctx["prefix_mask"], enc != 0], dim=1)
    real2 = torch.cat([~padded["prefix_mask"], enc != 0], dim=1)
    torch.testing.assert_close(memory2[real2], memory[real], atol=1e-5, rtol=1e-5)


def test_training_batches_carry_the_matched_preference_as_tokens(model: MenderTok, data) -> None:
    batch = next(model._batches(data.train, np.random.default_rng(0)))
    order = np.random.default_rng(0).permutation(len(model._train_prefs))
    matched = model._train_prefs[order[: TINY["batch_size"]], 0]
    assert batch["prefix"].shape[0] == len(matched)
    for row, mask, pref in zip(batch["prefix"], batch["prefix_mask"], matched, strict=True):
        ids = row[~mask].tolist()
        if pref < 0:
            assert ids == []
        else:
            assert ids[-1] == TEXT_SEP
            text = model.pref_texts[pref].lower()
            assert model.tokenizer.decode(ids[:-1]) == text


def test_changing_the_preference_changes_the_output(model: MenderTok) -> None:
    users = np.arange(6)
    hist = model.histories[users]
    _, sa = model.generate_with_preferences(hist, [["Prefers fragrance"]] * 6, users)
    _, sb = model.generate_with_preferences(
        hist, [["Avoid fragrance", "Prefers makeup"]] * 6, users
    )
    assert np.abs(sa - sb).max() > 1e-4
    _, sc = model.generate_with_preferences(hist, [["Prefers fragrance"]] * 6, users)
    np.testing.assert_allclose(sa, sc)  # deterministic in eval mode


def test_constrained_decoding_yields_only_valid_items(model: MenderTok) -> None:
    users = np.arange(10)
    prefs = [["Prefers unseen glitter words"], [], ["Avoid skincare", "Prefers makeup"]] * 3
    prefs.append(["Prefers haircare"])
    model.reset_invalid_count()
    items, scores = model.generate_with_preferences(model.histories[users], prefs, users)
    assert model.invalid_id_rate == 0.0
    assert (items >= 0).all() and np.isfinite(scores).all()
    assert all(len(set(row)) == len(row) == TINY["beams"] for row in items.tolist())


def test_save_load_round_trip(model: MenderTok, tmp_path: Path) -> None:
    users = np.arange(4)
    model.set_preference_context(users, [["Prefers makeup", "Avoid a new word"]] * 4)
    assert "Avoid a new word" in model.pref_texts
    items, scores = model.generate_with_preferences(
        model.histories[users], [["Prefers makeup", "Avoid a new word"]] * 4, users
    )
    torch.testing.assert_close(
        model.score(users)[0, items[0]], torch.from_numpy(scores[0].astype(np.float32))
    )
    model.save(tmp_path / "m")
    back = MenderTok.load(tmp_path / "m")
    assert back.tokenizer.json == model.tokenizer.json
    assert back.pref_texts == model.pref_texts
    torch.testing.assert_close(back.pref_rows, model.pref_rows)
    torch.testing.assert_close(back.score(users), model.score(users))
    prefs = [["Prefers glitter", "Avoid fragrance"]] * 4
    a, sa = model.generate_with_preferences(model.histories[users], prefs, users)
    b, sb = back.generate_with_preferences(back.histories[users], prefs, users)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)

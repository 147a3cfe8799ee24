"""Sequence pipeline and the sequential models (SASRec, BERT4Rec, GRU4Rec, HSTU)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from polyrec.data.dataset import Dataset
from polyrec.data.sequences import (
    PAD,
    histories,
    iter_batches,
    left_window,
    merge_interactions,
    next_item_examples,
    pad_histories,
)
from polyrec.data.split import Split, leave_one_out
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.eval import evaluate
from polyrec.models.classic.pop import Pop
from polyrec.models.sequential import (
    SequentialRecommender,
    attention_mask,
    item_scores,
    sampled_softmax_loss,
)
from polyrec.models.sequential.bert4rec import BERT4Rec, cloze
from polyrec.models.sequential.gru4rec import GRU4Rec
from polyrec.models.sequential.hstu import HSTU, HSTULayer, hstu_attention, time_buckets
from polyrec.models.sequential.sasrec import SASRec

SMALL: dict[str, Any] = {"max_len": 8, "dim": 16, "progress": False, "dropout": 0.1}
MODELS: dict[str, tuple[type[SequentialRecommender], dict[str, Any]]] = {
    "sasrec": (SASRec, {}),
    "sasrec-bce": (SASRec, {"loss": "bce"}),
    "sasrec-sampled": (SASRec, {"loss": "sampled_softmax", "negatives": 16}),
    "bert4rec": (BERT4Rec, {}),
    "gru4rec": (GRU4Rec, {"hidden": 32}),
    "hstu": (HSTU, {"qk_dim": 8, "v_dim": 8}),
    "hstu-sampled": (HSTU, {"qk_dim": 8, "v_dim": 8, "loss": "sampled_softmax", "negatives": 16}),
}
CAUSAL = ["sasrec", "gru4rec", "hstu"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Small tensors: one thread is faster than two on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cyclic(n_users: int = 240, n_items: int = 40, length: int = 12, seed: int = 0) -> Dataset:
    """Each user walks the item ring with a fixed stride (1 or 7) from a random start: the
    next item follows from the last one, and popularity is flat, so Pop is near chance."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_items, n_users)
    stride = np.where(rng.random(n_users) < 0.5, 1, 7)
    steps = np.arange(length)
    items = (start[:, None] + stride[:, None] * steps) % n_items
    frame = pd.DataFrame(
        {
            "user": np.repeat(np.arange(n_users), length),
            "item": items.ravel(),
            "timestamp": np.tile(steps * 60.0, n_users),
        }
    )
    return Dataset.from_frame(frame)


@pytest.fixture(scope="module")
def toy() -> Split:
    return leave_one_out(cyclic())


def build(name: str, toy: Split, **extra: Any) -> SequentialRecommender:
    """An untrained model with its module built for ``toy`` (eval mode, fixed seed)."""
    cls, kw = MODELS[name]
    model = cls(**SMALL, **kw, **extra)
    torch.manual_seed(0)
    model.dims = model._dims(toy.train)
    model.module = model.train_module = model._build(model.dims).eval()
    return model


def encode(model: SequentialRecommender, tokens: torch.Tensor, times: torch.Tensor | None = None):
    net: Any = model.module
    return net.encode(tokens, times) if isinstance(model, HSTU) else net.encode(tokens)


# ---------------------------------------------------------------------- pipeline
def test_left_window_keeps_last_items_left_padded() -> None:
    indptr = np.array([0, 3, 3, 5])
    values = np.array([10, 11, 12, 20, 21])
    np.testing.assert_array_equal(
        left_window(indptr, values, 2, shift=1), [[12, 13], [0, 0], [21, 22]]
    )
    np.testing.assert_array_equal(
        left_window(indptr, values, 4, np.array([2, 0])), [[0, 0, 20, 21], [0, 10, 11, 12]]
    )


def test_next_item_examples_follow_time_order() -> None:
    frame = pd.DataFrame(
        {
            "user": [0, 0, 0, 1, 1, 1, 1, 1, 2],
            "item": [5, 6, 7, 1, 2, 3, 4, 5, 1],
            "timestamp": [30, 10, 20, 1, 2, 3, 4, 5, 9],
        }
    )
    ds = Dataset.from_frame(frame)  # external item k -> internal k - 1 -> token k
    ex = next_item_examples(ds, 3, times=True)
    np.testing.assert_array_equal(ex["users"], [0, 1])  # user 2 has a single item
    np.testing.assert_array_equal(ex["inputs"], [[0, 6, 7], [2, 3, 4]])
    np.testing.assert_array_equal(ex["targets"], [[0, 7, 5], [3, 4, 5]])
    np.testing.assert_array_equal(ex["times"], [[0, 10, 20], [2, 3, 4]])
    tokens, times = histories(ds, 4, times=True)
    np.testing.assert_array_equal(tokens, [[0, 6, 7, 5], [2, 3, 4, 5], [0, 0, 0, 1]])
    assert times is not None and times[0].tolist() == [0, 10, 20, 30]


def test_merge_puts_later_parts_after_earlier_ones() -> None:
    ds = Dataset.from_frame(pd.DataFrame({"user": [0, 0, 0], "item": [3, 1, 2]}))
    split = leave_one_out(ds)  # no timestamps: order is the row order
    assert split.valid is not None
    merged = merge_interactions(split.test, split.train, split.valid)
    np.testing.assert_array_equal(merged.sequences[0], [1, 2, 0])  # test first, as given
    np.testing.assert_array_equal(
        histories(merge_interactions(split.train, split.valid), 3)[0], [[0, 3, 1]]
    )


def test_iter_batches_cover_rows_once_and_trim_padding() -> None:
    inputs = np.array([[0, 0, 0, 1], [0, 0, 2, 3], [0, 4, 5, 6], [0, 0, 0, 7]])
    arrays = {"inputs": inputs, "users": np.arange(4)}
    batches = list(iter_batches(arrays, 2, np.random.default_rng(0)))
    assert sorted(np.concatenate([b["users"] for b in batches]).tolist()) == [0, 1, 2, 3]
    for b in batches:
        full = inputs[b["users"]]
        width = int((full != PAD).sum(1).max())
        np.testing.assert_array_equal(b["inputs"], full[:, -width:])


def test_pad_histories_validates() -> None:
    tokens, times = pad_histories(
        [[3, 1], [0, 1, 2]], n_items=5, width=2, timestamps=[[1, 2], [1, 2, 3]]
    )
    np.testing.assert_array_equal(tokens, [[4, 2], [2, 3]])
    assert times is not None and times.tolist() == [[1, 2], [2, 3]]
    with pytest.raises(PolyrecError, match="history 1 is empty"):
        pad_histories([[1], []], n_items=5, width=2)
    with pytest.raises(PolyrecError, match="item index 5 out of range"):
        pad_histories([[5]], n_items=5, width=2)
    with pytest.raises(PolyrecError, match="one value per history item"):
        pad_histories([[1, 2]], n_items=5, width=2, timestamps=[[1]])


# ---------------------------------------------------------------------- masks and causality
def test_attention_mask_hand_computed() -> None:
    mask = attention_mask(torch.tensor([[0, 4, 5]]), causal=True)[0, 0].int()
    assert mask.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]  # padding query: itself only
    both = attention_mask(torch.tensor([[0, 4, 5]]), causal=False)[0, 0].int()
    assert both.tolist() == [[1, 1, 1], [0, 1, 1], [0, 1, 1]]


@pytest.mark.parametrize("name", CAUSAL)
def test_prediction_at_t_ignores_later_items(name: str, toy: Split) -> None:
    model = build(name, toy)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, toy.train.n_items + 1, (3, 8), generator=gen)
    tokens[0, :3] = PAD
    times = torch.arange(8, dtype=torch.float64).repeat(3, 1) * 100
    t = 5
    changed, later = tokens.clone(), times.clone()
    changed[:, t + 1 :] = torch.randint(1, toy.train.n_items + 1, (3, 2), generator=gen)
    later[:, t + 1 :] += 12345.0
    with torch.no_grad():
        before = encode(model, tokens, times)
        after = encode(model, changed, later)
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1])
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "gru4rec", "hstu"])
def test_padding_never_attends(name: str, toy: Split) -> None:
    """Outputs at real positions do not depend on how much padding precedes them, nor on the
    padding embedding."""
    model = build(name, toy)
    real = torch.tensor([[3, 9, 4, 17, 2]])
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), real], dim=1)
    with torch.no_grad():
        short = encode(model, real)
        long = encode(model, padded)[:, 3:]
        net: Any = model.module
        table = net.token if isinstance(model, BERT4Rec) else net.item
        table.weight[PAD] = torch.randn(table.weight.shape[1])
        noisy = encode(model, padded)[:, 3:]
    torch.testing.assert_close(short, long)
    torch.testing.assert_close(short, noisy)


@pytest.mark.parametrize("name", list(MODELS))
def test_padding_never_scores(name: str, toy: Split) -> None:
    """Scores cover the catalogue only (no padding or mask column); padding inputs have padding
    targets; the loss of a training batch is finite."""
    model = build(name, toy)
    batch = next(model._batches(toy.train, np.random.default_rng(0)))
    tokens, targets = batch.get("inputs", batch.get("tokens")), batch["targets"]
    assert (targets[tokens == PAD] == PAD).all()
    if "negatives" in batch and batch["negatives"].shape != tokens.shape:  # sampled softmax
        assert len(batch["negatives"]) == int((targets != PAD).sum())
    with torch.no_grad():
        loss = model._loss(batch)
        scores = model.module.scores(encode(model, tokens))
    assert torch.isfinite(loss)
    assert tuple(scores.shape) == (*tokens.shape, toy.train.n_items)


def test_sampled_softmax_hand_computed() -> None:
    """Cosine logits over the temperature, the positive at index 0, a negative equal to the
    positive ignored; scoring by cosine ranks as the loss does."""
    table = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # tokens 1, 2, 3
    states = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    targets = torch.tensor([1, 2])
    negatives = torch.tensor([[2, 3], [2, 1]])  # row 1 drew its own positive: ignored
    loss = sampled_softmax_loss(states, table, targets, negatives, temperature=0.5)
    c = 2**-0.5  # cosine with item 3
    row0 = -torch.log_softmax(torch.tensor([1.0, 0.0, c]) / 0.5, 0)[0]
    row1 = -torch.log_softmax(torch.tensor([1.0, 0.0]) / 0.5, 0)[0]
    torch.testing.assert_close(loss, (row0 + row1) / 2)
    cos = item_scores(states, table, cosine=True)
    torch.testing.assert_close(cos, torch.tensor([[1.0, 0.0, c], [0.0, 1.0, c]]))


@pytest.mark.parametrize("n_items", [6, 50])  # <= m x dim: full cosine matrix; > : gathered rows
def test_sampled_softmax_against_a_loop(n_items: int) -> None:
    gen = torch.Generator().manual_seed(0)
    states, table = torch.randn(5, 4, generator=gen), torch.randn(n_items, 4, generator=gen)
    targets = torch.randint(1, n_items + 1, (5,), generator=gen)
    negatives = torch.randint(1, n_items + 1, (5, 3), generator=gen)
    negatives[0, 1] = targets[0]
    expected = []
    for s, t, negs in zip(states, targets, negatives, strict=True):
        cos = [torch.cosine_similarity(s, table[t - 1], dim=0)]
        cos += [torch.cosine_similarity(s, table[j - 1], dim=0) for j in negs if j != t]
        expected.append(-torch.log_softmax(torch.stack(cos) / 0.1, 0)[0])
    loss = sampled_softmax_loss(states, table, targets, negatives, temperature=0.1)
    torch.testing.assert_close(loss, torch.stack(expected).mean())


def test_bert4rec_masking_rate() -> None:
    rng = np.random.default_rng(0)
    items = rng.integers(1, 50, size=(400, 100))
    items[:, :30] = PAD
    out = cloze(items, 0.2, mask_token=51, rng=rng)
    masked = out["tokens"] == 51
    assert not masked[:, :30].any()
    assert abs(masked[:, 30:].mean() - 0.2) < 0.005  # 28,000 draws: sd 0.0024
    np.testing.assert_array_equal(out["targets"][masked], items[masked])
    assert (out["targets"][~masked] == PAD).all()
    np.testing.assert_array_equal(out["tokens"][~masked], items[~masked])


def test_bert4rec_cloze_masks_the_last_item_of_a_row_that_drew_none() -> None:
    """Short histories often draw no mask; without a target the batch loss would be NaN."""
    items = np.array([[PAD, PAD, 4, 7], [PAD, PAD, PAD, 9]])
    out = cloze(items, 1e-9, mask_token=51, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out["tokens"], [[PAD, PAD, 4, 51], [PAD, PAD, PAD, 51]])
    np.testing.assert_array_equal(out["targets"], [[PAD, PAD, PAD, 7], [PAD, PAD, PAD, 9]])


# ---------------------------------------------------------------------- HSTU
def test_hstu_attention_matches_its_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 4, 3, generator=gen), torch.randn(2, 2, 4, 3, generator=gen)
    v, rab = torch.randn(2, 2, 4, 5, generator=gen), torch.randn(1, 1, 4, 4, generator=gen)
    mask = attention_mask(torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]]), causal=True)
    out = hstu_attention(q, k, v, rab, mask, n=10)
    expected = torch.zeros_like(out)
    for b in range(2):
        for h in range(2):
            for t in range(4):
                for s in range(4):
                    if mask[b, 0, t, s]:
                        a = float(q[b, h, t] @ k[b, h, s] + rab[0, 0, t, s])
                        expected[b, h, t] += a / (1 + np.exp(-a)) / 10 * v[b, h, s]
    torch.testing.assert_close(out, expected)


def test_hstu_layer_shape_and_causality(toy: Split) -> None:
    model = build("hstu", toy, heads=2)
    layer = model.module.layers[0]
    assert isinstance(layer, HSTULayer)
    assert layer.f1.out_features == 2 * (2 * 8 + 2 * 8)  # U, V, Q, K for 2 heads
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 16, generator=gen)
    tokens = torch.randint(1, 10, (3, 6), generator=gen)
    times = torch.arange(6, dtype=torch.float64).repeat(3, 1) * 1000
    mask = attention_mask(tokens, causal=True)
    with torch.no_grad():
        y = layer(x, mask, time_buckets(times, 128))
        x2, times2 = x.clone(), times.clone()
        x2[:, 4:] += 1.0
        times2[:, 4:] += 1e6
        y2 = layer(x2, mask, time_buckets(times2, 128))
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


def test_hstu_uses_time_bias_only_with_timestamps(toy: Split) -> None:
    assert build("hstu", toy).dims["time"] == 1
    untimed = toy.train.with_interactions(
        users=toy.train.users, items=toy.train.items, timestamps=None
    )
    model = HSTU(**SMALL, qk_dim=8, v_dim=8)
    assert model._dims(untimed)["time"] == 0


# ---------------------------------------------------------------------- protocol
class _Spy(SASRec):
    """Records the histories it scores from."""

    def _score(self, users: np.ndarray) -> torch.Tensor:
        self.scored.append(self.histories[users].copy())
        return super()._score(users)


def test_leave_one_out_never_feeds_a_target() -> None:
    ds = make_synthetic(n_users=60, n_items=80, n_interactions=900, seed=3, reviews=False)
    split = leave_one_out(ds)
    assert split.valid is not None
    test_item = np.full(ds.n_users, -1)
    test_item[split.test.users] = split.test.items
    valid_item = np.full(ds.n_users, -1)
    valid_item[split.valid.users] = split.valid.items

    def holds(tokens: np.ndarray, item: np.ndarray) -> bool:
        return bool(((tokens == (item + 1)[:, None]) & (item >= 0)[:, None]).any())

    ex = next_item_examples(split.train, 20)
    for key in ("inputs", "targets"):
        assert not holds(ex[key], test_item[ex["users"]])
        assert not holds(ex[key], valid_item[ex["users"]])
    model = _Spy(**SMALL, epochs=1, batch_size=32)
    model.scored = []
    model.fit(split.train, split.valid)
    during = np.concatenate(model.scored)  # validation: train histories only
    assert len(during) == split.valid.n_interactions
    users = split.valid.users
    assert not holds(during, valid_item[users]) and not holds(during, test_item[users])
    after = model.histories  # for the test phase: train + valid, never the test item
    assert not holds(after, test_item)
    np.testing.assert_array_equal(after[users, -1], valid_item[users] + 1)


@pytest.mark.parametrize("name", list(MODELS))
def test_beats_pop_on_sequential_data(name: str, toy: Split) -> None:
    cls, kw = MODELS[name]
    pop = evaluate(Pop().fit(toy.train), toy.test, exclude=[], ks=(10,)).summary["hr@10"]
    epochs = 40 if name == "bert4rec" else 10  # the cloze task has fewer targets per epoch
    model = cls(**SMALL, **kw, epochs=epochs, lr=5e-3, batch_size=32).fit(toy.train)
    model.set_histories(toy.train, toy.valid)  # the test item follows the validation item
    hr = evaluate(model, toy.test, exclude=[], ks=(10,)).summary["hr@10"]
    assert pop < 0.4
    assert hr > 0.75, (name, hr, pop)  # the ring's next step: near 1 for every model


# ---------------------------------------------------------------------- API
def test_histories_api_and_round_trip(toy: Split, tmp_path) -> None:
    assert toy.valid is not None
    model = HSTU(**SMALL, qk_dim=8, v_dim=8, epochs=2, batch_size=64).fit(toy.train, toy.valid)
    assert model.mask_history_in_eval is False
    users = np.array([0, 5, 7])
    seqs = merge_interactions(toy.train, toy.valid).sequences
    assert seqs.timestamps is not None
    items = [seqs[u] for u in users]
    stamps = [seqs.timestamps[seqs.indptr[u] : seqs.indptr[u + 1]] for u in users]
    with torch.inference_mode():
        by_user = model.score(users)
    torch.testing.assert_close(model.score_histories(items, stamps), by_user)
    with pytest.raises(PolyrecError, match="pass timestamps"):
        model.score_histories(items)
    loaded = HSTU.load(model.save(tmp_path / "hstu"))
    assert isinstance(loaded, HSTU)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.score(users), by_user)
    model.set_histories(toy.train)
    np.testing.assert_array_equal(model.histories, histories(toy.train, SMALL["max_len"])[0])


def test_user_without_history_gets_popularity(toy: Split) -> None:
    model = GRU4Rec(**SMALL, hidden=16, epochs=1).fit(toy.train)
    model.histories[3] = PAD
    with torch.inference_mode():
        scores = model.score(np.array([3, 4]))
    popularity = torch.from_numpy(toy.train.item_popularity.astype(np.float32))
    torch.testing.assert_close(scores[0], popularity)
    assert not torch.equal(scores[1], scores[0])

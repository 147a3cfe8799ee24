"""The full-ranking / sampled evaluator on tiny fake models with known rankings."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from polyrec import ranking
from polyrec.data.dataset import Dataset, IdMap
from polyrec.errors import PolyrecError
from polyrec.eval import SampledSpec, evaluate
from polyrec.eval.evaluator import _sample_negatives
from polyrec.models import base as base_module
from polyrec.models.base import Recommender


class MatrixModel(Recommender):
    """Scores every user from a fixed (n_users, n_items) matrix."""

    name = "matrix"

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.matrix = torch.as_tensor(np.asarray(scores), dtype=torch.float32)

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        assert self.matrix.shape == (train.n_users, train.n_items)

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return self.matrix[torch.from_numpy(users)]

    def _get_state(self) -> dict[str, Any]:
        return {"matrix": self.matrix}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.matrix = state["matrix"]


def _pairs(users: list[int], items: list[int], uid: IdMap, iid: IdMap) -> Dataset:
    return Dataset(users=np.array(users), items=np.array(items), user_ids=uid, item_ids=iid)


@pytest.fixture
def tiny() -> tuple[MatrixModel, Dataset, Dataset]:
    """4 users x 5 items.

    train: u0 {0, 1}, u1 {2}, u2 {0}, u3 {3};  test: u0 {2, 4}, u1 {0}, u2 {0} (also in train)
    """
    uid, iid = IdMap(np.arange(4)), IdMap(np.arange(5))
    train = _pairs([0, 0, 1, 2, 3], [0, 1, 2, 0, 3], uid, iid)
    test = _pairs([0, 0, 1, 2], [2, 4, 0, 0], uid, iid)
    scores = np.array(
        [
            [5, 4, 3, 2, 1],  # masked {0,1} -> ranking 2, 3, 4
            [0, 1, 9, 1, 1],  # masked {2}   -> 1, 3, 4 (tie: lower index first), then 0
            [9, 0, 0, 0, 0],  # masked {0}   -> 1, 2, 3, 4; its test item 0 is masked
            [0, 0, 0, 0, 0],  # no test item: skipped
        ]
    )
    return MatrixModel(scores).fit(train), train, test


def test_full_ranking_hand_computed(tiny):
    model, _, test = tiny
    res = evaluate(model, test, ks=(1, 3, 5))
    np.testing.assert_array_equal(res.users, [0, 1, 2])
    p = res.protocol
    assert p["mode"] == "full" and p["ks"] == [1, 3, 5]
    assert p["n_users"] == 3 and p["skipped_users"] == 1 and p["n_items"] == 5
    assert p["n_test_interactions"] == 4 and p["masked_test_interactions"] == 1
    assert p["exclude"] == ["model.seen(nnz=5)"]
    pu = res.per_user
    # u0: hits at ranks 1 and 3 of (2, 3, 4), |R| = 2
    # u1: its test item 0 is at rank 4 (after the tied 1, 3, 4)
    # u2: item 0 is masked; it fills rank 5 with -inf and must not count as a hit
    np.testing.assert_allclose(pu["recall@1"], [1 / 2, 0, 0])
    np.testing.assert_allclose(pu["recall@3"], [1, 0, 0])
    np.testing.assert_allclose(pu["recall@5"], [1, 1, 0])
    np.testing.assert_allclose(pu["mrr@5"], [1, 1 / 4, 0])
    # u0 ndcg@3: DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3); u1 ndcg@5 = 1/log2(5)
    np.testing.assert_allclose(pu["ndcg@3"], [1.5 / (1 + 1 / math.log2(3)), 0, 0])
    np.testing.assert_allclose(pu["ndcg@5"][1], 1 / math.log2(5))
    np.testing.assert_allclose(pu["precision@3"], [2 / 3, 0, 0])
    np.testing.assert_allclose(pu["map@3"], [(1 + 2 / 3) / 2, 0, 0])  # (P@1 + P@3) / min(2, 3)
    np.testing.assert_allclose(pu["hr@5"], [1, 1, 0])
    assert res.summary["recall@5"] == pytest.approx(2 / 3)
    assert res.summary["mrr@5"] == pytest.approx((1 + 1 / 4) / 3)


def test_k_larger_than_catalogue_and_duplicate_test_pairs(tiny):
    model, train, _ = tiny
    uid, iid = train.user_ids, train.item_ids
    test = _pairs([0, 0, 0, 1], [2, 4, 4, 0], uid, iid)  # (u0, 4) twice: one relevant item
    res = evaluate(model, test, ks=(5, 8))
    assert res.protocol["n_test_interactions"] == 3
    # the 5-item list is padded with misses: recall as at K = 5, precision divides by 8
    np.testing.assert_allclose(res.per_user["recall@8"], [1, 1])
    np.testing.assert_allclose(res.per_user["precision@8"], [2 / 8, 1 / 8])
    np.testing.assert_allclose(res.per_user["ndcg@8"], res.per_user["ndcg@5"])
    assert res.summary["coverage@8"] == 1.0


def test_beyond_accuracy_in_full_ranking(tiny):
    model, _, test = tiny
    vectors = np.eye(5)  # orthogonal items: every pair has 1 - cos = 1
    res = evaluate(model, test, ks=(1, 3, 5), item_vectors=vectors)
    s = res.summary
    # top-1: u0 -> 2, u1 -> 1, u2 -> 1: counts [0, 2, 1, 0, 0]
    assert s["coverage@1"] == pytest.approx(2 / 5)
    assert s["gini@1"] == pytest.approx(10 / (5 * 3))  # sorted weights (2j - 6): 2*1 + 4*2 = 10
    # top-3: {2, 3, 4} + {1, 3, 4} + {1, 2, 3}; top-5 only counts unmasked slots: all 5 items
    assert s["coverage@3"] == pytest.approx(4 / 5) and s["coverage@5"] == 1.0
    # 4 users with training items; self-information: item 0 (2 users) -> 1, others (<=1) -> 2
    # u1's top-5 is 1, 3, 4, 0 (item 2 masked): (2 + 2 + 2 + 1) / 4
    np.testing.assert_allclose(res.per_user["novelty@5"], [2, 1.75, 2])
    np.testing.assert_allclose(res.per_user["ild@5"], [1, 1, 1])
    assert res.per_user["ild@1"].tolist() == [0, 0, 0]  # no pair in a 1-item list
    assert "ild@5" not in evaluate(model, test, ks=(5,)).summary
    assert set(evaluate(model, test, ks=(5,), beyond=False).summary) == {
        f"{m}@5" for m in ("recall", "ndcg", "hr", "mrr", "precision", "map")
    }


def test_exclude_controls_masking(tiny):
    model, train, test = tiny
    res = evaluate(model, test, ks=(3,), exclude=[])
    # unmasked u0 ranking 0, 1, 2: test item 2 at rank 3; u2's item 0 is now at rank 1
    np.testing.assert_allclose(res.per_user["recall@3"], [1 / 2, 0, 1])
    assert res.protocol["exclude"] == [] and res.protocol["masked_test_interactions"] == 0
    extra = sp.csr_matrix(([1.0], ([0], [2])), shape=(4, 5))
    res = evaluate(model, test, ks=(3,), exclude={"train": train.binary_csr, "valid": extra})
    # u0 now also has item 2 masked: ranking 3, 4, ... -> only item 4 (rank 2) is hit
    np.testing.assert_allclose(res.per_user["recall@3"], [1 / 2, 0, 0])
    assert res.protocol["exclude"] == ["train(nnz=5)", "valid(nnz=1)"]
    assert res.protocol["masked_test_interactions"] == 2


def test_users_subset_and_errors(tiny):
    model, train, test = tiny
    res = evaluate(model, test, ks=(3,), users=[3, 0])
    np.testing.assert_array_equal(res.users, [0])
    assert res.protocol["skipped_users"] == 1
    with pytest.raises(PolyrecError, match="no user with a test interaction"):
        evaluate(model, test, users=[3])
    with pytest.raises(PolyrecError, match="out of range"):
        evaluate(model, test, users=[7])
    with pytest.raises(PolyrecError, match="must be a sparse users x items"):
        evaluate(model, test, exclude=[np.zeros((4, 5))])
    with pytest.raises(PolyrecError, match="unknown metric"):
        evaluate(model, test, metrics=("auc",))
    other = _pairs([0], [0], IdMap(np.arange(4)), IdMap(np.arange(6)))
    with pytest.raises(PolyrecError, match="share the model's id maps"):
        evaluate(model, other)
    nan_model = MatrixModel(np.full((4, 5), np.nan)).fit(train)
    with pytest.raises(PolyrecError, match="NaN"):
        evaluate(nan_model, test)


def test_record_is_json_ready(tiny):
    model, _, test = tiny
    rec = evaluate(model, test, ks=(1, 3)).to_record()
    assert set(rec) == {"metrics", "protocol", "eval_seconds"}
    assert "ndcg@3" in rec["metrics"] and "coverage@3" in rec["metrics"]
    json.dumps(rec)


# ---------------------------------------------------------------------- larger random cases
def _random_split(n_users: int, n_items: int, n_train: int, n_test: int, seed: int = 0):
    """Each user gets n_train train and n_test disjoint test items."""
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((n_users, n_items)), axis=1)
    uid, iid = IdMap(np.arange(n_users)), IdMap(np.arange(n_items))
    users = np.arange(n_users)
    train = Dataset(np.repeat(users, n_train), perm[:, :n_train].ravel(), uid, iid)
    test = Dataset(np.repeat(users, n_test), perm[:, n_train : n_train + n_test].ravel(), uid, iid)
    return train, test


def test_oracle_gets_perfect_scores():
    train, test = _random_split(60, 40, 5, 3)
    oracle = MatrixModel(test.binary_csr.toarray()).fit(train)
    res = evaluate(oracle, test, ks=(3, 10))
    for m in ("recall", "ndcg", "hr", "mrr", "map"):
        assert res.summary[f"{m}@3"] == pytest.approx(1.0), m
        assert res.summary[f"{m}@10"] == pytest.approx(1.0), m
    assert res.summary["precision@3"] == pytest.approx(1.0)
    assert res.summary["precision@10"] == pytest.approx(0.3)


def test_batch_size_does_not_change_results_even_with_ties():
    train, test = _random_split(50, 30, 4, 3, seed=1)
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 3, size=(50, 30))  # many ties
    model = MatrixModel(scores).fit(train)
    vectors = rng.random((30, 4))
    a = evaluate(model, test, ks=(5, 10), batch_size=1, item_vectors=vectors)
    b = evaluate(model, test, ks=(5, 10), batch_size=1024, item_vectors=vectors)
    c = evaluate(model, test, ks=(5, 10), batch_size=7, item_vectors=vectors, progress=True)
    assert "ild@10" in a.per_user
    for key in a.per_user:
        np.testing.assert_array_equal(a.per_user[key], b.per_user[key])
        np.testing.assert_array_equal(a.per_user[key], c.per_user[key])
    assert a.summary == pytest.approx(b.summary)


def test_ties_rank_lower_item_index_first():
    train, test = _random_split(20, 10, 2, 1, seed=3)
    res = evaluate(MatrixModel(np.zeros((20, 10))).fit(train), test, ks=(10,))
    # all scores equal: the ranking is the unmasked items in index order
    seen = train.binary_csr.toarray().astype(bool)
    target = test.items[np.argsort(test.users)]
    expected_rank = np.array([(~seen[u, :t]).sum() + 1 for u, t in enumerate(target)])
    np.testing.assert_allclose(res.per_user["mrr@10"], 1 / expected_rank)


# ---------------------------------------------------------------------- sampled
def test_sampled_mode_is_labelled_and_differs():
    train, test = _random_split(40, 300, 10, 2, seed=4)
    rng = np.random.default_rng(5)
    model = MatrixModel(rng.random((40, 300))).fit(train)
    full = evaluate(model, test, ks=(10,))
    uni = evaluate(model, test, ks=(10,), sampled=SampledSpec())
    pop = evaluate(model, test, ks=(10,), sampled=SampledSpec(strategy="popularity", seed=1))
    assert full.protocol["mode"] == "full"
    assert uni.protocol["mode"] == "sampled-uni100" and uni.protocol["n_negatives"] == 100
    assert pop.protocol["mode"] == "sampled-pop100"
    assert "coverage@10" not in uni.summary
    # a random scorer: full-ranking HR@10 of 2 items in ~290 is ~7%, sampled 1+100 is ~10%
    assert uni.summary["hr@10"] > full.summary["hr@10"]
    again = evaluate(model, test, ks=(10,), sampled=SampledSpec(), batch_size=3)
    np.testing.assert_array_equal(again.per_user["ndcg@10"], uni.per_user["ndcg@10"])


def test_sampled_ties_and_ranks_hand_computed():
    uid, iid = IdMap(np.arange(2)), IdMap(np.arange(20))
    train = _pairs([0, 1], [5, 5], uid, iid)
    test = _pairs([0, 1, 1], [0, 19, 0], uid, iid)
    model = MatrixModel(np.zeros((2, 20))).fit(train)
    res = evaluate(model, test, ks=(1, 10), sampled=SampledSpec(n_negatives=4))
    # all scores tie: item 0 beats every negative (rank 1); item 19 loses to all 4 (rank 5).
    # u1 averages its two test interactions: mrr = (1/5 + 1) / 2, ndcg = (1/log2(6) + 1) / 2
    np.testing.assert_allclose(res.per_user["mrr@10"], [1, (1 / 5 + 1) / 2])
    np.testing.assert_allclose(res.per_user["ndcg@10"], [1, (1 / math.log2(6) + 1) / 2])
    np.testing.assert_allclose(res.per_user["hr@1"], [1, 0.5])
    assert res.protocol["mode"] == "sampled-uni4"


def test_negatives_avoid_history_and_are_reproducible():
    history = sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=np.float32))
    train = history
    spec = SampledSpec(n_negatives=50, seed=7)
    neg = _sample_negatives(np.array([0, 1]), np.array([2, 1]), history, train, spec)
    assert neg.shape == (3, 50)
    assert set(neg[:2].ravel()) <= {3, 4, 5} and set(neg[2].ravel()) <= {0, 1, 2, 3}
    again = _sample_negatives(np.array([0, 1]), np.array([2, 1]), history, train, spec)
    np.testing.assert_array_equal(neg, again)
    pop = SampledSpec(n_negatives=50, strategy="popularity")
    # training popularity is 0 for item 3: popularity sampling never draws it
    neg = _sample_negatives(np.array([0, 1]), np.array([1, 1]), history, train, pop)
    assert set(neg[0]) <= {4, 5} and set(neg[1]) <= {0, 1, 2}
    full = sp.csr_matrix(np.array([[1, 1, 1, 0, 1, 1]], dtype=np.float32))
    with pytest.raises(PolyrecError, match="no item left"):
        _sample_negatives(np.array([0]), np.array([1]), full, full, pop)
    with pytest.raises(PolyrecError, match="strategy"):
        SampledSpec(strategy="zipf")  # type: ignore[arg-type]


@pytest.mark.parametrize("numpy_blas", [True, False])
def test_inner_products_agree_on_both_blas_paths(monkeypatch, numpy_blas):
    monkeypatch.setattr(ranking, "numpy_blas_is_faster", lambda: numpy_blas)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    gen = torch.Generator().manual_seed(0)
    queries, items = torch.randn(2, 5, 8, generator=gen), torch.randn(11, 8, generator=gen)
    expected = torch.einsum("bnd,id->bni", queries.double(), items.double())
    with torch.no_grad():
        got = ranking.inner_products(queries, items)
    assert got.shape == (2, 5, 11) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    # gradients of both inputs, for an upstream gradient of any layout
    q, v = queries.clone().requires_grad_(), items.clone().requires_grad_()
    upstream = torch.randn(11, 2, 5, generator=gen).permute(1, 2, 0)  # non-contiguous
    (ranking.inner_products(q, v) * upstream).sum().backward()
    torch.testing.assert_close(q.grad, upstream @ items, rtol=1e-5, atol=1e-5)
    want = torch.einsum("bni,bnd->id", upstream, queries)
    torch.testing.assert_close(v.grad, want, rtol=1e-5, atol=1e-5)
    only_items = items.clone().requires_grad_()
    ranking.inner_products(queries, only_items).sum().backward()
    torch.testing.assert_close(only_items.grad, queries.sum(dim=(0, 1)).expand(11, 8))


# ---------------------------------------------------------------------- norm-pruned top-k
class FactorModel(MatrixModel):
    """Scores ``U @ V.T`` exposed as factors: ranked through ``NormSortedItems``."""

    name = "factors"

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        super().__init__(users @ items.T)
        self.user_vectors = torch.as_tensor(users, dtype=torch.float32)
        self.item_vectors = torch.as_tensor(items, dtype=torch.float32)

    def _user_factors(self, users: np.ndarray) -> torch.Tensor:
        return self.user_vectors[torch.from_numpy(users)]

    def _item_factors(self) -> torch.Tensor:
        return self.item_vectors


def _popularity_scaled(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Vectors whose norms fall off like popularity, as trained item embeddings do."""
    return rng.normal(size=(n, d)) * (3.0 / np.sqrt(1 + np.arange(n)))[rng.permutation(n), None]


@pytest.mark.parametrize("k", [1, 5, 40])
def test_norm_pruned_topk_equals_full_scoring(k):
    rng = np.random.default_rng(k)
    queries, items = rng.normal(size=(70, 6)), _popularity_scaled(300, 6, rng)
    seen = sp.random(70, 300, density=0.1, format="csr", random_state=k)
    extra = sp.random(70, 300, density=0.05, format="csr", random_state=k + 1)
    rows = rng.permutation(70)[:50]
    q, v = torch.tensor(queries, dtype=torch.float32), torch.tensor(items, dtype=torch.float32)
    scores = q[torch.from_numpy(rows)] @ v.T
    for m in (seen, extra):
        ranking.mask_seen_(scores, m, rows)
    want_vals, want_idx = ranking.topk(scores, k)
    ranker = ranking.NormSortedItems(v, block_floats=500, first_block=8)
    vals, idx = ranker.topk(q[torch.from_numpy(rows)], k, [seen, extra], rows)
    assert ranker.scored < scores.numel()  # items were skipped
    torch.testing.assert_close(vals, want_vals)
    torch.testing.assert_close(idx, want_idx)


def test_norm_pruned_topk_when_most_items_are_masked():
    # 3 users, 10 items, user 0 keeps 2 unmasked items: k=4 leaves two -inf slots
    rng = np.random.default_rng(0)
    v = torch.tensor(_popularity_scaled(10, 3, rng), dtype=torch.float32)
    q = torch.tensor(rng.normal(size=(3, 3)), dtype=torch.float32)
    seen = sp.csr_matrix((np.ones(8), ([0] * 8, [0, 1, 2, 3, 5, 6, 8, 9])), shape=(3, 10))
    ranker = ranking.NormSortedItems(v, block_floats=6, first_block=2)
    vals, idx = ranker.topk(q, 4, [seen], np.arange(3))
    assert torch.isinf(vals[0, 2:]).all() and set(idx[0, :2].tolist()) == {4, 7}
    want_vals, want_idx = ranking.topk(ranking.mask_seen_(q @ v.T, seen, np.arange(3)), 4)
    torch.testing.assert_close(vals[1:], want_vals[1:])
    torch.testing.assert_close(idx[1:], want_idx[1:])
    torch.testing.assert_close(vals[0, :2], want_vals[0, :2])


def test_norm_pruned_topk_passes_nan_through():
    v = torch.tensor([[1.0, 0.0], [float("nan"), 1.0], [0.5, 0.5]])
    ranker = ranking.NormSortedItems(v, block_floats=1, first_block=1)
    vals, _ = ranker.topk(torch.tensor([[1.0, 1.0]]), 2)
    assert torch.isnan(vals).any()


def test_norm_pruned_topk_keeps_the_dtype_and_allows_k_zero():
    rng = np.random.default_rng(7)
    v = torch.tensor(_popularity_scaled(60, 4, rng))  # float64
    q = torch.tensor(rng.normal(size=(9, 4)))
    vals, idx = ranking.NormSortedItems(v, block_floats=50, first_block=4).topk(q, 5)
    want_vals, want_idx = ranking.topk(q @ v.T, 5)
    assert vals.dtype == torch.float64
    torch.testing.assert_close(vals, want_vals)
    torch.testing.assert_close(idx, want_idx)
    empty_vals, empty_idx = ranking.NormSortedItems(v).topk(q, 0)
    assert empty_vals.shape == empty_idx.shape == (9, 0)


def test_factor_models_evaluate_and_recommend_as_with_full_scores(monkeypatch):
    rankers: list[ranking.NormSortedItems] = []

    class SmallBlocks(ranking.NormSortedItems):
        """Blocks small enough that this catalogue is searched in several rounds."""

        def __init__(self, items: torch.Tensor) -> None:
            super().__init__(items, block_floats=400, first_block=8)
            rankers.append(self)

    monkeypatch.setattr(base_module, "NormSortedItems", SmallBlocks)
    train, test = _random_split(80, 200, 6, 3, seed=4)
    rng = np.random.default_rng(5)
    users, items = rng.normal(size=(80, 8)), _popularity_scaled(200, 8, rng)
    pruned = FactorModel(users, items).fit(train)
    full = MatrixModel(users @ items.T).fit(train)
    a = evaluate(pruned, test, ks=(5, 20), batch_size=16)
    b = evaluate(full, test, ks=(5, 20), batch_size=16)
    for key in b.per_user:
        np.testing.assert_allclose(a.per_user[key], b.per_user[key], err_msg=key)
    external = train.user_ids.to_external(np.arange(80))
    rec_a, rec_b = pruned.recommend(external, k=7), full.recommend(external, k=7)
    np.testing.assert_array_equal(rec_a["item"], rec_b["item"])
    np.testing.assert_allclose(rec_a["score"], rec_b["score"], rtol=1e-5)
    assert rankers and all(r.scored < 80 * 200 for r in rankers)  # items were skipped

"""Ranking and beyond-accuracy metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from polyrec.errors import PolyrecError
from polyrec.eval import BeyondAccuracy, gini, intra_list_diversity, ranking_metrics
from polyrec.eval.beyond import self_information

LOG3 = math.log2(3)


def test_two_hits_in_four_with_three_relevant():
    # ranks 1 and 3 relevant, |R| = 3
    out = ranking_metrics(np.array([[1, 0, 1, 0]], bool), np.array([3]), ks=(2, 4))
    assert out["recall@2"][0] == pytest.approx(1 / 3)  # 1 hit / 3
    assert out["recall@4"][0] == pytest.approx(2 / 3)  # 2 hits / 3
    assert out["precision@2"][0] == pytest.approx(1 / 2)
    assert out["precision@4"][0] == pytest.approx(2 / 4)
    assert out["hr@2"][0] == 1.0 and out["hr@4"][0] == 1.0
    assert out["mrr@2"][0] == 1.0 and out["mrr@4"][0] == 1.0
    # ndcg@2: DCG = 1/log2(2) = 1; IDCG over min(3, 2) = 2 hits = 1 + 1/log2(3)
    assert out["ndcg@2"][0] == pytest.approx(1 / (1 + 1 / LOG3))
    # ndcg@4: DCG = 1 + 1/log2(4) = 1.5; IDCG over 3 hits = 1 + 1/log2(3) + 1/log2(4)
    assert out["ndcg@4"][0] == pytest.approx(1.5 / (1 + 1 / LOG3 + 0.5))
    # map@2: precision@1 = 1 at the hit at rank 1, / min(3, 2) = 2
    assert out["map@2"][0] == pytest.approx(0.5)
    # map@4: (precision@1 + precision@3) / min(3, 4) = (1 + 2/3) / 3
    assert out["map@4"][0] == pytest.approx((1 + 2 / 3) / 3)


def test_list_shorter_than_k_is_padded_with_misses():
    # a 3-item catalogue evaluated at K = 5: the only relevant item is at rank 2
    out = ranking_metrics(np.array([[0, 1, 0]], bool), np.array([1]), ks=(1, 3, 5))
    assert out["recall@1"][0] == 0.0 and out["hr@1"][0] == 0.0 and out["mrr@1"][0] == 0.0
    assert out["recall@5"][0] == 1.0 and out["hr@5"][0] == 1.0
    assert out["mrr@3"][0] == pytest.approx(0.5) and out["mrr@5"][0] == pytest.approx(0.5)
    # DCG = 1/log2(3), IDCG = 1 (one relevant item)
    assert out["ndcg@3"][0] == pytest.approx(1 / LOG3)
    assert out["ndcg@5"][0] == pytest.approx(1 / LOG3)
    assert out["precision@3"][0] == pytest.approx(1 / 3)
    assert out["precision@5"][0] == pytest.approx(1 / 5)  # still / K
    assert out["map@5"][0] == pytest.approx(0.5)  # precision@2 = 1/2, / min(1, 5)


def test_more_relevant_items_than_k():
    # both slots hit, |R| = 5
    out = ranking_metrics(np.array([[1, 1]], bool), np.array([5]), ks=(2,))
    assert out["recall@2"][0] == pytest.approx(0.4)  # 2 / 5: recall divides by |R|
    assert out["ndcg@2"][0] == pytest.approx(1.0)  # IDCG over min(5, 2) = 2
    assert out["map@2"][0] == pytest.approx(1.0)  # (1 + 1) / min(5, 2)
    assert out["precision@2"][0] == 1.0


def test_batch_rows_are_independent_and_torch_matches_numpy():
    hits = np.array([[0, 0, 0], [0, 0, 1], [1, 0, 0]], bool)
    n_rel = np.array([1, 2, 1])
    a = ranking_metrics(hits, n_rel, ks=(3,))
    b = ranking_metrics(torch.from_numpy(hits), torch.from_numpy(n_rel), ks=(3,))
    assert list(a) == [f"{m}@3" for m in ("recall", "ndcg", "hr", "mrr", "precision", "map")]
    for key in a:
        np.testing.assert_allclose(a[key], b[key])
    np.testing.assert_allclose(a["recall@3"], [0, 0.5, 1])
    np.testing.assert_allclose(a["mrr@3"], [0, 1 / 3, 1])
    # row 1: DCG = 1/log2(4) = 0.5, IDCG over 2 = 1 + 1/log2(3)
    np.testing.assert_allclose(a["ndcg@3"], [0, 0.5 / (1 + 1 / LOG3), 1])


def test_metric_selection_and_validation():
    out = ranking_metrics(np.ones((1, 2), bool), np.array([2]), ks=(2, 1), metrics=("NDCG",))
    assert list(out) == ["ndcg@1", "ndcg@2"]
    with pytest.raises(PolyrecError, match="unknown metric 'auc'"):
        ranking_metrics(np.ones((1, 2), bool), np.array([2]), metrics=("auc",))
    with pytest.raises(PolyrecError, match="n_relevant must be >= 1"):
        ranking_metrics(np.ones((1, 2), bool), np.array([0]))
    with pytest.raises(PolyrecError, match="ks must be"):
        ranking_metrics(np.ones((1, 2), bool), np.array([2]), ks=(0,))
    with pytest.raises(PolyrecError, match="hits must be"):
        ranking_metrics(np.ones((2, 2), bool), np.array([2]))


# ---------------------------------------------------------------------- beyond accuracy
def test_gini_hand_computed():
    # sorted counts [0, 0, 0, 1, 2], n = 5, total 3: sum (2j - n - 1) c_j = 2*1 + 4*2 = 10
    assert gini(np.array([2, 0, 1, 0, 0])) == pytest.approx(10 / (5 * 3))
    assert gini(np.array([3, 3, 3])) == 0.0
    assert gini(np.zeros(4)) == 0.0


def test_self_information_uses_training_users():
    # 4 users with training items (row 2 is empty); item 0 seen by 2 users, item 1 by 3,
    # item 2 by nobody (counted as 1): -log2(2/4) = 1, -log2(3/4), -log2(1/4) = 2
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 1, 0]]))
    np.testing.assert_allclose(self_information(train), [1.0, -math.log2(3 / 4), 2.0])


def test_ild_hand_computed_and_against_brute_force():
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    items = np.array([[0, 1, 2], [2, 0, 1]])
    valid = np.array([[True, True, True], [True, True, False]])
    out = intra_list_diversity(items, valid, unit, ks=(2, 3))
    # [0, 1]: cos = 0 -> 1; [0, 1, 2]: 1 - cos = 1, 1 - 1/sqrt2, 1 - 1/sqrt2 -> mean
    c = 1 / math.sqrt(2)
    assert out[2][0] == pytest.approx(1.0)
    assert out[3][0] == pytest.approx((1 + 2 * (1 - c)) / 3)
    # row 1: [2, 0] then an invalid slot: one pair, 1 - 1/sqrt2 at K = 2 and 3
    assert out[2][1] == pytest.approx(1 - c) and out[3][1] == pytest.approx(1 - c)

    rng = np.random.default_rng(0)
    vec = rng.normal(size=(30, 5))
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    items = rng.integers(0, 30, size=(4, 6))
    got = intra_list_diversity(items, np.ones_like(items, bool), unit, ks=(6,))[6]
    for b in range(4):
        sims = unit[items[b]] @ unit[items[b]].T
        expected = (1 - sims[~np.eye(6, dtype=bool)]).mean()
        assert got[b] == pytest.approx(expected)


def test_beyond_accumulates_over_batches():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 0, 0]]))
    acc = BeyondAccuracy((1, 2), train)
    # self-information with 2 training users: item 0 -> 0, item 1 -> 1, items 2, 3 -> 1
    b1 = acc.update(np.array([[0, 1]]), np.array([[True, True]]))
    b2 = acc.update(np.array([[2, 0], [0, 3]]), np.array([[True, False], [True, True]]))
    assert b1["novelty@1"][0] == 0.0 and b1["novelty@2"][0] == pytest.approx(0.5)
    np.testing.assert_allclose(b2["novelty@2"], [1.0, 0.5])  # invalid slot left out
    assert "ild@2" not in b2
    s = acc.summary()
    # top-1 counts [2, 0, 1, 0]; top-2 counts [2, 1, 1, 1] (the invalid slot is not counted)
    assert s["coverage@1"] == pytest.approx(2 / 4) and s["coverage@2"] == 1.0
    # sorted [0, 0, 1, 2], n = 4, total 3: (2j - 5) weights -3, -1, 1, 3 -> 1 + 6 = 7
    assert s["gini@1"] == pytest.approx(7 / (4 * 3))
    # sorted [1, 1, 1, 2], total 5: -3 - 1 + 1 + 6 = 3
    assert s["gini@2"] == pytest.approx(3 / (4 * 5))
    with pytest.raises(PolyrecError, match="item_vectors must have shape"):
        BeyondAccuracy((1,), train, item_vectors=np.ones((3, 2)))

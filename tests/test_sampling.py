"""Negative samplers and BPR triples: brute-force checks on small matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import chisquare

from polyrec.data.sampling import (
    PopularityNegativeSampler,
    UniformNegativeSampler,
    bpr_triples,
)
from polyrec.errors import PolyrecError


def _matrix(dense: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.fixture
def dense() -> np.ndarray:
    """8 users x 12 items with an empty user, a near-full user (only item 5 free) and random."""
    rng = np.random.default_rng(3)
    m = rng.random((8, 12)) < 0.4
    m[2] = False
    m[5] = True
    m[5, 5] = False
    return m


class _FixedDraws:
    """Stands in for a Generator: ``integers`` returns given values (checks the r -> item map)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def integers(self, low: int, high: np.ndarray) -> np.ndarray:
        assert (self.values < high).all()
        return self.values


def test_uniform_maps_rth_draw_to_rth_non_positive(dense: np.ndarray) -> None:
    sampler = UniformNegativeSampler(_matrix(dense))
    for user in range(dense.shape[0]):
        free = np.flatnonzero(~dense[user])
        users = np.full(len(free), user)
        got = sampler._draw(users, _FixedDraws(np.arange(len(free))))  # type: ignore[arg-type]
        np.testing.assert_array_equal(got, free)


@pytest.mark.parametrize("n_neg", [None, 4])
def test_uniform_never_returns_positives(dense: np.ndarray, n_neg: int | None) -> None:
    sampler = UniformNegativeSampler(_matrix(dense), seed=0)
    users = np.repeat(np.arange(8), 500)
    neg = sampler.sample(users, n_neg)
    assert neg.shape == ((4000,) if n_neg is None else (4000, 4))
    rows = users if n_neg is None else users[:, None]
    assert not dense[rows, neg].any()
    assert (neg[users == 5] == 5).all()  # the near-full user's only negative


def test_uniform_is_uniform_over_non_positives(dense: np.ndarray) -> None:
    sampler = UniformNegativeSampler(_matrix(dense), seed=1)
    user = 0
    free = np.flatnonzero(~dense[user])
    neg = sampler.sample(np.full(12_000, user))
    counts = np.bincount(neg, minlength=12)[free]
    assert counts.sum() == 12_000
    assert chisquare(counts).pvalue > 1e-3


def test_same_seed_same_draws_and_rng_override(dense: np.ndarray) -> None:
    users = np.arange(8).repeat(10)
    a = UniformNegativeSampler(_matrix(dense), seed=7).sample(users)
    b = UniformNegativeSampler(_matrix(dense), seed=7).sample(users)
    np.testing.assert_array_equal(a, b)
    sampler = UniformNegativeSampler(_matrix(dense), seed=0)
    c = sampler.sample(users, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, c)


def test_contains_matches_dense(dense: np.ndarray) -> None:
    sampler = UniformNegativeSampler(_matrix(dense))
    u, i = np.meshgrid(np.arange(8), np.arange(12), indexing="ij")
    np.testing.assert_array_equal(sampler.contains(u, i), dense)


def test_duplicate_and_unsorted_entries_are_one_positive() -> None:
    # row 0 stores item 2 twice and out of order: positives {0, 2}, negatives {1, 3}
    csr = sp.csr_matrix((np.ones(3), np.array([2, 0, 2]), np.array([0, 3])), shape=(1, 4))
    sampler = UniformNegativeSampler(csr)
    got = sampler._draw(np.zeros(2, np.int64), _FixedDraws(np.array([0, 1])))  # type: ignore[arg-type]
    np.testing.assert_array_equal(got, [1, 3])


def test_bad_users_are_one_line_errors(dense: np.ndarray) -> None:
    full = dense.copy()
    full[1] = True
    sampler = UniformNegativeSampler(_matrix(full))
    with pytest.raises(PolyrecError, match="user 1 interacted with every item"):
        sampler.sample(np.array([0, 1]))
    with pytest.raises(PolyrecError, match="out of range"):
        sampler.sample(np.array([8]))
    with pytest.raises(PolyrecError, match="n_neg"):
        sampler.sample(np.array([0]), 0)


def test_popularity_frequencies_follow_pop_power_alpha(dense: np.ndarray) -> None:
    alpha = 0.75
    sampler = PopularityNegativeSampler(_matrix(dense), seed=2, alpha=alpha)
    pop = dense.sum(0).astype(float)
    np.testing.assert_allclose(sampler.probability, pop**alpha / (pop**alpha).sum())
    user = 2  # no positives: the plain popularity distribution
    neg = sampler.sample(np.full(20_000, user))
    support = np.flatnonzero(pop > 0)
    assert set(np.unique(neg)) <= set(support)
    counts = np.bincount(neg, minlength=12)[support]
    expected = sampler.probability[support] * len(neg)
    assert chisquare(counts, expected).pvalue > 1e-3


def test_popularity_rejects_positives_and_renormalises(dense: np.ndarray) -> None:
    sampler = PopularityNegativeSampler(_matrix(dense), seed=4, alpha=1.0)
    users = np.repeat(np.arange(8), 2000)
    neg = sampler.sample(users, 2)
    assert not dense[users[:, None], neg].any()
    user = 0
    free = np.flatnonzero(~dense[user] & (dense.sum(0) > 0))
    got = np.bincount(neg[users == user].ravel(), minlength=12)[free]
    p = sampler.probability[free] / sampler.probability[free].sum()
    assert chisquare(got, p * got.sum()).pvalue > 1e-3


def test_popularity_user_holding_all_mass_is_an_error() -> None:
    m = np.array([[1, 1, 0], [1, 0, 0]], bool)  # item 2 has popularity 0
    sampler = PopularityNegativeSampler(_matrix(m), alpha=1.0)
    assert (sampler.sample(np.full(50, 1)) == 1).all()
    with pytest.raises(PolyrecError, match="user 0 interacted with every item of non-zero"):
        sampler.sample(np.array([0]))


def test_bpr_triples_cover_each_interaction_once(dense: np.ndarray) -> None:
    csr = _matrix(dense)
    users, pos, neg = bpr_triples(csr, np.random.default_rng(0))
    assert len(users) == len(pos) == len(neg) == csr.nnz
    got = np.sort(users * 12 + pos)
    want = np.sort(np.flatnonzero(dense.ravel()))
    np.testing.assert_array_equal(got, want)
    assert not dense[users, neg].any()
    assert not (np.diff(users) >= 0).all()  # shuffled, not in CSR order
    again = bpr_triples(csr, np.random.default_rng(0))
    for a, b in zip((users, pos, neg), again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bpr_triples_rejects_a_sampler_of_another_matrix(dense: np.ndarray) -> None:
    sampler = UniformNegativeSampler(_matrix(dense[:, :10]))
    with pytest.raises(PolyrecError, match="sampler is for a 8x10 matrix, not 8x12"):
        bpr_triples(_matrix(dense), np.random.default_rng(0), sampler)


def test_bpr_triples_with_popularity_sampler(dense: np.ndarray) -> None:
    csr = _matrix(dense)
    sampler = PopularityNegativeSampler(csr, alpha=1.0)
    users, _, neg = bpr_triples(csr, np.random.default_rng(0), sampler)
    assert not dense[users, neg].any()
    assert (sampler.probability[neg] > 0).all()

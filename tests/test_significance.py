"""Paired tests against scipy, multiple-testing corrections by hand, seed summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from polyrec.errors import PolyrecError
from polyrec.eval import benjamini_hochberg, compare_runs, holm, paired_tests, summarize_seeds
from polyrec.eval.ctr_metrics import auc
from polyrec.eval.significance import delong_test

A = np.array([0.10, 0.40, 0.35, 0.80, 0.50, 0.20, 0.65, 0.30])
B = np.array([0.05, 0.30, 0.40, 0.60, 0.45, 0.10, 0.50, 0.31])


def test_paired_tests_match_scipy_and_hand_ci():
    r = paired_tests(A, B)
    t = stats.ttest_rel(A, B)
    w = stats.wilcoxon(A, B)
    assert r["t_stat"] == pytest.approx(t.statistic) and r["t_pvalue"] == pytest.approx(t.pvalue)
    assert r["wilcoxon_stat"] == pytest.approx(w.statistic)
    assert r["wilcoxon_pvalue"] == pytest.approx(w.pvalue)
    d = A - B
    assert r["n"] == 8 and r["mean_diff"] == pytest.approx(d.mean())
    assert r["mean_a"] == pytest.approx(A.mean()) and r["mean_b"] == pytest.approx(B.mean())
    # 95% CI: mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)
    half = stats.t.ppf(0.975, 7) * d.std(ddof=1) / math.sqrt(8)
    assert r["ci_low"] == pytest.approx(d.mean() - half)
    assert r["ci_high"] == pytest.approx(d.mean() + half)


def test_identical_and_constant_differences():
    r = paired_tests(A, A.copy())
    assert r["t_pvalue"] == 1.0 and r["wilcoxon_pvalue"] == 1.0 and r["mean_diff"] == 0.0
    assert r["ci_low"] == 0.0 and r["ci_high"] == 0.0
    r = paired_tests(A + 0.25, A)
    assert r["t_pvalue"] == 0.0 and r["t_stat"] == math.inf
    assert r["mean_diff"] == pytest.approx(0.25)
    assert r["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(A + 0.25, A).pvalue)


def test_paired_tests_reject_bad_input():
    with pytest.raises(PolyrecError, match="equal length"):
        paired_tests(A, B[:3])
    with pytest.raises(PolyrecError, match="at least 2"):
        paired_tests(A[:1], B[:1])
    with pytest.raises(PolyrecError, match="NaN"):
        paired_tests(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))


def test_holm_by_hand():
    # sorted: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1) -> 0.02, 0.03, 0.06, 0.04
    # running max -> 0.02, 0.03, 0.06, 0.06; back in input order:
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # 2 * 0.5 = 1.0, then max(1.0, 0.6) = 1.0; capped at 1
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.7, 0.8]), [1.0, 1.0])


def test_benjamini_hochberg_by_hand():
    # sorted p * m / i: 0.005*4/1 = 0.02, 0.01*4/2 = 0.02, 0.03*4/3 = 0.04, 0.04*4/4 = 0.04
    out = benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(out, [0.02, 0.04, 0.04, 0.02])


def test_compare_runs_aligns_users_and_corrects():
    rng = np.random.default_rng(0)
    users_a = np.arange(10)
    a = {"recall@10": rng.random(10), "ndcg@10": rng.random(10), "only_a": rng.random(10)}
    users_b = np.array([9, 7, 5, 3, 1, 0, 2, 4, 11, 12])  # users 6, 8 only in A; 11, 12 only in B
    b = {"recall@10": rng.random(10), "ndcg@10": rng.random(10)}
    df = compare_runs(a, users_a, b, users_b)
    assert list(df.index) == ["recall@10", "ndcg@10"]
    common = np.array([0, 1, 2, 3, 4, 5, 7, 9])
    pos_b = {u: i for i, u in enumerate(users_b)}
    ib = [pos_b[u] for u in common]
    expected = paired_tests(a["ndcg@10"][common], b["ndcg@10"][ib])
    for col, val in expected.items():
        assert df.loc["ndcg@10", col] == pytest.approx(val)
    np.testing.assert_allclose(df["t_pvalue_holm"], holm(df["t_pvalue"].to_numpy()))
    np.testing.assert_allclose(
        df["wilcoxon_pvalue_bh"], benjamini_hochberg(df["wilcoxon_pvalue"].to_numpy())
    )
    with pytest.raises(PolyrecError, match="missing from one run"):
        compare_runs(a, users_a, b, users_b, metrics=["only_a"])
    with pytest.raises(PolyrecError, match="share 0 users"):
        compare_runs(a, users_a, b, users_b + 100)


def test_summarize_seeds():
    out = summarize_seeds([{"recall@10": 0.1, "ndcg@10": 0.2}, {"recall@10": 0.3, "ndcg@10": 0.4}])
    # mean 0.2, sample std sqrt((0.1^2 + 0.1^2) / 1)
    assert out["recall@10"]["mean"] == pytest.approx(0.2)
    assert out["recall@10"]["std"] == pytest.approx(math.sqrt(0.02))
    assert out["ndcg@10"]["mean"] == pytest.approx(0.3)
    assert summarize_seeds([{"hr@5": 0.5}]) == {"hr@5": {"mean": 0.5, "std": 0.0}}
    with pytest.raises(PolyrecError, match="different metrics"):
        summarize_seeds([{"hr@5": 0.5}, {"hr@10": 0.5}])
    with pytest.raises(PolyrecError, match="no run summaries"):
        summarize_seeds([])


def _delong_by_definition(y, a, b):
    """DeLong et al. (1988) with explicit pairwise kernels psi(x, z) = 1, 1/2, 0."""
    comps = []
    for s in (a, b):
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = comps
    s10 = np.cov(np.stack([v10_a, v10_b]))
    s01 = np.cov(np.stack([v01_a, v01_b]))
    m, n = (y == 1).sum(), (y == 0).sum()
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return auc_a, auc_b, var


def test_delong_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(int)
    a = np.round(y + rng.normal(size=300), 1)  # rounding makes ties
    b = np.round(0.5 * y + rng.normal(size=300), 1)
    got = delong_test(y, a, b)
    auc_a, auc_b, var = _delong_by_definition(y, a, b)
    assert got["auc_a"] == pytest.approx(auc_a) and got["auc_b"] == pytest.approx(auc_b)
    assert got["auc_a"] == pytest.approx(auc(y, a))
    assert got["se"] == pytest.approx(math.sqrt(var))
    z = (auc_a - auc_b) / math.sqrt(var)
    assert got["z"] == pytest.approx(z) and got["pvalue"] == pytest.approx(
        2 * stats.norm.sf(abs(z))
    )
    same = delong_test(y, a, a)
    assert same["diff"] == 0 and same["pvalue"] == 1.0
    with pytest.raises(PolyrecError, match="0 or 1"):
        delong_test(np.array([0, 1, 2, 1]), a[:4], b[:4])
    with pytest.raises(PolyrecError, match=">= 2 positives"):
        delong_test(np.array([0, 0, 0, 1]), a[:4], b[:4])

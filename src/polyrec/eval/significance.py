"""Paired significance tests between two runs, multiple-testing corrections, seed summaries.

Per-user metric values of two systems on the same users are compared with the paired t-test
and the Wilcoxon signed-rank test (Smucker, Allan & Carterette, CIKM 2007; Sakai, "Statistical
reform in information retrieval?", SIGIR Forum 2014). p-values across metrics are corrected
with Holm's step-down method (Holm, Scand. J. Statistics 1979; controls the family-wise error)
and Benjamini-Hochberg (J. R. Stat. Soc. B 1995; controls the false discovery rate).

Two rankers' AUCs on the same samples are compared with DeLong's test for correlated ROC curves
(DeLong, DeLong & Clarke-Pearson, Biometrics 1988), computed from midranks in O(n log n) as in
Sun & Xu, "Fast Implementation of DeLong's Algorithm", IEEE Signal Processing Letters 2014.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from polyrec.errors import PolyrecError


def paired_tests(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95) -> dict[str, float]:
    """Paired t-test and Wilcoxon signed-rank test of ``a - b`` (same users, same order).

    Returns ``n``, ``mean_a``, ``mean_b``, ``mean_diff``, ``ci_low`` / ``ci_high`` (t-based
    confidence interval of the mean difference), ``t_stat``, ``t_pvalue``, ``wilcoxon_stat``,
    ``wilcoxon_pvalue``. Identical arrays give p = 1.0 for both tests; a constant non-zero
    difference gives a t-test p of 0.0.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise PolyrecError(
            f"paired arrays must be 1-D of equal length, got {x.shape} and {y.shape}"
        )
    if len(x) < 2:
        raise PolyrecError(f"paired tests need at least 2 users, got {len(x)}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise PolyrecError("paired arrays contain NaN")
    d = x - y
    mean_diff = float(d.mean())
    if np.ptp(d) <= 1e-12 * max(1.0, abs(mean_diff)):
        # zero variance (up to rounding): the t statistic is 0 (no difference) or infinite
        t_stat = 0.0 if mean_diff == 0 else float(np.copysign(np.inf, mean_diff))
        t_p = 1.0 if mean_diff == 0 else 0.0
        ci_low = ci_high = mean_diff
    else:
        res = stats.ttest_rel(x, y)
        ci = res.confidence_interval(confidence)
        t_stat, t_p = float(res.statistic), float(res.pvalue)
        ci_low, ci_high = float(ci.low), float(ci.high)
    if np.all(d == 0):
        w_stat, w_p = 0.0, 1.0
    else:
        w = stats.wilcoxon(x, y)
        w_stat, w_p = float(w.statistic), float(w.pvalue)
    return {
        "n": float(len(d)),
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "mean_diff": mean_diff,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "t_stat": t_stat,
        "t_pvalue": t_p,
        "wilcoxon_stat": w_stat,
        "wilcoxon_pvalue": w_p,
    }


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of ``AUC(a) - AUC(b)`` on the same labelled samples (two-sided).

    Returns ``n_pos``, ``n_neg``, ``auc_a``, ``auc_b``, ``diff``, ``se`` (standard error of the
    difference), ``z`` and ``pvalue``. Ties count half, as in the Mann-Whitney AUC.
    """
    y = np.asarray(labels)
    scores = np.stack([np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)])
    if y.ndim != 1 or scores.shape[1:] != y.shape:
        raise PolyrecError(f"labels {y.shape} and scores {scores.shape[1:]} must be 1-D, equal")
    pos, neg = y == 1, y == 0
    if not (pos | neg).all():
        raise PolyrecError("DeLong labels must be 0 or 1")
    m, n = int(pos.sum()), int(neg.sum())
    if m < 2 or n < 2:
        raise PolyrecError(f"DeLong needs >= 2 positives and negatives, got {m} and {n}")
    x, z = scores[:, pos], scores[:, neg]
    tx = np.stack([stats.rankdata(r) for r in x])  # midranks within positives
    tz = np.stack([stats.rankdata(r) for r in z])
    tall = np.stack([stats.rankdata(r) for r in np.concatenate([x, z], axis=1)])
    auc = (tall[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v01 = (tall[:, :m] - tx) / n  # structural components of the positives
    v10 = 1.0 - (tall[:, m:] - tz) / m  # and of the negatives
    cov = np.cov(v01) / m + np.cov(v10) / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(auc[0] - auc[1])
    if var <= 0:
        z_stat, p = (0.0, 1.0) if diff == 0 else (float(np.copysign(np.inf, diff)), 0.0)
    else:
        z_stat = diff / var**0.5
        p = float(2 * stats.norm.sf(abs(z_stat)))
    return {
        "n_pos": float(m),
        "n_neg": float(n),
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "diff": diff,
        "se": max(var, 0.0) ** 0.5,
        "z": z_stat,
        "pvalue": p,
    }


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values: ``max_{j<=i} min(1, (m - j + 1) p_(j))``, p sorted."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate)."""
    p = np.asarray(pvalues, dtype=np.float64)
    return stats.false_discovery_control(p, method="bh") if len(p) else p


def compare_runs(
    per_user_a: Mapping[str, np.ndarray],
    users_a: np.ndarray,
    per_user_b: Mapping[str, np.ndarray],
    users_b: np.ndarray,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Paired tests of run A vs run B per metric, on the users both runs evaluated.

    ``per_user_*`` / ``users_*`` are :class:`~polyrec.eval.EvalResult` ``per_user`` / ``users``.
    One row per metric (index), the columns of :func:`paired_tests`, plus Holm and
    Benjamini-Hochberg adjusted p-values across the compared metrics (``t_pvalue_holm``,
    ``t_pvalue_bh``, ``wilcoxon_pvalue_holm``, ``wilcoxon_pvalue_bh``).
    """
    ua, ub = np.asarray(users_a), np.asarray(users_b)
    for name, u in (("users_a", ua), ("users_b", ub)):
        if len(np.unique(u)) != len(u):
            raise PolyrecError(f"{name} has duplicate users")
    common, ia, ib = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
    if len(common) < 2:
        raise PolyrecError(f"the two runs share {len(common)} users; paired tests need >= 2")
    names = list(metrics) if metrics is not None else [k for k in per_user_a if k in per_user_b]
    if not names:
        raise PolyrecError("no metric to compare: the runs have no per-user metric in common")
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in per_user_a or name not in per_user_b:
            raise PolyrecError(f"metric {name!r} missing from one run's per-user results")
        a, b = np.asarray(per_user_a[name]), np.asarray(per_user_b[name])
        if len(a) != len(ua) or len(b) != len(ub):
            raise PolyrecError(f"per-user {name!r} is not aligned with its users array")
        rows[name] = paired_tests(a[ia], b[ib])
    df = pd.DataFrame.from_dict(rows, orient="index")
    for test in ("t_pvalue", "wilcoxon_pvalue"):
        df[f"{test}_holm"] = holm(df[test].to_numpy())
        df[f"{test}_bh"] = benjamini_hochberg(df[test].to_numpy())
    df.index.name = "metric"
    return df


def summarize_seeds(summaries: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one run) of each metric over seeds."""
    if not summaries:
        raise PolyrecError("no run summaries to aggregate")
    keys = list(summaries[0])
    for i, s in enumerate(summaries[1:], start=1):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))
            raise PolyrecError(f"summary {i} has different metrics than summary 0: {diff}")
    values = np.array([[float(s[k]) for k in keys] for s in summaries])
    std = values.std(axis=0, ddof=1) if len(summaries) > 1 else np.zeros(len(keys))
    mean = values.mean(axis=0)
    return {k: {"mean": float(mean[j]), "std": float(std[j])} for j, k in enumerate(keys)}

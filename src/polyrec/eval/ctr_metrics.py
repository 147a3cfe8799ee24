"""Click-through-rate metrics: AUC, gAUC and logloss.

AUC is computed by the rank-sum (Mann-Whitney U) formula with tied scores given their average
rank, so a tie between a positive and a negative counts one half, exactly as sklearn's
``roc_auc_score``. gAUC (Zhou et al., "Deep Interest Network", KDD 2018, Eq. 6) is the mean of
per-user AUCs weighted by each user's number of impressions; users whose impressions are all
positive or all negative have no AUC and are left out.
"""

from __future__ import annotations

import numpy as np

from polyrec.errors import PolyrecError


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise PolyrecError(f"labels has {len(y)} entries but scores has {len(s)}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise PolyrecError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise PolyrecError("scores contain NaN or infinity")
    return y, s


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores`` with ties sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last member of each tie group
    mean_rank = upper - (counts - 1) / 2.0
    return mean_rank[inverse]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; ties count 1/2. Needs both classes present."""
    y, s = _check(labels, scores)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise PolyrecError("AUC needs at least one positive and one negative label")
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def per_user_auc(
    users: np.ndarray, labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user, auc, impressions)`` for every user with both a positive and a negative.

    Vectorised: one global sort by (user, score) gives within-user average ranks.
    """
    y, s = _check(labels, scores)
    u = np.asarray(users).ravel()
    if u.shape != y.shape:
        raise PolyrecError(f"users has {len(u)} entries but labels has {len(y)}")
    uniq, uinv = np.unique(u, return_inverse=True)
    order = np.lexsort((s, uinv))
    su, ss = uinv[order], s[order]
    n = len(ss)
    # tie groups: runs of equal (user, score) in the sorted order
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (su[1:] != su[:-1]) | (ss[1:] != ss[:-1])
    gid = np.cumsum(new_group) - 1
    g_counts = np.bincount(gid)
    g_end = np.cumsum(g_counts)  # global 1-based position of each group's last row
    user_start = np.searchsorted(su, np.arange(len(uniq)))  # 0-based start of each user
    g_user = su[g_end - 1]
    g_rank = g_end - user_start[g_user] - (g_counts - 1) / 2.0
    ranks = np.empty(n)
    ranks[order] = g_rank[gid]
    impressions = np.bincount(uinv, minlength=len(uniq)).astype(np.float64)
    n_pos = np.bincount(uinv, weights=y, minlength=len(uniq))
    n_neg = impressions - n_pos
    pos_rank_sum = np.bincount(uinv, weights=ranks * y, minlength=len(uniq))
    ok = (n_pos > 0) & (n_neg > 0)
    values = (pos_rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
    return uniq[ok], values, impressions[ok]


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUCs (users with one class only are skipped)."""
    _, values, weights = per_user_auc(users, labels, scores)
    if len(values) == 0:
        raise PolyrecError("gAUC needs a user with both a positive and a negative label")
    return float((values * weights).sum() / weights.sum())


def logloss(labels: np.ndarray, probs: np.ndarray, *, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probabilities are clipped to ``[eps, 1 - eps]``."""
    y, p = _check(labels, probs)
    if ((p < 0) | (p > 1)).any():
        raise PolyrecError("logloss needs probabilities in [0, 1]")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)).mean())


def ctr_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """``{"auc", "gauc", "logloss"}`` of click probabilities ``probs``."""
    return {
        "auc": auc(labels, probs),
        "gauc": gauc(users, labels, probs),
        "logloss": logloss(labels, probs),
    }

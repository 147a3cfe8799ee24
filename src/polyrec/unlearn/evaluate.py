"""Forget/retain evaluation of an unlearned model, against the retrained gold model.

- **Utility kept**: Recall/NDCG@K on the *retain test set* (test interactions of users and items
  that were not forgotten), retain training items masked.
- **Forgetting**: Recall@K of the forgotten interactions themselves (ranked among the items the
  user has no retained interaction with) and their mean percentile rank (0 = top, 1 = bottom).
  A good method lands near the gold model, not at zero: the gold model still ranks some
  forgotten items high from what the retain data implies, and "too forgotten" leaks too.
- **Membership inference**: an attacker who sees the model's scores tries to tell forgotten
  (trained-on, then removed) pairs from never-trained positives (held-out test pairs of the
  same users, the same number of each). The attack feature is the pair's percentile rank in
  the user's list; the AUC of the best threshold on one feature is the ROC AUC of that feature,
  so the attack AUC is reported (0.5 = indistinguishable, as for the gold model).
- **Time**: the method's wall time and its speed-up over the gold model's retraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from polyrec.data.dataset import Dataset
from polyrec.eval import evaluate
from polyrec.models.base import Recommender
from polyrec.ranking import mask_seen_
from polyrec.unlearn.request import AppliedRequest


def retain_test(test: Dataset, applied: AppliedRequest) -> Dataset:
    """``test`` without the forgotten users, items and (user, item) pairs."""
    forgotten = applied.forget
    pair_keys = forgotten.users * test.n_items + forgotten.items
    keep = ~np.isin(test.users, applied.users) & ~np.isin(test.items, applied.items)
    keep &= ~np.isin(test.users * test.n_items + test.items, pair_keys)
    return test.with_interactions(keep)


def percentile_ranks(
    model: Recommender,
    users: np.ndarray,
    items: np.ndarray,
    exclude: sp.csr_matrix,
    batch_size: int = 512,
) -> np.ndarray:
    """For each (user, item) pair, the fraction of the user's candidate items (those not in
    ``exclude``) that score strictly higher than the item; masked items count as the bottom."""
    out = np.empty(len(users), np.float64)
    order = np.argsort(users, kind="stable")
    uniq, start = np.unique(users[order], return_index=True)
    bounds = np.append(start, len(order))
    with torch.inference_mode():
        for b in range(0, len(uniq), batch_size):
            batch = uniq[b : b + batch_size]
            scores = mask_seen_(model.score(batch).float(), exclude, batch)
            n_cand = torch.isfinite(scores).sum(dim=1).clamp_min(1)
            for row in range(len(batch)):
                idx = order[bounds[b + row] : bounds[b + row + 1]]
                s = scores[row]
                target = s[torch.from_numpy(items[idx])]
                higher = (s.unsqueeze(0) > target.unsqueeze(1)).sum(dim=1).double()
                ranks = higher / float(n_cand[row])
                ranks[~torch.isfinite(target)] = 1.0
                out[idx] = ranks.numpy()
    return out


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > a random negative), ties counting half (Mann-Whitney)."""
    scores = np.concatenate([positive, negative])
    ranks = _average_ranks(scores)
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    _, first, counts = np.unique(sorted_x, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return ranks


def membership_auc(
    model: Recommender,
    applied: AppliedRequest,
    test: Dataset,
    *,
    max_pairs: int = 5000,
    seed: int = 0,
) -> float | None:
    """Attack AUC: forgotten pairs vs never-trained test pairs by percentile rank (lower rank
    = more likely a member). Pairs of forgotten (blocked) items are left out on both sides:
    they are masked for every method. Non-members are the test pairs of the forgotten pairs'
    users when they have any, else all of ``test``. ``None`` when either side is empty."""
    forget = applied.forget
    fmask = ~np.isin(forget.items, applied.items)
    tmask = ~np.isin(test.items, applied.items)
    same_users = tmask & np.isin(test.users, forget.users[fmask])
    if same_users.any():
        tmask = same_users
    f_rows, t_rows = np.flatnonzero(fmask), np.flatnonzero(tmask)
    if len(f_rows) == 0 or len(t_rows) == 0:
        return None
    rng = np.random.default_rng(seed)
    n = min(max_pairs, len(f_rows), len(t_rows))
    fi = rng.choice(f_rows, n, replace=False)
    ti = rng.choice(t_rows, n, replace=False)
    exclude = applied.retain.binary_csr
    members = percentile_ranks(model, forget.users[fi], forget.items[fi], exclude)
    others = percentile_ranks(model, test.users[ti], test.items[ti], exclude)
    return roc_auc(-members, -others)


def unlearning_report(
    model: Recommender,
    applied: AppliedRequest,
    test: Dataset,
    *,
    ks: Sequence[int] = (20,),
    seconds: float | None = None,
    gold: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """All forget/retain metrics of ``model`` (see module docstring); with ``gold`` (the
    report of the retrained model) also the ratios to gold and the speed-up."""
    ks = tuple(ks)
    k = max(ks)
    exclude = {"retain": applied.retain.binary_csr}
    out: dict[str, Any] = {}
    kept = retain_test(test, applied)
    util = evaluate(model, kept, exclude=exclude, ks=ks, beyond=False).summary
    out.update({f"retain_{m}": v for m, v in util.items() if m.split("@")[0] in ("recall", "ndcg")})
    forget = applied.forget
    if forget.n_interactions:
        fr = evaluate(model, forget, exclude=exclude, ks=ks, metrics=("recall",), beyond=False)
        out.update({f"forget_{m}": v for m, v in fr.summary.items()})
        ranks = percentile_ranks(model, forget.users, forget.items, exclude["retain"])
        out["forget_mean_percentile_rank"] = float(ranks.mean())
    mia = membership_auc(model, applied, test, seed=seed)
    if mia is not None:
        out["mia_auc"] = mia
    if seconds is not None:
        out["seconds"] = seconds
    if gold is not None:
        key = f"retain_recall@{k}"
        out["retain_recall_vs_gold"] = out[key] / gold[key] if gold.get(key) else None
        fkey = f"forget_recall@{k}"
        if fkey in out and gold.get(fkey) is not None:
            out["forget_recall_minus_gold"] = out[fkey] - gold[fkey]
        if seconds is not None and gold.get("seconds"):
            out["speedup_vs_gold"] = gold["seconds"] / seconds
    return out

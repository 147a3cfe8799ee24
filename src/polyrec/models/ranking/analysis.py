"""The DARE paper's analyses of the search stage (Feng et al., ICLR 2025, Sec. 4-5).

- :func:`search_recall`: how often the GSU's top-k holds the behaviours most related to the
  target, with "related" defined by the data's categories (same category as the target): per
  sample, the share of the ``min(k, #same-category)`` slots filled by same-category behaviours;
- :func:`gradient_conflict`: in a model with one shared table (TWIN), the gradients the item
  table gets from the attention path and from the representation path, compared row by row
  (the paper's Sec. 3: representation gradients dominate in magnitude and often point against
  the attention gradients);
- :func:`search_timing`: wall time of the search stage (attention scores + top-k) and of full
  scoring for one user's history against a batch of candidates, per 1,000 candidates;
- :func:`target_in_history`: which samples' target item is already among their behaviours (a
  repeat), the case where the search only has to recognise the item itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from polyrec.data.ctr import CTRSamples
from polyrec.errors import PolyrecError
from polyrec.models.ranking.base import CTRRanker
from polyrec.models.ranking.twostage import TwoStageNet


def _two_stage(model: CTRRanker) -> TwoStageNet:
    net = model._check_fitted()
    if not isinstance(net, TwoStageNet):
        raise PolyrecError(f"{model.name} has no search stage (GSU); use sim, twin or dare")
    return net


@torch.no_grad()
def search_recall(model: CTRRanker, samples: CTRSamples, *, batch_size: int = 2048) -> float:
    """Mean share of GSU slots holding same-category behaviours, over samples whose history
    has at least one behaviour of the target's category."""
    net = _two_stage(model)
    net.eval()
    total, count = 0.0, 0
    for lo in range(0, len(samples), batch_size):
        batch = samples.batch(np.arange(lo, min(lo + batch_size, len(samples))))
        related = (batch["hist_cat"] == batch["category"][:, None]) & batch["hist_mask"]
        idx, real = net.select(batch)
        hits = (related.gather(1, idx) & real).sum(1).double()
        n_related = related.sum(1).double()
        ok = n_related > 0
        total += float((hits[ok] / n_related[ok].clamp(max=idx.shape[1])).sum())
        count += int(ok.sum())
    if count == 0:
        raise PolyrecError("no sample has a behaviour of its target's category")
    return total / count


def gradient_conflict(
    model: CTRRanker, samples: CTRSamples, *, n_batches: int = 20, batch_size: int = 256
) -> dict[str, float]:
    """Attention-path vs representation-path gradients of the item embedding table.

    Over ``n_batches`` batches: ``norm_ratio`` = mean ||g_repr|| / ||g_attn|| over item rows
    that both paths touch, ``mean_cosine`` of the two row gradients and ``conflict_share``
    (rows with negative cosine). For a decoupled model (DARE) the two paths reach different
    tables: the attention path is read from the attention table and only the norm ratio is
    given (a cosine between rows of two tables means nothing).
    """
    net = _two_stage(model)
    net.train()
    rng = np.random.default_rng(0)
    ratios, cosines = [], []
    try:
        for _ in range(n_batches):
            batch = samples.batch(rng.choice(len(samples), batch_size, replace=False))
            grads = {}
            for path, table in (
                ("attention", net.attention),
                ("representation", net.representation),
            ):
                net.stop_gradient = "representation" if path == "attention" else "attention"
                net.zero_grad(set_to_none=True)
                net.loss(batch).backward()
                grads[path] = table.item.weight.grad.detach().clone()
            g_att, g_rep = grads["attention"], grads["representation"]
            n_att, n_rep = g_att.norm(dim=1), g_rep.norm(dim=1)
            both = (n_att > 0) & (n_rep > 0)
            ratios.append(n_rep[both] / n_att[both])
            if net.attention is net.representation:
                cosines.append(torch.nn.functional.cosine_similarity(g_att[both], g_rep[both]))
    finally:
        net.stop_gradient = None
        net.zero_grad(set_to_none=True)
        net.eval()
    out = {"norm_ratio": float(torch.cat(ratios).mean()), "rows": float(len(torch.cat(ratios)))}
    if cosines:
        cos = torch.cat(cosines)
        out |= {
            "mean_cosine": float(cos.mean()),
            "conflict_share": float((cos < 0).double().mean()),
        }
    return out


@torch.no_grad()
def search_timing(
    model: CTRRanker,
    *,
    history_len: int = 2000,
    n_candidates: int = 1000,
    repeats: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Median milliseconds per 1,000 candidates of the GSU (``search_ms_per_1k``) and of full
    scoring (``score_ms_per_1k``) for one random history of ``history_len`` events, wall clock
    and (``*_cpu_ms_per_1k``) this process's CPU time, which a loaded shared machine inflates
    less."""
    net = _two_stage(model)
    net.eval()
    gen = torch.Generator().manual_seed(seed)
    n_items, n_cats = model.dims["n_items"], model.dims["n_categories"]
    batch = {
        "item": torch.randint(1, n_items, (n_candidates,), generator=gen),
        "category": torch.randint(1, n_cats, (n_candidates,), generator=gen),
        "hist_item": torch.randint(1, n_items, (1, history_len), generator=gen),
        "hist_cat": torch.randint(1, n_cats, (1, history_len), generator=gen),
        "hist_time": torch.randint(
            1, model.dims["n_time_buckets"], (1, history_len), generator=gen
        ),
        "hist_mask": torch.ones(1, history_len, dtype=torch.bool),
    }

    def medians(fn: Callable[[], object]) -> tuple[float, float]:
        """Median wall and CPU milliseconds of ``fn``, scaled to 1,000 candidates."""
        fn()  # warm-up
        wall, cpu = [], []
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        scale = 1000.0 * 1000.0 / n_candidates
        return float(np.median(wall)) * scale, float(np.median(cpu)) * scale

    with torch.inference_mode():  # serving cost: no autograd bookkeeping
        search_wall, search_cpu = medians(lambda: net.select(batch))
        score_wall, score_cpu = medians(lambda: net(batch))
    return {
        "search_ms_per_1k": search_wall,
        "search_cpu_ms_per_1k": search_cpu,
        "score_ms_per_1k": score_wall,
        "score_cpu_ms_per_1k": score_cpu,
        "history_len": float(history_len),
        "n_candidates": float(n_candidates),
    }


def target_in_history(samples: CTRSamples) -> np.ndarray:
    """Per sample, True when its target item is among the behaviours of its history."""
    batch = samples.batch()
    same = (batch["hist_item"] == batch["item"][:, None]) & batch["hist_mask"]
    return same.any(dim=1).numpy()

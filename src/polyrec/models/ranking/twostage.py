"""Two-stage long-sequence attention shared by SIM, TWIN and DARE.

A general search unit (GSU) picks ``top_k`` behaviours of the history for the target, and an
exact search unit (ESU) attends over them: softmax of scaled dot-product scores, then the sum
of the selected behaviours' *representation* embeddings. The prediction tower sees
``[target, interest, target * interest]`` (DARE's ``use_cross_feature``). Scoring follows the
DARE repository's ``scaled_dot_product`` attention in ``concat`` time mode:

    score(t, j) = <a(t), a(j)> / sqrt(d_a) + <q_time, a_time(dt_j)> / sqrt(d_time)

where ``a`` is the attention embedding of item and category and ``a_time`` the embedding of the
bucketed time interval between behaviour j and the target (the query side of the time term is
one learned vector, because the target's own interval is always 0). As in the repository's
``concat`` mode, the representation side carries time too (``time_in_representation``): a
behaviour is represented by its item, category and interval embeddings, the target by its item,
category and the learned vector of interval 0, so the attended interest knows how recent the
behaviours it pooled are.

The models differ in the search and in which table serves attention:

- ``search="category"`` (SIM hard search): the ``top_k`` most recent behaviours of the
  target's category;
- ``search="separate"`` (SIM soft search): top-k by the inner product of a *separate* GSU
  embedding table, trained by SIM's auxiliary task (softmax-pooled whole history -> CTR);
- ``search="consistent"`` (TWIN, DARE): top-k by the very score the ESU uses;
- ``decoupled`` (DARE): attention scores read their own tables (dimension ``attention_dim``;
  item, category and time), representation (ESU values and the target in the tower) reads
  others; without it (SIM, TWIN) one set of tables serves both.

Auxiliary loss (``aux_loss``, the repository's ``-use_aux_loss True`` in every script): the
same attention over the *whole* history, before the top-k cut, pools the representation
embeddings, and a small tower (one hidden layer of ``mlp[0]`` units, as the repository's 200)
predicts the label from ``[target, pooled, target * pooled]``; its cross-entropy is added to
the CTR loss. Without it only the ``top_k`` selected behaviours get a gradient through the
attention scores, so the attention embeddings of the others never train. SIM soft search has
its own auxiliary task instead (``search="separate"``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from polyrec.models.ranking.base import (
    Batch,
    FieldEmbedding,
    RankerConfig,
    RankingNet,
    batched_dot,
    init_padded,
    masked_softmax,
    mlp,
    topk_search,
    weighted_sum,
)

Search = Literal["category", "separate", "consistent"]


class TwoStageConfig(RankerConfig):
    """Options of the search-based models (DARE scripts: top-20 of 200, 16-d time)."""

    top_k: int = Field(20, ge=1)
    time_dim: int = Field(16, ge=1)
    use_time: bool = True
    time_in_representation: bool = True
    aux_loss: bool = True


def interval_embedding(n_buckets: int, dim: int) -> tuple[nn.Embedding, nn.Parameter]:
    """Embeddings of the behaviours' time-interval buckets (0 = padding, a zero vector) and
    the vector of the target's own interval, 0 (the repository's time id 0)."""
    table = nn.Embedding(n_buckets, dim, padding_idx=0)
    init_padded(table, 0.05)
    return table, nn.Parameter(torch.randn(dim) * 0.05)


class TwoStageNet(RankingNet):
    """GSU + ESU network; see the module docstring for ``search`` and ``decoupled``."""

    def __init__(
        self,
        dims: dict[str, int],
        cfg: TwoStageConfig,
        *,
        search: Search,
        decoupled: bool = False,
        attention_dim: int | None = None,
        attention_std: float | None = None,
        gsu_dim: int | None = None,
    ):
        super().__init__()
        n_items, n_cats = dims["n_items"], dims["n_categories"]
        self.search, self.top_k, self.use_time = search, cfg.top_k, cfg.use_time
        self.representation = FieldEmbedding(
            n_items, n_cats, cfg.item_dim, cfg.category_dim, cfg.embedding_std
        )
        if decoupled:
            if attention_dim is None:
                raise ValueError("a decoupled model needs attention_dim")
            self.attention: FieldEmbedding = FieldEmbedding(
                n_items, n_cats, attention_dim, attention_dim, attention_std or cfg.embedding_std
            )
        else:
            self.attention = self.representation
        if cfg.use_time:
            self.time, self.time_query = interval_embedding(dims["n_time_buckets"], cfg.time_dim)
        self.represent_time = cfg.use_time and cfg.time_in_representation
        if self.represent_time:
            if decoupled:
                self.representation_time, self.target_time = interval_embedding(
                    dims["n_time_buckets"], cfg.time_dim
                )
            else:
                self.representation_time, self.target_time = self.time, self.time_query
        if search == "separate":
            if gsu_dim is None:
                raise ValueError("search='separate' needs gsu_dim")
            self.gsu = FieldEmbedding(n_items, n_cats, gsu_dim, gsu_dim, cfg.embedding_std)
            self.aux_tower = mlp(3 * self.gsu.dim, (cfg.mlp[-1],) if cfg.mlp else ())
        d = self.representation.dim + (cfg.time_dim if self.represent_time else 0)
        self.tower = mlp(3 * d, cfg.mlp)
        self.whole_history_tower = (
            mlp(3 * d, cfg.mlp[:1]) if cfg.aux_loss and search != "separate" else None
        )
        # analysis hook (see analysis.gradient_conflict): stop the gradient of one path
        self.stop_gradient: Literal["attention", "representation"] | None = None

    # ------------------------------------------------------------------------------- search
    def attention_scores(self, batch: Batch) -> torch.Tensor:
        """ESU scores of every behaviour (B, L), from the attention tables (and time term)."""
        q = self.attention(batch["item"], batch["category"])
        k = self.attention(batch["hist_item"], batch["hist_cat"])
        q = q / math.sqrt(q.shape[-1])
        if self.use_time:
            # fold the time term into the one product: [q, 1] . [k, time score]
            t = torch.matmul(self.time(batch["hist_time"]), self.time_query)
            t = t / math.sqrt(self.time_query.shape[0])
            q = torch.cat([q, q.new_ones(q.shape[0], 1)], dim=-1)
            k = torch.cat([k, t[:, :, None]], dim=-1)
        return batched_dot(q, k)

    def _gsu_scores(self, batch: Batch) -> torch.Tensor:
        """Inner products of the separate GSU table (SIM soft search), (B, L)."""
        q = self.gsu(batch["item"], batch["category"])
        k = self.gsu(batch["hist_item"], batch["hist_cat"])
        return batched_dot(q, k)

    def select(
        self, batch: Batch, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GSU: indices (B, k) of the selected behaviours and which of them are real."""
        mask = batch["hist_mask"]
        if self.search == "category":
            same = (batch["hist_cat"] == batch["category"][:, None]) & mask
            recency = torch.arange(1, mask.shape[1] + 1, device=mask.device, dtype=torch.float32)
            return topk_search(same * recency, same, self.top_k)
        if self.search == "separate":
            return topk_search(self._gsu_scores(batch), mask, self.top_k)
        if scores is None:
            scores = self.attention_scores(batch)
        return topk_search(scores, mask, self.top_k)

    # ------------------------------------------------------------------------------ forward
    def represent(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Representations of the targets (B, d) and of the behaviours (B or 1, L, d)."""
        target = self.representation(batch["item"], batch["category"])
        hist = self.representation(batch["hist_item"], batch["hist_cat"])
        if self.represent_time:
            target = torch.cat([target, self.target_time.expand(target.shape[0], -1)], dim=-1)
            hist = torch.cat([hist, self.representation_time(batch["hist_time"])], dim=-1)
        return target, hist

    def forward(self, batch: Batch) -> torch.Tensor:
        return self._logits(batch)[0]

    def _logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CTR logits and, with the auxiliary loss, the whole-history tower's logits."""
        target, hist = self.represent(batch)
        scores = self.attention_scores(batch)
        if self.stop_gradient == "attention":
            scores = scores.detach()
        elif self.stop_gradient == "representation":
            target, hist = target.detach(), hist.detach()
        idx, real = self.select(batch, scores)
        weights = masked_softmax(scores.expand(idx.shape[0], -1).gather(1, idx), real)
        chosen = hist.expand(idx.shape[0], -1, -1).gather(
            1, idx[:, :, None].expand(-1, -1, hist.shape[-1])
        )
        interest = (weights[:, :, None] * chosen).sum(1)
        logits = self.tower(torch.cat([target, interest, target * interest], dim=-1))
        if self.whole_history_tower is None or not self.training:
            return logits.squeeze(-1), None
        pooled = weighted_sum(masked_softmax(scores, batch["hist_mask"]), hist)
        aux = self.whole_history_tower(torch.cat([target, pooled, target * pooled], dim=-1))
        return logits.squeeze(-1), aux.squeeze(-1)

    def aux_logits(self, batch: Batch) -> torch.Tensor:
        """SIM's auxiliary CTR head over the softmax-pooled whole history in the GSU table."""
        q = self.gsu(batch["item"], batch["category"])
        k = self.gsu(batch["hist_item"], batch["hist_cat"])
        w = masked_softmax(self._gsu_scores(batch), batch["hist_mask"])
        pooled = weighted_sum(w, k)
        return self.aux_tower(torch.cat([q, pooled, q * pooled], dim=-1)).squeeze(-1)

    def loss(self, batch: Batch) -> torch.Tensor:
        """CTR cross-entropy, plus the auxiliary task's (module docstring)."""
        logits, aux = self._logits(batch)
        if self.search == "separate":
            aux = self.aux_logits(batch)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])
        if aux is not None:
            loss = loss + nn.functional.binary_cross_entropy_with_logits(aux, batch["label"])
        return loss

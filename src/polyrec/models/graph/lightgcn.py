"""LightGCN, and the BPR training shared by the graph models (LightGCN, NGCF).

He, Deng, Wang, Li, Zhang, Wang, "LightGCN: Simplifying and Powering Graph Convolution Network
for Recommendation", SIGIR 2020. With E^(0) the (n_users + n_items) x d embedding table and
Â = D^-1/2 A D^-1/2 the symmetric normalized bipartite adjacency (no self-loops),

    E^(k+1) = Â E^(k),        E = sum_k a_k E^(k)   (a_k = 1 / (K + 1): the layer mean),
    score(u, i) = <e_u, e_i>,

trained with BPR and an L2 penalty on the batch's *layer-0* embeddings,
``reg * (||e_u^(0)||^2 + ||e_i^(0)||^2 + ||e_j^(0)||^2) / 2 / batch`` (gusye1234/LightGCN-PyTorch
``bpr_loss``; embeddings start from N(0, 0.1^2) as in that code).

Training follows both reference codes: each step propagates the full graph (K sparse products
forward, K backward with Â^T, see :class:`~polyrec.models.graph.adjacency.GraphOperator`), and an
epoch draws as many (user, positive, negative) triples as there are training interactions,
users *uniformly* (``sampling: user``: LightGCN's ``UniformSample_original``; NGCF's
``Data.sample`` also draws users uniformly, distinct within a batch), not interactions
(``sampling: interaction`` uses every interaction once, as RecBole does). Scoring propagates once
and caches the final embeddings until the next training step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal, Protocol, Self, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from polyrec.data.dataset import Dataset
from polyrec.data.sampling import bpr_triples, user_uniform_triples
from polyrec.models.base import ModelConfig
from polyrec.models.graph.adjacency import GraphOperator, Normalization, bipartite_adjacency
from polyrec.models.torch_base import TorchConfig, TorchRecommender, triple_batches


class GraphNet(Protocol):
    """What :class:`GraphBPR` needs from a graph model's network."""

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings, deterministic (no dropout)."""
        ...

    def __call__(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x_ui``, ``x_uj`` (B,) and the squared L2 norm the model regularizes (scalar)."""
        ...


class GraphBPRConfig(TorchConfig):
    """Options shared by the BPR-trained graph models."""

    factors: int = Field(64, ge=1)
    reg: float = Field(1e-4, ge=0)
    sampling: Literal["user", "interaction"] = "user"
    epochs: int = Field(1000, ge=1)


class GraphBPR(TorchRecommender):
    """A graph model over the training graph (``self.seen``, saved with the model, so ``load``
    rebuilds the adjacency), trained with BPR; subclasses implement ``_build``."""

    Config: ClassVar[type[ModelConfig]] = GraphBPRConfig
    config: GraphBPRConfig
    user_tables = ("embedding",)  # one node table: users first, then items

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._final: tuple[torch.Tensor, torch.Tensor] | None = None

    def _graph(self, normalization: Normalization) -> GraphOperator:
        """The normalized adjacency of the training graph, for ``_build``."""
        assert self.seen is not None
        return GraphOperator(bipartite_adjacency(self.seen, normalization))

    def clear_score_cache(self) -> None:
        """Drop the propagated embeddings cached by :meth:`final_embeddings`."""
        self._final = None

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        self.clear_score_cache()
        super()._fit(train, valid)
        self.clear_score_cache()  # the trainer may have restored an earlier epoch's weights

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        csr = train.binary_csr
        if self.config.sampling == "user":
            triples = user_uniform_triples(csr, csr.nnz, rng)
        else:
            triples = bpr_triples(csr, rng)
        return triple_batches(triples, self.config.batch_size)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.clear_score_cache()
        x_ui, x_uj, sq_norm = self.train_module(batch["users"], batch["pos"], batch["neg"])
        return F.softplus(x_uj - x_ui).mean() + self.config.reg * 0.5 * sq_norm / len(x_ui)

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated (user, item) embeddings, computed once and cached until training."""
        if self._final is None:
            with torch.no_grad():
                self._final = cast(GraphNet, self.module).propagate()
        return self._final

    def _user_factors(self, users: np.ndarray) -> torch.Tensor:
        user_emb = self.final_embeddings()[0]
        return user_emb[torch.from_numpy(users).to(user_emb.device)]

    def _item_factors(self) -> torch.Tensor:
        return self.final_embeddings()[1]

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        self.clear_score_cache()


class LightGCNConfig(GraphBPRConfig):
    """LightGCN hyperparameters (defaults: the paper's Gowalla setting).

    ``layer_weights`` are the a_0..a_K of the layer combination; ``None`` is the mean.
    """

    n_layers: int = Field(3, ge=0)
    layer_weights: list[float] | None = None
    init_std: float = Field(0.1, gt=0)

    @model_validator(mode="after")
    def _weights_per_layer(self) -> Self:
        if self.layer_weights is not None and len(self.layer_weights) != self.n_layers + 1:
            raise ValueError(
                f"layer_weights needs n_layers + 1 = {self.n_layers + 1} values, "
                f"got {len(self.layer_weights)}"
            )
        return self


class _LightGCNNet(torch.nn.Module):
    """One embedding table (users, then items) propagated by the fixed graph."""

    def __init__(
        self,
        graph: GraphOperator,
        n_users: int,
        n_items: int,
        factors: int,
        layer_weights: list[float],
        init_std: float,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.n_users = n_users
        self.layer_weights = layer_weights
        self.embedding = torch.nn.Parameter(torch.randn(n_users + n_items, factors) * init_std)

    def layers(self) -> list[torch.Tensor]:
        """E^(0), ..., E^(K) of every node."""
        out = [self.embedding]
        for _ in self.layer_weights[1:]:
            out.append(self.graph(out[-1]))
        return out

    def combine(
        self, layers: list[torch.Tensor], nodes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """sum_k a_k E^(k), of the rows ``nodes`` only when given (training needs the batch's)."""
        rows = layers if nodes is None else [layer[nodes] for layer in layers]
        out = self.layer_weights[0] * rows[0]
        for weight, layer in zip(self.layer_weights[1:], rows[1:], strict=True):
            out = out + weight * layer
        return out

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.combine(self.layers())
        return out[: self.n_users], out[self.n_users :]

    def forward(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        layers = self.layers()
        pos, neg = pos + self.n_users, neg + self.n_users
        u, i, j = (self.combine(layers, nodes) for nodes in (users, pos, neg))
        ego = self.embedding
        sq_norm = ego[users].square().sum() + ego[pos].square().sum() + ego[neg].square().sum()
        return (u * i).sum(-1), (u * j).sum(-1), sq_norm


class LightGCN(GraphBPR):
    """Parameter-free propagation over the symmetric normalized graph; layer combination."""

    name = "lightgcn"
    Config: ClassVar[type[ModelConfig]] = LightGCNConfig
    config: LightGCNConfig

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        cfg = self.config
        weights = cfg.layer_weights or [1.0 / (cfg.n_layers + 1)] * (cfg.n_layers + 1)
        return _LightGCNNet(
            self._graph("symmetric"),
            dims["n_users"],
            dims["n_items"],
            cfg.factors,
            weights,
            cfg.init_std,
        )

"""FREEDOM: freezing and denoising graph structures for multimodal recommendation.

Zhou and Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal
Recommendation", ACM MM 2023 (reference code: enoche/FREEDOM, ``models/freedom.py`` in MMRec).

- **Frozen item-item graph.** For each modality m, the kNN graph (k = ``knn_k``) of items by
  cosine similarity of the *raw* features, symmetrically normalised; modalities are mixed as
  ``S = w_image S^image + (1 - w_image) S^text`` (``image_weight``, 0.1 in the paper) and S is
  computed once before training and never updated.
- **Denoised user-item graph.** Before every epoch a fraction ``edge_dropout`` of the
  interaction edges is pruned: ``(1 - edge_dropout) |E|`` edges are kept, drawn without
  replacement with probability proportional to ``1 / sqrt(d_u d_i)`` (degree-sensitive edge
  pruning), and the kept graph is renormalised. Scoring uses the full graph.
- **Propagation.** Items: ``h = S^L_mm e^id`` (``n_mm_layers``). Users and items: LightGCN over
  the (pruned) bipartite graph with the layer mean (``n_layers``), reusing
  :class:`polyrec.models.graph.lightgcn._LightGCNNet`. Final item vector ``e_i + h_i``.
- **Loss.** BPR on ``<e_u, e_i + h_i>`` plus ``modality_weight`` times, per modality, a BPR
  loss between the user vector and the projected (trainable) raw features ``W_m f_i + b_m``.

Item features come from ``Dataset.item_vectors`` (:mod:`polyrec.features.matrix`). With no
modality (``modalities: []``) the item graph term is absent and the model is LightGCN with
degree-sensitive edge pruning (the "ID only" ablation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError
from polyrec.models.base import ModelConfig, sparse_from_state
from polyrec.models.graph.adjacency import GraphOperator, bipartite_adjacency, inverse_sqrt
from polyrec.models.graph.lightgcn import GraphBPR, GraphBPRConfig, _LightGCNNet
from polyrec.models.multimodal.common import item_features, knn_item_graph


class FREEDOMConfig(GraphBPRConfig):
    """FREEDOM hyperparameters (defaults: the paper / MMRec ``FREEDOM.yaml`` setting).

    ``reg`` (inherited) is an L2 penalty on the batch's layer-0 embeddings; FREEDOM's code
    has none, hence 0.
    """

    modalities: list[str] = Field(default_factory=lambda: ["text", "image"])
    n_layers: int = Field(2, ge=0)
    n_mm_layers: int = Field(1, ge=0)
    knn_k: int = Field(10, ge=1)
    image_weight: float = Field(0.1, ge=0, le=1)
    edge_dropout: float = Field(0.8, ge=0, lt=1)
    modality_weight: float = Field(1e-4, ge=0)
    feature_factors: int = Field(64, ge=1)
    reg: float = Field(0.0, ge=0)
    sampling: Literal["user", "interaction"] = "interaction"
    epochs: int = Field(1000, ge=1)


def prune_edges(
    csr: sp.csr_matrix, keep_fraction: float, rng: np.random.Generator
) -> sp.csr_matrix:
    """Degree-sensitive edge pruning: keep ``round(keep_fraction * nnz)`` edges of ``csr``
    drawn without replacement with probability ``∝ 1 / sqrt(d_u d_i)``.

    Weighted sampling without replacement uses exponential keys (Efraimidis and Spirakis,
    2006): the edges with the largest ``log(U) / w`` are a sample with those weights.
    """
    m = sp.csr_matrix(csr)
    m.data[:] = 1.0
    coo = m.tocoo()
    du = np.asarray(m.sum(axis=1)).ravel()
    di = np.asarray(m.sum(axis=0)).ravel()
    weight = inverse_sqrt(du)[coo.row] * inverse_sqrt(di)[coo.col]
    n_keep = round(keep_fraction * m.nnz)
    keys = np.log(rng.random(m.nnz)) / weight
    kept = np.argpartition(-keys, n_keep - 1)[:n_keep] if n_keep < m.nnz else np.arange(m.nnz)
    return sp.csr_matrix(
        (np.ones(len(kept), np.float32), (coo.row[kept], coo.col[kept])), shape=m.shape
    )


class _FREEDOMNet(torch.nn.Module):
    """LightGCN over a swappable user-item graph + frozen item-item graph + feature heads."""

    def __init__(
        self,
        graph: GraphOperator,
        item_graph: GraphOperator | None,
        dims: dict[str, int],
        features: dict[str, torch.Tensor],
        cfg: FREEDOMConfig,
    ) -> None:
        super().__init__()
        n_users, n_items = dims["n_users"], dims["n_items"]
        weights = [1.0 / (cfg.n_layers + 1)] * (cfg.n_layers + 1)
        self.ui = _LightGCNNet(graph, n_users, n_items, cfg.factors, weights, 1.0)
        # Xavier-uniform user and item tables, as nn.init.xavier_uniform_ in the FREEDOM code
        with torch.no_grad():
            for rows in (slice(0, n_users), slice(n_users, n_users + n_items)):
                table = self.ui.embedding[rows]
                bound = (6.0 / (table.shape[0] + table.shape[1])) ** 0.5
                table.uniform_(-bound, bound)
        self.full_graph = graph
        self.train_graph = graph
        self.item_graph = item_graph
        self.n_users, self.n_mm_layers = n_users, cfg.n_mm_layers
        self.features = torch.nn.ParameterDict(
            {m: torch.nn.Parameter(f.clone()) for m, f in features.items()}
        )
        self.heads = torch.nn.ModuleDict(
            {m: torch.nn.Linear(f.shape[1], cfg.factors) for m, f in features.items()}
        )

    def embeddings(self, graph: GraphOperator) -> tuple[torch.Tensor, torch.Tensor]:
        """(user, item) vectors propagated over ``graph`` plus the item-graph term."""
        self.ui.graph = graph
        out = self.ui.combine(self.ui.layers())
        users, items = out[: self.n_users], out[self.n_users :]
        if self.item_graph is not None:
            h = self.ui.embedding[self.n_users :]
            for _ in range(self.n_mm_layers):
                h = self.item_graph(h)
            items = items + h
        return users, items

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embeddings(self.full_graph)

    def forward(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x_ui``, ``x_uj`` on the pruned graph and the summed modality BPR losses."""
        user_all, item_all = self.embeddings(self.train_graph)
        u = user_all[users]
        x_ui = (u * item_all[pos]).sum(-1)
        x_uj = (u * item_all[neg]).sum(-1)
        aux = torch.zeros((), device=u.device)
        for m, head in self.heads.items():
            projected = head(self.features[m])
            aux = (
                aux + F.softplus((u * projected[neg]).sum(-1) - (u * projected[pos]).sum(-1)).mean()
            )
        return x_ui, x_uj, aux


class FREEDOM(GraphBPR):
    """LightGCN with a frozen multimodal item-item graph and degree-sensitive edge pruning."""

    name = "freedom"
    Config: ClassVar[type[ModelConfig]] = FREEDOMConfig
    config: FREEDOMConfig
    user_tables = ("ui.embedding",)  # users first, then items

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._features: dict[str, torch.Tensor] = {}
        self._item_graph: sp.csr_matrix | None = None

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        self.bind_data(train)
        super()._fit(train, valid)

    def bind_data(self, train: Dataset) -> None:
        """Read the modalities from ``train`` and freeze the item-item graph built from them.

        Used by ``fit`` and by unlearning (wiped feature rows drop out of the kNN graph).
        """
        cfg = self.config
        self._features = item_features(train, cfg.modalities)
        graphs = {m: knn_item_graph(f, cfg.knn_k) for m, f in self._features.items()}
        if not graphs:
            self._item_graph = None
        elif len(graphs) == 1:
            self._item_graph = next(iter(graphs.values()))
        elif set(graphs) == {"text", "image"}:
            w = cfg.image_weight
            self._item_graph = (w * graphs["image"] + (1 - w) * graphs["text"]).tocsr()
        else:  # modalities other than FREEDOM's two: equal weights
            self._item_graph = (sum(graphs.values()) / len(graphs)).tocsr()

    def _dims(self, train: Dataset) -> dict[str, int]:
        widths = {f"dim_{m}": int(f.shape[1]) for m, f in self._features.items()}
        return {**super()._dims(train), **widths}

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        feats = self._features or {
            m: torch.zeros(dims["n_items"], dims[f"dim_{m}"]) for m in self.config.modalities
        }
        for m, f in feats.items():
            if f.shape[0] != dims["n_items"]:
                raise PolyrecError(
                    f"freedom: {m} features have {f.shape[0]} rows for {dims['n_items']} items"
                )
        item_graph = None if self._item_graph is None else GraphOperator(self._item_graph)
        return _FREEDOMNet(self._graph("symmetric"), item_graph, dims, feats, self.config)

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        net = cast(_FREEDOMNet, self.module)
        if self.config.edge_dropout > 0:
            kept = prune_edges(train.binary_csr, 1.0 - self.config.edge_dropout, rng)
            net.train_graph = GraphOperator(bipartite_adjacency(kept)).to(self.device)
        else:
            net.train_graph = net.full_graph
        yield from super()._batches(train, rng)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.clear_score_cache()
        x_ui, x_uj, aux = self.train_module(batch["users"], batch["pos"], batch["neg"])
        loss = F.softplus(x_uj - x_ui).mean() + self.config.modality_weight * aux
        if self.config.reg > 0:
            net = cast(_FREEDOMNet, self.module)
            nodes = torch.cat(
                [batch["users"], batch["pos"] + net.n_users, batch["neg"] + net.n_users]
            )
            loss = loss + self.config.reg * 0.5 * net.ui.embedding[nodes].square().sum() / len(x_ui)
        return loss

    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        if self._item_graph is not None:
            state["item_graph"] = self._item_graph
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        graph = state.get("item_graph")
        self._item_graph = None if graph is None else sparse_from_state(graph)
        self._features = {}
        super()._set_state(state)

    def refresh(self, train: Dataset) -> None:
        """Rebuild every data-derived part from ``train`` (user-item graph from ``self.seen``,
        frozen item graph and features) keeping the learned parameters; trainable feature rows
        whose raw row in ``train`` is all zero (wiped by unlearning) are zeroed too."""
        self.bind_data(train)
        state = self.module.state_dict()
        for m, raw in self._features.items():
            wiped = (raw == 0).all(dim=1, keepdim=True)
            state[f"features.{m}"] = torch.where(wiped, 0.0, state[f"features.{m}"])
        self.module = self._build(self.dims).to(self.device)
        self.module.load_state_dict(state)
        self.train_module = self.module
        self.clear_score_cache()

    def drop_modality(self, modality: str) -> None:
        """Stop using ``modality``: rebuild the frozen item graph without it, drop its head."""
        mods = self.config.modalities
        if modality not in mods:
            raise PolyrecError(f"freedom does not use modality {modality!r} (uses {mods})")
        net = cast(_FREEDOMNet, self.module)
        state = {
            k: v
            for k, v in net.state_dict().items()
            if not k.startswith((f"features.{modality}", f"heads.{modality}."))
        }
        # the frozen graph is rebuilt from the raw features when this process has them
        source = self._features or {m: p.detach() for m, p in net.features.items()}
        kept = {m: source[m].clone() for m in mods if m != modality}
        self.config = self.config.model_copy(update={"modalities": list(kept)})
        self.dims.pop(f"dim_{modality}", None)
        probe = Dataset(
            users=np.zeros(0, np.int64),
            items=np.zeros(0, np.int64),
            user_ids=self.user_ids,  # type: ignore[arg-type]
            item_ids=self.item_ids,  # type: ignore[arg-type]
            item_vectors={m: f.cpu().numpy() for m, f in kept.items()},
        )
        self.bind_data(probe)
        self.module = self._build(self.dims)
        self.module.load_state_dict(state)
        self.train_module = self.module
        self.clear_score_cache()

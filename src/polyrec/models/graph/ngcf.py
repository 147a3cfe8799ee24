"""NGCF: Neural Graph Collaborative Filtering, as in its released code.

Wang, He, Wang, Feng, Chua, "Neural Graph Collaborative Filtering", SIGIR 2019. Layer k of the
released TensorFlow code (``NGCF/NGCF.py``, ``_create_ngcf_embed``), with E^(0) the embedding
table and Â the normalized adjacency:

    side  = Â E^(k)
    E^(k+1) = LeakyReLU(side W_gc + b_gc) + LeakyReLU((E^(k) ⊙ side) W_bi + b_bi)
    E^(k+1) <- message dropout(E^(k+1))

(LeakyReLU slope 0.2, TensorFlow's default). The final representation is the concatenation
[E^(0) || norm(E^(1)) || ... || norm(E^(L))] with each propagated layer L2-normalized per row,
and score(u, i) = <e_u, e_i>. Loss: BPR plus
``reg * (||e_u||^2 + ||e_i||^2 + ||e_j||^2) / 2 / batch`` on the *final* embeddings of the
batch; every parameter (embeddings, weights and biases) starts Xavier-uniform.

Adjacency (``normalization``): the paper writes the symmetric 1/sqrt(|N_u||N_i|) with a separate
self-message W_1 e_u; the code instead propagates over D^-1 (A + I) (``--adj_type norm``, its
default), whose self-loop carries the self-message. The code's ``row_self_loop`` is the default
here, since it is what produced the published numbers; ``symmetric`` gives the paper's
normalization (without self-loops). Node dropout is the code's dropout of adjacency entries
(``_dropout_sparse``), one draw per training step shared by all layers; it is off unless
``node_dropout > 0`` (the code needs ``--node_dropout_flag 1``, which its README commands do not
pass). Defaults: the README's Gowalla command (embedding 64, layers [64, 64, 64], lr 1e-4,
batch 1024, regs 1e-5, message dropout 0.1, 400 epochs).
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar, Self

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from polyrec.models.base import ModelConfig
from polyrec.models.graph.adjacency import GraphOperator, Normalization
from polyrec.models.graph.lightgcn import GraphBPR, GraphBPRConfig

LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default alpha


class NGCFConfig(GraphBPRConfig):
    """NGCF hyperparameters (defaults: the released code's Gowalla command)."""

    layer_sizes: list[int] = Field(default_factory=lambda: [64, 64, 64])
    mess_dropout: list[float] = Field(default_factory=lambda: [0.1, 0.1, 0.1])
    node_dropout: float = Field(0.0, ge=0, lt=1)
    normalization: Normalization = "row_self_loop"
    reg: float = Field(1e-5, ge=0)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(1024, ge=1)
    epochs: int = Field(400, ge=1)

    @model_validator(mode="after")
    def _per_layer(self) -> Self:
        if len(self.mess_dropout) != len(self.layer_sizes):
            raise ValueError(
                f"mess_dropout needs one rate per layer ({len(self.layer_sizes)}), "
                f"got {len(self.mess_dropout)}"
            )
        if any(not 0 <= p < 1 for p in self.mess_dropout):
            raise ValueError(f"mess_dropout rates must be in [0, 1), got {self.mess_dropout}")
        if any(size < 1 for size in self.layer_sizes):
            raise ValueError(f"layer_sizes must be >= 1, got {self.layer_sizes}")
        return self


def _xavier_linear(d_in: int, d_out: int) -> torch.nn.Linear:
    """``x W + b`` with W (d_in x d_out) and b (1 x d_out) Xavier-uniform, as in the TF code."""
    layer = torch.nn.Linear(d_in, d_out)
    torch.nn.init.xavier_uniform_(layer.weight)
    torch.nn.init.xavier_uniform_(layer.bias.view(1, -1))
    return layer


class _NGCFNet(torch.nn.Module):
    """One embedding table (users, then items), L propagation layers with their weights."""

    def __init__(
        self,
        graph: GraphOperator,
        n_users: int,
        n_items: int,
        factors: int,
        layer_sizes: list[int],
        mess_dropout: list[float],
        node_dropout: float,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.n_users = n_users
        self.mess_dropout = mess_dropout
        self.node_dropout = node_dropout
        table = torch.empty(n_users + n_items, factors)
        torch.nn.init.xavier_uniform_(table[:n_users])  # two TF variables, two fans
        torch.nn.init.xavier_uniform_(table[n_users:])
        self.embedding = torch.nn.Parameter(table)
        sizes = [factors, *layer_sizes]
        self.gc = torch.nn.ModuleList(_xavier_linear(a, b) for a, b in pairwise(sizes))
        self.bi = torch.nn.ModuleList(_xavier_linear(a, b) for a, b in pairwise(sizes))

    def layers(self, train: bool) -> list[torch.Tensor]:
        """E^(0), ..., E^(L) of every node (not normalized); ``train``: node and message
        dropout."""
        ego = self.embedding
        mask = None
        if train and self.node_dropout > 0:
            mask = self.graph.dropout_mask(self.node_dropout)
        out = [ego]
        for gc, bi, p in zip(self.gc, self.bi, self.mess_dropout, strict=True):
            side = self.graph(ego, mask)
            ego = F.leaky_relu(gc(side), LEAKY_SLOPE) + F.leaky_relu(bi(ego * side), LEAKY_SLOPE)
            ego = F.dropout(ego, p, training=train)
            out.append(ego)
        return out

    @staticmethod
    def concat(layers: list[torch.Tensor], nodes: torch.Tensor | None = None) -> torch.Tensor:
        """[E^(0) || norm(E^(1)) || ...], of the rows ``nodes`` only when given."""
        rows = layers if nodes is None else [layer[nodes] for layer in layers]
        return torch.cat([rows[0], *(F.normalize(e, dim=1) for e in rows[1:])], dim=1)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.concat(self.layers(train=False))
        return out[: self.n_users], out[self.n_users :]

    def forward(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        layers = self.layers(self.training)
        n = self.n_users
        u, i, j = (self.concat(layers, nodes) for nodes in (users, pos + n, neg + n))
        sq_norm = u.square().sum() + i.square().sum() + j.square().sum()
        return (u * i).sum(-1), (u * j).sum(-1), sq_norm


class NGCF(GraphBPR):
    """Graph convolution with sum and bi-interaction messages, concatenated layer outputs."""

    name = "ngcf"
    Config: ClassVar[type[ModelConfig]] = NGCFConfig
    config: NGCFConfig

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        cfg = self.config
        return _NGCFNet(
            self._graph(cfg.normalization),
            dims["n_users"],
            dims["n_items"],
            cfg.factors,
            cfg.layer_sizes,
            cfg.mess_dropout,
            cfg.node_dropout,
        )

"""VBPR: visual Bayesian personalized ranking from implicit feedback.

He and McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback", AAAI 2016.
With ``f_i`` the item's content features (the paper: 4096-d CNN image features; here the
concatenation of the configured modalities of ``Dataset.item_vectors``, as MMRec's VBPR
concatenates image and text features), the preference predictor is (paper Eq. 2)

    x_ui = alpha + beta_u + beta_i + <gamma_u, gamma_i> + <theta_u, E f_i> + <beta', f_i>,

where ``E`` (F x D) projects content features into a ``D``-dim "visual" space and ``beta'``
is the content bias. ``alpha`` and ``beta_u`` do not change a user's ranking and cancel in the
BPR difference, so they are omitted. Training is BPR (``-ln sigma(x_ui - x_uj)``, one uniform
negative per interaction, every interaction once per epoch) with the paper's two regularisers:
``reg`` on the batch's ``gamma_u, theta_u, gamma_i, gamma_j, beta_i, beta_j`` and ``reg_feat``
on the shared ``E`` and ``beta'`` (paper Eq. 8: lambda_Theta and lambda_E).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sampling import bpr_triples
from polyrec.errors import PolyrecError
from polyrec.models.base import ModelConfig
from polyrec.models.multimodal.common import item_features
from polyrec.models.torch_base import TorchConfig, TorchRecommender, triple_batches
from polyrec.ranking import inner_products


class VBPRConfig(TorchConfig):
    """VBPR options: ``factors`` = dim of gamma, ``feature_factors`` = D (dim of theta)."""

    modalities: list[str] = Field(default_factory=lambda: ["text", "image"], min_length=1)
    factors: int = Field(32, ge=1)
    feature_factors: int = Field(32, ge=1)
    reg: float = Field(1e-4, ge=0)
    reg_feat: float = Field(1e-4, ge=0)
    init_std: float = Field(0.1, gt=0)
    epochs: int = Field(100, ge=1)


class _VBPRNet(torch.nn.Module):
    """Latent factors, content projection ``E`` and biases over a fixed feature buffer."""

    def __init__(self, n_users: int, n_items: int, features: torch.Tensor, cfg: VBPRConfig) -> None:
        super().__init__()
        self.gamma_user = torch.nn.Embedding(n_users, cfg.factors)
        self.gamma_item = torch.nn.Embedding(n_items, cfg.factors)
        self.theta_user = torch.nn.Embedding(n_users, cfg.feature_factors)
        self.item_bias = torch.nn.Embedding(n_items, 1)
        self.projection = torch.nn.Linear(features.shape[1], cfg.feature_factors, bias=False)
        self.feature_bias = torch.nn.Linear(features.shape[1], 1, bias=False)
        for emb in (self.gamma_user, self.gamma_item, self.theta_user):
            torch.nn.init.normal_(emb.weight, std=cfg.init_std)
        torch.nn.init.zeros_(self.item_bias.weight)
        torch.nn.init.normal_(self.projection.weight, std=cfg.init_std / features.shape[1] ** 0.5)
        torch.nn.init.zeros_(self.feature_bias.weight)
        self.register_buffer("features", features)

    def item_side(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``[gamma_i, E f_i]`` and ``beta_i + <beta', f_i>`` of ``items`` (all if ``None``)."""
        f = self.features if items is None else self.features[items]
        gamma = self.gamma_item.weight if items is None else self.gamma_item(items)
        bias = self.item_bias.weight if items is None else self.item_bias(items)
        vec = torch.cat([gamma, self.projection(f)], dim=1)
        return vec, (bias + self.feature_bias(f)).squeeze(1)

    def user_side(self, users: torch.Tensor) -> torch.Tensor:
        """``[gamma_u, theta_u]``: dotted with ``item_side`` it gives the personal terms."""
        return torch.cat([self.gamma_user(users), self.theta_user(users)], dim=1)

    def forward(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x_ui``, ``x_uj`` and the squared L2 norm of the batch's per-row parameters."""
        u = self.user_side(users)
        vi, bi = self.item_side(pos)
        vj, bj = self.item_side(neg)
        sq_norm = (
            u.square().sum()
            + self.gamma_item(pos).square().sum()
            + self.gamma_item(neg).square().sum()
            + self.item_bias(pos).square().sum()
            + self.item_bias(neg).square().sum()
        )
        return (u * vi).sum(-1) + bi, (u * vj).sum(-1) + bj, sq_norm


class VBPR(TorchRecommender):
    """Matrix factorisation plus a learned projection of item content features (BPR)."""

    name = "vbpr"
    Config: ClassVar[type[ModelConfig]] = VBPRConfig
    config: VBPRConfig
    user_tables = ("gamma_user.weight", "theta_user.weight")

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._features: torch.Tensor | None = None
        self._widths: dict[str, int] = {}

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        self.bind_data(train)
        super()._fit(train, valid)

    def bind_data(self, train: Dataset) -> None:
        """Read the configured modalities from ``train`` (used by fit and by unlearning)."""
        feats = item_features(train, self.config.modalities)
        self._features = torch.cat([feats[m] for m in self.config.modalities], dim=1)
        self._widths = {m: int(feats[m].shape[1]) for m in self.config.modalities}

    def _dims(self, train: Dataset) -> dict[str, int]:
        assert self._features is not None
        widths = {f"dim_{m}": w for m, w in self._widths.items()}
        return {**super()._dims(train), "feature_dim": int(self._features.shape[1]), **widths}

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        feats = self._features
        if feats is None:  # load(): the buffer is restored from the saved state
            feats = torch.zeros(dims["n_items"], dims["feature_dim"])
        if feats.shape != (dims["n_items"], dims["feature_dim"]):
            raise PolyrecError(
                f"vbpr: item features have shape {tuple(feats.shape)}, the model expects "
                f"({dims['n_items']}, {dims['feature_dim']})"
            )
        return _VBPRNet(dims["n_users"], dims["n_items"], feats, self.config)

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        return triple_batches(bpr_triples(train.binary_csr, rng), self.config.batch_size)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x_ui, x_uj, sq_norm = self.train_module(batch["users"], batch["pos"], batch["neg"])
        net = cast(_VBPRNet, self.module)
        shared = net.projection.weight.square().sum() + net.feature_bias.weight.square().sum()
        return (
            F.softplus(x_uj - x_ui).mean()
            + self.config.reg * 0.5 * sq_norm / len(x_ui)
            + self.config.reg_feat * 0.5 * shared
        )

    def _score(self, users: np.ndarray) -> torch.Tensor:
        net = cast(_VBPRNet, self.module)
        u = net.user_side(torch.from_numpy(users).to(self.device))
        items, bias = net.item_side()
        return (inner_products(u, items) + bias).cpu()

    def _item_embeddings(self) -> torch.Tensor:
        return cast(_VBPRNet, self.module).item_side()[0].detach().cpu()

    def refresh(self, train: Dataset) -> None:
        """Re-read the item features from ``train`` (e.g. after unlearning wiped rows), keeping
        the learned parameters."""
        self.bind_data(train)
        state = self.module.state_dict()
        state["features"] = self._features
        self.module = self._build(self.dims).to(self.device)
        self.module.load_state_dict(state)
        self.train_module = self.module

    def drop_modality(self, modality: str) -> None:
        """Stop using ``modality``: remove its feature columns and the weights that read them."""
        mods = self.config.modalities
        if modality not in mods:
            raise PolyrecError(f"vbpr does not use modality {modality!r} (uses {mods})")
        if len(mods) == 1:
            raise PolyrecError("vbpr needs at least one modality; retrain a BPR-MF model instead")
        net = cast(_VBPRNet, self.module)
        # column ranges of each modality inside the concatenated features
        widths = [self.dims[f"dim_{m}"] for m in mods]
        offsets = np.cumsum([0, *widths])
        keep = np.concatenate(
            [np.arange(offsets[k], offsets[k + 1]) for k, m in enumerate(mods) if m != modality]
        )
        keep_t = torch.from_numpy(keep)
        state = net.state_dict()
        for key in ("projection.weight", "feature_bias.weight"):
            state[key] = state[key][:, keep_t]
        state["features"] = state["features"][:, keep_t]
        self.config = self.config.model_copy(
            update={"modalities": [m for m in mods if m != modality]}
        )
        self.dims["feature_dim"] = len(keep)
        del self.dims[f"dim_{modality}"]
        self._features = state["features"]
        self.module = self._build(self.dims)
        self.module.load_state_dict(state)
        self.train_module = self.module

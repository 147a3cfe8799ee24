"""Semantic IDs: short tuples of codewords that name items by their content.

TIGER (Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023, Section 3.1)
quantises each item's text embedding with a residual-quantised VAE (RQ-VAE, after Zeghidour et
al., SoundStream 2021 / Lee et al., RQ-VAE 2022):

- an MLP encoder maps the (standardised) embedding ``x`` to a latent ``z`` (768 -> 512 -> 256 ->
  128 -> 32 in the paper);
- level ``d`` picks the nearest codeword ``c_d = argmin_k ||r_d - e^d_k||`` of its codebook for
  the residual ``r_d`` (``r_0 = z``, ``r_{d+1} = r_d - e^d_{c_d}``); the quantised latent is
  ``z_hat = sum_d e^d_{c_d}`` and gradients pass to the encoder by the straight-through
  estimator;
- the loss is ``||x - dec(z_hat)||^2 + sum_d ||sg(r_d) - e_{c_d}||^2``
  ``+ beta ||r_d - sg(e_{c_d})||^2`` (reconstruction, codebook and commitment terms;
  ``beta = 0.25``);
- codebooks are initialised by k-means on the first residuals (the paper's fix for codebook
  collapse) and, here, codewords unused during an epoch are reset to random residuals of that
  epoch (dead-code reset, as in Jukebox / SoundStream).

:class:`RQKMeans` is the training-free option: residual k-means directly on the embeddings (as
in GRID, Ju et al. 2025 and OneRec).

Items whose codes collide get one more level, a collision index ``0, 1, 2, ...`` assigned in
ascending internal item order within each group of equal codes (deterministic), so every item's
ID is unique (TIGER Section 3.1, "appending an extra token"). :class:`SemanticIdMap` is the
two-way map ID <-> item and the prefix trie of valid IDs that constrained beam search uses.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.config import StrictModel
from polyrec.errors import PolyrecError


# ---------------------------------------------------------------------- k-means
def kmeans(
    x: torch.Tensor, k: int, *, iters: int = 20, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding: ``(centroids (k, d), assignment (n,))``.

    With fewer distinct points than ``k`` the surplus centroids duplicate data points (they
    simply stay unused)."""
    n = x.shape[0]
    if n == 0:
        raise PolyrecError("k-means needs at least one point")
    idx = torch.randint(n, (1,), generator=generator)
    centroids = [x[idx]]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            nxt = torch.randint(n, (1,), generator=generator)
        else:
            nxt = torch.multinomial(d2 / total, 1, generator=generator)
        centroids.append(x[nxt])
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
    c = torch.cat(centroids)
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled, None]
    return c, torch.cdist(x, c).argmin(1)


# ---------------------------------------------------------------------- RQ-VAE
class RQVAEConfig(StrictModel):
    """RQ-VAE options (TIGER's defaults except the training length, which is CPU-sized)."""

    levels: int = Field(3, ge=1)
    codebook_size: int = Field(256, ge=2)
    latent_dim: int = Field(32, ge=1)
    hidden: tuple[int, ...] = (512, 256, 128)
    beta: float = Field(0.25, ge=0)
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    dead_code_reset: bool = True
    kmeans_iters: int = Field(20, ge=1)
    standardize: bool = True
    seed: int = 0


def _mlp(sizes: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class RQVAE(torch.nn.Module):
    """Encoder, residual codebooks and decoder (see module docstring)."""

    def __init__(self, input_dim: int, cfg: RQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _mlp([input_dim, *cfg.hidden, cfg.latent_dim])
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden), input_dim])
        self.codebooks = torch.nn.Parameter(
            torch.randn(cfg.levels, cfg.codebook_size, cfg.latent_dim) * 0.1
        )

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(codes (n, levels), z_hat (n, latent), residuals (levels, n, latent))``."""
        residual = z
        codes, residuals = [], []
        z_hat = torch.zeros_like(z)
        for level in range(self.cfg.levels):
            book = self.codebooks[level]
            c = torch.cdist(residual.detach(), book.detach()).argmin(1)
            e = book[c]
            codes.append(c)
            residuals.append(residual)
            z_hat = z_hat + e
            residual = residual - e
        return torch.stack(codes, 1), z_hat, torch.stack(residuals)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts (``recon``, ``codebook``, ``commit``) plus ``codes``."""
        z = self.encoder(x)
        codes, z_hat, residuals = self.quantize(z)
        chosen = self.codebooks[torch.arange(self.cfg.levels)[:, None], codes.T]  # (L, n, d)
        codebook = ((residuals.detach() - chosen) ** 2).sum(-1).mean(1).sum()
        commit = ((residuals - chosen.detach()) ** 2).sum(-1).mean(1).sum()
        z_q = z + (z_hat - z).detach()  # straight-through estimator
        recon = F.mse_loss(self.decoder(z_q), x, reduction="none").sum(-1).mean()
        loss = recon + codebook + self.cfg.beta * commit
        return loss, {"recon": recon, "codebook": codebook, "commit": commit, "codes": codes}


class _Standardizer:
    """Per-dimension z-scoring fitted on the training embeddings."""

    def __init__(self, x: np.ndarray, enabled: bool) -> None:
        self.mean = x.mean(0) if enabled else np.zeros(x.shape[1], np.float32)
        std = x.std(0) if enabled else np.ones(x.shape[1], np.float32)
        self.std = np.where(std > 1e-8, std, 1.0).astype(np.float32)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - self.mean) / self.std).astype(np.float32))


@dataclass
class QuantizerResult:
    """Codes from a quantiser, before the collision level: ``codes (n_items, levels)`` and the
    per-epoch training log (empty for RQ-KMeans)."""

    codes: np.ndarray
    codebook_size: int
    history: list[dict[str, float]]


def train_rqvae(embeddings: np.ndarray, cfg: RQVAEConfig | None = None) -> QuantizerResult:
    """Fit an RQ-VAE on item ``embeddings`` (n_items, d) and return every item's codes."""
    cfg = cfg or RQVAEConfig()
    x_np = np.asarray(embeddings, dtype=np.float32)
    if x_np.ndim != 2 or len(x_np) == 0:
        raise PolyrecError(
            f"embeddings must be a non-empty (n_items, dim) matrix, got {x_np.shape}"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x = _Standardizer(x_np, cfg.standardize)(x_np)
    model = RQVAE(x.shape[1], cfg)
    _kmeans_init(model, x, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    n = len(x)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen)
        sums = {"loss": 0.0, "recon": 0.0, "codebook": 0.0, "commit": 0.0}
        used = torch.zeros(cfg.levels, cfg.codebook_size, dtype=torch.bool)
        n_batches = 0
        for start in range(0, n, cfg.batch_size):
            batch = x[order[start : start + cfg.batch_size]]
            loss, parts = model(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["loss"] += float(loss.detach())
            for key in ("recon", "codebook", "commit"):
                sums[key] += float(parts[key].detach())
            used[torch.arange(cfg.levels)[:, None], parts["codes"].T] = True
            n_batches += 1
        entry = {key: val / n_batches for key, val in sums.items()}
        entry["epoch"] = epoch
        entry["usage"] = float(used.float().mean())
        if cfg.dead_code_reset and epoch < cfg.epochs:
            entry["reset"] = float(_reset_dead_codes(model, x, used, gen))
        history.append(entry)
    model.eval()
    with torch.no_grad():
        codes = model.quantize(model.encoder(x))[0].numpy()
    return QuantizerResult(
        codes=codes.astype(np.int64), codebook_size=cfg.codebook_size, history=history
    )


def _kmeans_init(model: RQVAE, x: torch.Tensor, gen: torch.Generator) -> None:
    """Initialise each codebook by k-means on that level's residuals of the initial encoder."""
    cfg = model.cfg
    with torch.no_grad():
        residual = model.encoder(x)
        for level in range(cfg.levels):
            centroids, assign = kmeans(
                residual, cfg.codebook_size, iters=cfg.kmeans_iters, generator=gen
            )
            model.codebooks[level].copy_(centroids)
            residual = residual - centroids[assign]


def _reset_dead_codes(
    model: RQVAE, x: torch.Tensor, used: torch.Tensor, gen: torch.Generator
) -> int:
    """Move codewords no item chose this epoch onto random current residuals of their level;
    returns how many were reset."""
    dead = ~used
    if not dead.any():
        return 0
    with torch.no_grad():
        _, _, residuals = model.quantize(model.encoder(x))
        for level in torch.nonzero(dead.any(1)).ravel().tolist():
            slots = torch.nonzero(dead[level]).ravel()
            pick = torch.randint(len(x), (len(slots),), generator=gen)
            model.codebooks[level, slots] = residuals[level, pick]
    return int(dead.sum())


# ---------------------------------------------------------------------- RQ-KMeans
class RQKMeansConfig(StrictModel):
    """Residual k-means options."""

    levels: int = Field(3, ge=1)
    codebook_size: int = Field(256, ge=2)
    kmeans_iters: int = Field(30, ge=1)
    standardize: bool = True
    seed: int = 0


def rq_kmeans(embeddings: np.ndarray, cfg: RQKMeansConfig | None = None) -> QuantizerResult:
    """Training-free residual quantisation: k-means on the embeddings, then on the residuals."""
    cfg = cfg or RQKMeansConfig()
    x_np = np.asarray(embeddings, dtype=np.float32)
    if x_np.ndim != 2 or len(x_np) == 0:
        raise PolyrecError(
            f"embeddings must be a non-empty (n_items, dim) matrix, got {x_np.shape}"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    residual = _Standardizer(x_np, cfg.standardize)(x_np)
    codes = []
    for _ in range(cfg.levels):
        centroids, assign = kmeans(
            residual, cfg.codebook_size, iters=cfg.kmeans_iters, generator=gen
        )
        codes.append(assign)
        residual = residual - centroids[assign]
    return QuantizerResult(
        codes=torch.stack(codes, 1).numpy().astype(np.int64),
        codebook_size=cfg.codebook_size,
        history=[],
    )


# ---------------------------------------------------------------------- collision level
def add_collision_level(codes: np.ndarray) -> np.ndarray:
    """``codes`` (n, L) plus a last column that numbers the items sharing the same L codes
    ``0, 1, ...`` in ascending item index: every row of the result is unique."""
    codes = np.asarray(codes, dtype=np.int64)
    if len(codes) == 0:
        return np.zeros((0, codes.shape[1] + 1), np.int64)
    _, group = np.unique(codes, axis=0, return_inverse=True)
    group = group.ravel()
    order = np.lexsort((np.arange(len(codes)), group))  # by group, then item index
    g_sorted = group[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    rank_sorted = np.arange(len(codes)) - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    extra = np.empty(len(codes), np.int64)
    extra[order] = rank_sorted
    return np.concatenate([codes, extra[:, None]], axis=1)


def codebook_report(codes: np.ndarray, codebook_size: int) -> dict[str, Any]:
    """Usage and collision statistics of ``codes`` (n, L) before the collision level.

    ``usage``: per level, the fraction of the ``codebook_size`` codewords some item uses;
    ``collision_rate``: fraction of items whose L codes equal another item's;
    ``unique_fraction``: distinct code tuples / items; ``max_collisions``: the largest group
    (= the collision level's vocabulary); ``prefix_sizes``: distinct prefixes per depth.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n, levels = codes.shape
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    in_group = counts[inverse.ravel()]
    return {
        "n_items": int(n),
        "levels": int(levels),
        "codebook_size": int(codebook_size),
        "usage": [len(np.unique(codes[:, d])) / codebook_size for d in range(levels)],
        "prefix_sizes": [len(np.unique(codes[:, : d + 1], axis=0)) for d in range(levels)],
        "collision_rate": float((in_group > 1).mean()) if n else 0.0,
        "unique_fraction": float(len(counts) / n) if n else 1.0,
        "max_collisions": int(counts.max()) if n else 0,
    }


# ---------------------------------------------------------------------- ID <-> item map + trie
class SemanticIdMap:
    """Two-way map between items (internal indices) and their unique semantic IDs, and the
    prefix trie of valid IDs.

    ``codes`` is ``(n_items, depth)`` with every row unique; ``vocab[d]`` is the number of
    codes at depth ``d``. A prefix of length ``d`` is packed into one integer (mixed radix over
    ``vocab``); the trie is, per depth, the sorted array of the packed prefixes that some item
    has, so "may token ``t`` follow prefix ``p``?" is one binary search, vectorised over any
    batch of beams.
    """

    def __init__(self, codes: np.ndarray, vocab: list[int] | None = None) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or len(codes) == 0:
            raise PolyrecError(f"codes must be a non-empty (n_items, depth) matrix: {codes.shape}")
        if codes.min() < 0:
            raise PolyrecError("semantic codes must be >= 0")
        self.codes = codes
        self.vocab = [int(v) for v in (vocab or (codes.max(0) + 1).tolist())]
        if len(self.vocab) != codes.shape[1] or (codes.max(0) >= np.array(self.vocab)).any():
            raise PolyrecError("vocab must give, per depth, a size above every code")
        if math.prod(self.vocab) >= 2**62:
            raise PolyrecError(f"semantic-ID space {self.vocab} too large to pack in int64")
        keys = self.pack(codes)
        order = np.argsort(keys, kind="stable")
        if (np.diff(keys[order]) == 0).any():
            raise PolyrecError("semantic IDs are not unique: add the collision level first")
        self._sorted_keys = keys[order]
        self._sorted_items = order
        self.trie = [
            torch.from_numpy(np.unique(self.pack(codes[:, : d + 1]))) for d in range(self.depth)
        ]

    @property
    def depth(self) -> int:
        """Tokens per ID."""
        return self.codes.shape[1]

    @property
    def n_items(self) -> int:
        return self.codes.shape[0]

    def pack(self, codes: np.ndarray) -> np.ndarray:
        """Packed integer of each row of ``codes`` (n, d) for the first ``d`` depths."""
        codes = np.asarray(codes, dtype=np.int64)
        key = np.zeros(codes.shape[0], np.int64)
        for d in range(codes.shape[1]):
            key = key * self.vocab[d] + codes[:, d]
        return key

    def ids_of(self, items: np.ndarray) -> np.ndarray:
        """Semantic IDs ``(n, depth)`` of internal items."""
        return self.codes[np.asarray(items, dtype=np.int64)]

    def items_of(self, codes: np.ndarray) -> np.ndarray:
        """Internal item of each ID row ``(n, depth)``; ``-1`` where no item has that ID."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1, self.depth)
        in_range = ((codes >= 0) & (codes < np.array(self.vocab))).all(1)
        keys = self.pack(np.where(in_range[:, None], codes, 0))
        pos = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self._sorted_keys) - 1)
        found = (self._sorted_keys[pos] == keys) & in_range
        return np.where(found, self._sorted_items[pos], -1)

    def allowed(self, prefix_keys: torch.Tensor, depth: int) -> torch.Tensor:
        """``(n, vocab[depth])`` bool: which next tokens keep each packed prefix (of length
        ``depth``) a prefix of some valid ID."""
        cand = prefix_keys[:, None] * self.vocab[depth] + torch.arange(self.vocab[depth])
        nodes = self.trie[depth]
        pos = torch.searchsorted(nodes, cand).clamp_max(len(nodes) - 1)
        return nodes[pos] == cand

    def state(self) -> dict[str, Any]:
        """Arrays to save with a model."""
        return {"codes": self.codes, "vocab": np.asarray(self.vocab, np.int64)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SemanticIdMap:
        """Inverse of :meth:`state` (numpy arrays or tensors)."""
        codes = np.asarray(state["codes"])
        vocab = np.asarray(state["vocab"]).tolist()
        return cls(codes, [int(v) for v in vocab])


# ---------------------------------------------------------------------- one entry point
class SemanticIdConfig(StrictModel):
    """How items get semantic IDs: the quantiser and its options."""

    method: str = Field("rqvae", pattern="^(rqvae|rqkmeans)$")
    rqvae: RQVAEConfig = RQVAEConfig()
    rqkmeans: RQKMeansConfig = RQKMeansConfig()


def build_semantic_ids(
    embeddings: np.ndarray, cfg: SemanticIdConfig | None = None
) -> tuple[SemanticIdMap, dict[str, Any]]:
    """Quantise ``embeddings`` and add the collision level: the :class:`SemanticIdMap` and a
    report (:func:`codebook_report` plus the quantiser's training log)."""
    cfg = cfg or SemanticIdConfig()
    if cfg.method == "rqvae":
        result = train_rqvae(embeddings, cfg.rqvae)
    else:
        result = rq_kmeans(embeddings, cfg.rqkmeans)
    full = add_collision_level(result.codes)
    vocab = [result.codebook_size] * result.codes.shape[1] + [int(full[:, -1].max()) + 1]
    report = codebook_report(result.codes, result.codebook_size)
    report["method"] = cfg.method
    report["history"] = result.history
    return SemanticIdMap(full, vocab), report

"""TIGER: generative retrieval of the next item's semantic ID.

Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023 (Section 3).

- Items get semantic IDs (:mod:`.semantic_ids`: RQ-VAE over item text embeddings, 3 levels x
  256 codes + a collision level, so 4 tokens per item).
- Input: a hashed user token (``n_user_tokens`` buckets, 2000 in the paper) followed by the
  semantic-ID tokens of the user's last ``max_len`` items (20 in the paper), left-padded.
- A Transformer encoder-decoder (the paper uses T5: 4+4 layers, d_model 128, 6 heads, MLP 1024,
  dropout 0.1) generates the next item's ID token by token; one example per position of each
  training sequence (every prefix predicts its next item), cross-entropy on the ID tokens.
  Differences from T5: learned absolute positions instead of relative attention biases,
  pre-norm ``torch.nn.Transformer`` layers.
- Retrieval: beam search over IDs. With ``constrained`` (default) each step only keeps tokens
  that extend a prefix of some real item's ID (a prefix trie, :class:`SemanticIdMap`), and the
  next-token distribution is renormalised over those tokens, so every generated ID is an item;
  without it invalid IDs are generated and dropped (the paper's filtering) and
  :attr:`TIGER.invalid_id_rate` counts them.

Scores. ``score``/``recommend`` and the shared evaluator need a ``(B, n_items)`` score matrix:
the ``beams`` generated items get their ID's log-probability (higher first) and every other item
``-inf`` (the evaluator treats ``-inf`` slots as no recommendation), so metrics at K above
``beams`` only count the beams. :meth:`TIGER.log_likelihood` scores arbitrary items exactly
(teacher forcing), which equals beam search when ``beams`` covers the catalogue.

Evaluation follows the sequential protocol (no masking of history items, see
:mod:`polyrec.models.sequential`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sequences import PAD, pad_histories
from polyrec.errors import PolyrecError
from polyrec.features.text import DEFAULT_FIELDS, DEFAULT_MODEL
from polyrec.models.base import ModelConfig
from polyrec.models.generative.decoding import (
    finish_beams,
    item_feature_matrix,
    scores_from_beams,
    trie_log_probs,
)
from polyrec.models.generative.semantic_ids import (
    SemanticIdConfig,
    SemanticIdMap,
    build_semantic_ids,
)
from polyrec.models.sequential import (
    SelfAttention,
    SequentialConfig,
    SequentialRecommender,
    init_weights,
)


class TIGERConfig(SequentialConfig):
    """TIGER options. Defaults are a small model that trains on 2 CPU cores; the paper's size is
    ``dim=128, heads=8 (6 x 64 in T5), encoder_layers=4, decoder_layers=4, ffn_dim=1024``."""

    max_len: int = Field(20, ge=1)
    dim: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    encoder_layers: int = Field(2, ge=1)
    decoder_layers: int = Field(2, ge=1)
    ffn_dim: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    n_user_tokens: int = Field(2000, ge=0)
    beams: int = Field(20, ge=1)
    constrained: bool = True
    item_features: str = Field("text", pattern=r"^(text|vector:.+)$")
    text_model: str = DEFAULT_MODEL
    text_fields: tuple[str, ...] = DEFAULT_FIELDS
    semantic_ids: SemanticIdConfig = SemanticIdConfig()
    batch_size: int = Field(256, ge=1)
    epochs: int = Field(50, ge=1)
    eval_every: int = Field(2, ge=1)
    score_batch_size: int = 256


class _CrossAttention(torch.nn.Module):
    """Multi-head attention of decoder states to the encoder memory; the memory's keys and
    values are projected once per history, however many beams query them."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = torch.nn.Linear(dim, dim)
        self.kv = torch.nn.Linear(dim, 2 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, Q, dim)``, ``memory (B, S, dim)``, ``mask (B, 1, 1, S)`` True = may attend."""
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(memory).view(b, -1, 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


def _ffn(dim: int, hidden: int, dropout: float) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(dim, hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, dim),
    )


class _EncoderBlock(torch.nn.Module):
    """Pre-norm self-attention + feed-forward block."""

    def __init__(self, cfg: TIGERConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(cfg.dim), torch.nn.LayerNorm(cfg.dim)
        self.attention = SelfAttention(cfg.dim, cfg.heads, 0.0)
        self.ffn = _ffn(cfg.dim, cfg.ffn_dim, cfg.dropout)
        self.dropout = torch.nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


class _DecoderBlock(_EncoderBlock):
    """Pre-norm causal self-attention, cross-attention and feed-forward block."""

    def __init__(self, cfg: TIGERConfig) -> None:
        super().__init__(cfg)
        self.norm_x = torch.nn.LayerNorm(cfg.dim)
        self.cross = _CrossAttention(cfg.dim, cfg.heads)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, mask: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), mask))
        x = x + self.dropout(self.cross(self.norm_x(x), memory, memory_mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


class _Seq2Seq(torch.nn.Module):
    """Encoder over [context prefix] + user token + history ID tokens; decoder over ID tokens.

    Encoder vocabulary: ``PAD=0``, user buckets ``1..n_user_tokens``, then each depth's codes.
    Decoder vocabulary: ``BOS=0``, then each depth's codes; step ``d`` predicts among depth
    ``d``'s codes only (a slice of one output layer). The decoder takes several beams per
    history at once, as ``(B, beams * t)`` tokens with a block-diagonal causal mask, so beams
    share the history's encoder memory instead of copying it.
    """

    def __init__(self, dims: dict[str, int], cfg: TIGERConfig) -> None:
        super().__init__()
        self.vocab = [dims[f"vocab_{d}"] for d in range(dims["depth"])]
        self.n_user_tokens = dims["n_user_tokens"]
        offsets = np.cumsum([0, *self.vocab])
        self.dec_offsets = [int(o) + 1 for o in offsets[:-1]]
        total = int(offsets[-1])
        self.enc_len = dims["enc_len"]
        self.enc_token = torch.nn.Embedding(1 + self.n_user_tokens + total, cfg.dim, padding_idx=0)
        self.enc_pos = torch.nn.Embedding(self.enc_len, cfg.dim)
        self.dec_token = torch.nn.Embedding(1 + total, cfg.dim)
        self.dec_pos = torch.nn.Embedding(len(self.vocab), cfg.dim)
        self.pref_dim = dims.get("pref_dim", 0)
        self.pref_proj = torch.nn.Linear(self.pref_dim, cfg.dim) if self.pref_dim else None
        self.encoder = torch.nn.ModuleList(_EncoderBlock(cfg) for _ in range(cfg.encoder_layers))
        self.decoder = torch.nn.ModuleList(_DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
        self.enc_norm, self.dec_norm = torch.nn.LayerNorm(cfg.dim), torch.nn.LayerNorm(cfg.dim)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.out = torch.nn.Linear(cfg.dim, 1 + total)
        init_weights(self)

    def encode(
        self,
        tokens: torch.Tensor,
        prefix: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory ``(B, S, dim)`` and its key mask ``(B, 1, 1, S)`` (True = real) for
        left-padded encoder tokens ``(B, T)`` and an optional context ``prefix`` put before
        them (:meth:`embed_prefix`; ``prefix_mask`` True where a prefix slot is empty)."""
        width = tokens.shape[1]
        pos = torch.arange(self.enc_len - width, self.enc_len, device=tokens.device)
        x = self.enc_token(tokens) + self.enc_pos(pos)
        pad = tokens == PAD
        if prefix is not None:
            x = torch.cat([self.embed_prefix(prefix), x], dim=1)
            if prefix_mask is None:
                prefix_mask = torch.zeros(prefix.shape[:2], dtype=torch.bool, device=x.device)
            pad = torch.cat([prefix_mask, pad], dim=1)
        keys = (~pad)[:, None, None, :]
        eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        mask = keys | eye  # a padding query attends to itself only: defined, never used
        x = self.dropout(x)
        for block in self.encoder:
            x = block(x, mask)
        return self.enc_norm(x), keys

    def embed_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        """Encoder inputs ``(B, P, dim)`` of the context prefix: here projected preference
        vectors ``(B, P, pref_dim)`` (Mender-Emb); Mender-Tok overrides it for text tokens."""
        if self.pref_proj is None:
            raise PolyrecError("this model was built without a preference context")
        return self.pref_proj(prefix)

    def decode(
        self, dec_tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """Decoder states ``(B, beams, t, dim)`` of decoder tokens ``(B, beams, t)`` (BOS
        first), each beam causal and independent of the others."""
        b, nb, t = dec_tokens.shape
        device = dec_tokens.device
        x = self.dec_token(dec_tokens) + self.dec_pos(torch.arange(t, device=device))
        beam = torch.arange(nb * t, device=device) // t
        causal = torch.ones(t, t, dtype=torch.bool, device=device).tril().repeat(nb, nb)
        mask = causal & (beam[:, None] == beam[None, :])
        x = self.dropout(x.view(b, nb * t, -1))
        for block in self.decoder:
            x = block(x, mask, memory, memory_mask)
        return self.dec_norm(x).view(b, nb, t, -1)

    def step_logits(self, states: torch.Tensor, depth: int) -> torch.Tensor:
        """Logits over depth ``depth``'s codes from decoder states ``(..., dim)``."""
        lo = self.dec_offsets[depth]
        return F.linear(
            states,
            self.out.weight[lo : lo + self.vocab[depth]],
            self.out.bias[lo : lo + self.vocab[depth]],
        )

    def teacher_forced(
        self, memory: torch.Tensor, memory_mask: torch.Tensor, codes: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per depth, the logits ``(B, n, vocab[d])`` of target IDs ``codes (B, n, depth)``
        (``n`` candidate IDs per history)."""
        offs = torch.tensor(self.dec_offsets, device=codes.device)
        bos = torch.zeros(*codes.shape[:2], 1, dtype=torch.long, device=codes.device)
        dec_in = torch.cat([bos, (codes + offs)[..., :-1]], dim=2)
        states = self.decode(dec_in, memory, memory_mask)
        return [self.step_logits(states[:, :, d], d) for d in range(len(self.vocab))]

    def forward(
        self,
        tokens: torch.Tensor,
        codes: torch.Tensor,
        prefix: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        sign: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy of the target IDs ``codes (B, depth)`` over the ID tokens. With
        ``sign (B,)``, an example with sign -1 is a negative: its tokens take the unlikelihood
        loss ``-log(1 - p)`` instead (Welleck et al., ICLR 2020), which pushes the item down and
        is bounded, where the official Mender code subtracts the cross-entropy (unbounded)."""
        memory, mask = self.encode(tokens, prefix, prefix_mask)
        logits = self.teacher_forced(memory, mask, codes[:, None])
        logp = torch.stack(
            [
                F.log_softmax(lg[:, 0], dim=-1).gather(1, codes[:, d, None])[:, 0]
                for d, lg in enumerate(logits)
            ],
            dim=1,
        )
        if sign is None:
            return -logp.mean()
        unlikely = -torch.log1p(-logp.exp().clamp(max=1.0 - 1e-6))
        return torch.where(sign[:, None] > 0, -logp, unlikely).mean()


class TIGER(SequentialRecommender):
    """TIGER (see module docstring). After ``fit``: ``id_map`` (items <-> semantic IDs, saved
    with the model) and ``semantic_id_report`` (codebook usage, collision rate)."""

    name = "tiger"
    Config: ClassVar[type[ModelConfig]] = TIGERConfig
    config: TIGERConfig

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.id_map: SemanticIdMap | None = None
        self.semantic_id_report: dict[str, Any] = {}
        self._preset_ids: tuple[SemanticIdMap, dict[str, Any]] | None = None
        self._generated = 0
        self._invalid = 0

    # ------------------------------------------------------------------ public
    @property
    def invalid_id_rate(self) -> float:
        """Fraction of generated beams (since the last :meth:`reset_invalid_count`) whose ID is
        no item's; always 0 with ``constrained``."""
        return self._invalid / self._generated if self._generated else 0.0

    def reset_invalid_count(self) -> None:
        """Start counting generated and invalid IDs afresh."""
        self._generated = self._invalid = 0

    def generate(
        self,
        tokens: np.ndarray,
        users: np.ndarray | None = None,
        *,
        beams: int | None = None,
        constrained: bool | None = None,
        **context: torch.Tensor,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Beam search for left-padded history item tokens ``(B, L)`` (item + 1, ``PAD=0``):
        ``(items (B, beams), log_probs (B, beams))`` best first; item ``-1`` / ``-inf`` mark
        empty or invalid beams. ``users`` (internal) selects the user tokens."""
        self._check_fitted()
        k = beams or self.config.beams
        use_trie = self.config.constrained if constrained is None else constrained
        with torch.inference_mode():
            items, scores = self._beam_search(
                self._encoder_tokens(tokens, users), k, use_trie, **context
            )
        return items, scores

    def log_likelihood(
        self,
        tokens: np.ndarray,
        items: np.ndarray,
        users: np.ndarray | None = None,
        **context: torch.Tensor,
    ) -> torch.Tensor:
        """Exact log-probability ``(B, n)`` of the IDs of ``items (n,)`` after each history
        (teacher forcing; trie-renormalised when ``constrained``, as beam search scores)."""
        self._check_fitted()
        net, id_map = self._net(), cast(SemanticIdMap, self.id_map)
        codes = torch.from_numpy(id_map.ids_of(items))
        with torch.inference_mode():
            memory, mask = net.encode(
                self._encoder_tokens(tokens, users).to(self.device), **context
            )
            n, b = len(items), memory.shape[0]
            tgt = codes.to(self.device)[None].expand(b, -1, -1)
            logits = net.teacher_forced(memory, mask, tgt)
            tgt = tgt.reshape(b * n, -1)
            total = torch.zeros(b * n, device=self.device)
            keys = torch.zeros(b * n, dtype=torch.long)
            for d, lg in enumerate(logits):
                logp = trie_log_probs(
                    lg.reshape(b * n, -1),
                    cast(SemanticIdMap, self.id_map),
                    keys if self.config.constrained else None,
                    d,
                )
                total += logp.gather(1, tgt[:, d : d + 1]).squeeze(1)
                keys = keys * id_map.vocab[d] + tgt[:, d].cpu()
        return total.view(b, n).cpu()

    # ------------------------------------------------------------------ training
    def use_semantic_ids(self, id_map: SemanticIdMap, report: dict[str, Any] | None = None) -> None:
        """Train on precomputed semantic IDs (e.g. shared by several models) instead of
        building them in ``fit``; ``id_map`` must cover the training catalogue."""
        self._preset_ids = (id_map, dict(report or {}))

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        preset = self._preset_ids
        if preset is not None:
            if preset[0].n_items != train.n_items:
                raise PolyrecError(
                    f"semantic IDs cover {preset[0].n_items} items, the data has {train.n_items}"
                )
            self.id_map, self.semantic_id_report = preset
        else:
            cfg = self.config
            embeddings = item_feature_matrix(
                train, cfg.item_features, cfg.text_model, cfg.text_fields, cfg.progress
            )
            self.id_map, self.semantic_id_report = build_semantic_ids(
                embeddings, self.config.semantic_ids
            )
        super()._fit(train, valid)

    def _dims(self, train: Dataset) -> dict[str, int]:
        id_map = cast(SemanticIdMap, self.id_map)
        dims = {"n_users": train.n_users, "n_items": train.n_items, "time": 0}
        dims.update({f"vocab_{d}": v for d, v in enumerate(id_map.vocab)})
        dims.update(
            depth=id_map.depth,
            n_user_tokens=self.config.n_user_tokens,
            enc_len=1 + self.config.max_len * id_map.depth,
        )
        return dims

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        return _Seq2Seq(dims, self.config)

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        users, hist, targets = prefix_examples(train, self.config.max_len)
        rows, items = self._examples(targets)
        order = rng.permutation(len(rows))
        id_map = cast(SemanticIdMap, self.id_map)
        for start in range(0, len(order), self.config.batch_size):
            idx = order[start : start + self.config.batch_size]
            r = rows[idx]
            yield {
                "tokens": self._encoder_tokens(_trim(hist[r]), users[r]),
                "codes": torch.from_numpy(id_map.ids_of(items[idx])),
                **self._example_context(idx, rng),
            }

    def _examples(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per training example, the :func:`prefix_examples` row whose history it reads and the
        item it predicts, given the rows' ``targets``: TIGER trains on each row once; Mender adds
        sentiment and steering pairs."""
        return np.arange(len(targets)), targets

    def _example_context(
        self, idx: np.ndarray, rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        """Extra inputs of the training examples ``idx`` (indices into :meth:`_examples`);
        TIGER has none, Mender adds the preference context and each example's sign."""
        return {}

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.train_module(batch["tokens"], batch["codes"])

    # ------------------------------------------------------------------ scoring
    def _score(self, users: np.ndarray) -> torch.Tensor:
        tokens = self.histories[users]
        scores = scores_from_beams(*self.generate(tokens, users), self.n_items)
        cold = torch.from_numpy(tokens[:, -1] == PAD)
        if cold.any():
            scores[cold] = self.popularity
        return scores

    def _next_item_scores(self, items: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
        return scores_from_beams(*self.generate(items.cpu().numpy()), self.n_items)

    def score_histories(
        self,
        items: Sequence[np.ndarray | Sequence[int]],
        timestamps: Sequence[np.ndarray | Sequence[float]] | None = None,
    ) -> torch.Tensor:
        """Scores after ad-hoc histories (no user token): beam log-probs, ``-inf`` elsewhere."""
        self._check_fitted()
        tokens, _ = pad_histories(items, self.n_items, self.config.max_len)
        return scores_from_beams(*self.generate(tokens), self.n_items)

    def _encoder_tokens(self, tokens: np.ndarray, users: np.ndarray | None) -> torch.Tensor:
        """History item tokens ``(B, L)`` -> encoder tokens ``(B, 1 + L * depth)``: the user
        bucket (``PAD`` without users or buckets), then each item's ID tokens."""
        net_offsets = self._enc_offsets()
        id_map = cast(SemanticIdMap, self.id_map)
        codes = id_map.codes[np.maximum(tokens - 1, 0)] + net_offsets  # (B, L, depth)
        codes = np.where((tokens == PAD)[..., None], PAD, codes).reshape(len(tokens), -1)
        user_tok = np.zeros((len(tokens), 1), np.int64)
        if users is not None and self.config.n_user_tokens:
            user_tok[:, 0] = 1 + _hash_users(np.asarray(users), self.config.n_user_tokens)
        return torch.from_numpy(np.concatenate([user_tok, codes], axis=1))

    def _enc_offsets(self) -> np.ndarray:
        id_map = cast(SemanticIdMap, self.id_map)
        return 1 + self.config.n_user_tokens + np.cumsum([0, *id_map.vocab[:-1]])

    def _net(self) -> _Seq2Seq:
        return cast(_Seq2Seq, self.module)

    def _beam_search(
        self, enc_tokens: torch.Tensor, k: int, constrained: bool, **context: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Beam search vectorised over the batch (see :meth:`generate`)."""
        net, id_map = self._net(), cast(SemanticIdMap, self.id_map)
        device = self.device
        memory, mask = net.encode(enc_tokens.to(device), **context)
        b = memory.shape[0]
        scores = torch.zeros(b, 1, device=device)
        keys = torch.zeros(b, 1, dtype=torch.long)
        dec = torch.zeros(b, 1, 1, dtype=torch.long, device=device)  # (B, beams, t): BOS
        for d in range(id_map.depth):
            nb = dec.shape[1]
            states = net.decode(dec, memory, mask)[:, :, -1].reshape(b * nb, -1)
            logp = trie_log_probs(
                net.step_logits(states, d), id_map, keys.reshape(-1) if constrained else None, d
            )
            vocab = id_map.vocab[d]
            total = (scores[:, :, None] + logp.view(b, nb, vocab)).view(b, nb * vocab)
            top, idx = total.topk(min(k, nb * vocab), dim=1)
            beam, tok = idx // vocab, idx % vocab
            keys = keys.gather(1, beam.cpu()) * vocab + tok.cpu()
            prev = dec.gather(1, beam[:, :, None].expand(-1, -1, dec.shape[2]))
            dec = torch.cat([prev, (tok + net.dec_offsets[d])[:, :, None]], dim=2)
            scores = top
        codes = (dec[:, :, 1:] - torch.tensor(net.dec_offsets, device=device)).cpu().numpy()
        raw = scores.cpu().numpy()
        real = np.isfinite(raw)
        valid = id_map.items_of(codes.reshape(-1, id_map.depth)).reshape(real.shape) >= 0
        self._generated += int(real.sum())
        self._invalid += int((real & ~valid).sum())
        return finish_beams(codes.reshape(b, -1, id_map.depth), raw, id_map, k)

    # ------------------------------------------------------------------ state
    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        state["semantic_ids"] = cast(SemanticIdMap, self.id_map).state()
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        self.id_map = SemanticIdMap.from_state(
            {k: v.numpy() if torch.is_tensor(v) else v for k, v in state["semantic_ids"].items()}
        )
        super()._set_state(state)


def prefix_examples(ds: Dataset, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One example per interaction that has a predecessor: ``(users, histories, targets)`` with
    ``histories (n, max_len)`` the up to ``max_len`` previous items as left-padded tokens
    (item + 1) and ``targets`` the item (internal index)."""
    seqs = ds.sequences
    lengths = np.diff(seqs.indptr)
    users = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(users)) - np.repeat(seqs.indptr[:-1], lengths)
    keep = pos >= 1
    ends = np.flatnonzero(keep)  # flat index of each target
    starts = np.repeat(seqs.indptr[:-1], lengths)[keep]
    idx = ends[:, None] - max_len + np.arange(max_len)
    valid = idx >= starts[:, None]
    hist = np.where(valid, seqs.items[np.maximum(idx, 0)] + 1, PAD)
    return users[keep], hist.astype(np.int64), seqs.items[ends]


def _trim(tokens: np.ndarray) -> np.ndarray:
    """Drop leading columns that are padding in every row (left padding makes them a prefix)."""
    width = max(int((tokens != PAD).sum(1).max(initial=0)), 1)
    return tokens[:, -width:]


def _hash_users(users: np.ndarray, buckets: int) -> np.ndarray:
    """User index -> bucket in ``[0, buckets)`` by a fixed multiplicative hash (the paper hashes
    user ids into 2000 tokens)."""
    mixed = (users.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    return (mixed % np.uint64(buckets)).astype(np.int64)

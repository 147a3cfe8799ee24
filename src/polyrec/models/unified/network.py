"""The network of the unified model: a causal language model over the unified token space.

- Input embedding of each position: the token's embedding, plus, at ``[FEAT]`` slots, a learned
  linear projection of the item's feature vector (UniMP injects image features into the
  language model the same way, as soft visual tokens; here the vector is whatever item
  embedding the data has: image, text or latent).
- Backbone: either a small pre-norm decoder-only Transformer trained from scratch
  (:class:`ScratchBackbone`) or any Hugging Face causal-LM body loaded offline by name or path
  (:class:`HFBackbone`, e.g. GPT-2; the unified embeddings replace its word embeddings, its
  layers and position embeddings are kept).
- Output: logits over the whole unified vocabulary with the input embedding matrix (tied, as
  in GPT-2); training is next-token cross-entropy on the target tokens only, each target's
  softmax taken over its output group (``output_groups``: e.g. the semantic-ID codes of its
  depth, the rating tokens, the text tokens), the tokens decoding chooses among at that step.

Both backbones run on left-padded rows with a key-padding mask and explicit positions, and keep
a key/value cache so that generation re-encodes only new tokens; :meth:`Backbone.repeat_cache`
copies a prompt's cache for each beam.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
import torch.nn.functional as F

from polyrec.errors import PolyrecError
from polyrec.models.sequential import init_weights

Cache = Any  # a backbone's key/value cache (list of tensors, or a transformers Cache)


class Backbone(torch.nn.Module):
    """Causal sequence model over input embeddings (see module docstring)."""

    dim: int

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Cache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Cache | None]:
        """States ``(B, T, dim)`` of new inputs ``x (B, T, dim)`` at ``positions (B, T)``;
        ``key_mask (B, T_cache + T)`` is True at real (non-padding) tokens."""
        raise NotImplementedError

    def repeat_cache(self, cache: Cache, n: int) -> Cache:
        """The cache with each row repeated ``n`` times (row-major: beams of a row together)."""
        raise NotImplementedError


class _Block(torch.nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.ffn = torch.nn.Sequential(
            torch.nn.Linear(dim, ffn_dim), torch.nn.GELU(), torch.nn.Linear(ffn_dim, dim)
        )
        self.drop = torch.nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ffn(self.norm2(x))), (k, v)


class ScratchBackbone(Backbone):
    """Pre-norm decoder-only Transformer (GPT-2 layout) with learned absolute positions."""

    def __init__(
        self, dim: int, heads: int, layers: int, ffn_dim: int, dropout: float, max_positions: int
    ) -> None:
        super().__init__()
        if dim % heads:
            raise PolyrecError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.max_positions = dim, max_positions
        self.position = torch.nn.Embedding(max_positions, dim)
        self.blocks = torch.nn.ModuleList(
            _Block(dim, heads, ffn_dim, dropout) for _ in range(layers)
        )
        self.norm = torch.nn.LayerNorm(dim)
        self.drop = torch.nn.Dropout(dropout)
        # GPT-2's N(0, 0.02) everywhere: PyTorch's default N(0, 1) position embeddings would
        # drown the 0.02-scale token embeddings, and the model would read positions, not items
        init_weights(self)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Cache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Cache | None]:
        if int(positions.max()) >= self.max_positions:
            raise PolyrecError(
                f"sequence of {int(positions.max()) + 1} tokens exceeds max_positions "
                f"({self.max_positions}): shorten the history or raise max_positions"
            )
        t = x.shape[1]
        past_len = key_mask.shape[1] - t
        # query i (absolute past_len + i) sees real keys j <= past_len + i, and always itself
        # so that a padding query's row stays defined
        causal = torch.ones(t, past_len + t, dtype=torch.bool, device=x.device).tril(past_len)
        self_key = torch.zeros_like(causal)
        self_key[torch.arange(t), past_len + torch.arange(t)] = True
        mask = ((causal & key_mask[:, None, :]) | self_key)[:, None]
        h = self.drop(x + self.position(positions))
        new_cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, mask, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.norm(h), (new_cache if use_cache else None)

    def repeat_cache(self, cache: Cache, n: int) -> Cache:
        return [(k.repeat_interleave(n, 0), v.repeat_interleave(n, 0)) for k, v in cache]


class HFBackbone(Backbone):
    """The body of a Hugging Face causal LM (``AutoModel``), loaded offline from ``name`` (a
    local folder or a model in the local cache); its word embeddings are not used."""

    def __init__(self, name: str) -> None:
        super().__init__()
        try:
            from transformers import AutoModel
        except ImportError as exc:
            raise PolyrecError(
                "a Hugging Face backbone needs transformers: pip install it"
            ) from exc
        try:
            self.body = AutoModel.from_pretrained(name, local_files_only=True)
        except Exception as exc:  # any load failure means: not usable offline
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PolyrecError(f"backbone {name!r} is not available offline ({first})") from exc
        self.dim = int(self.body.config.hidden_size)
        # transformers renamed the cache argument (past_key_values -> cache) in 5.x
        params = inspect.signature(self.body.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Cache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Cache | None]:
        out = self.body(
            inputs_embeds=x,
            attention_mask=key_mask.long(),
            position_ids=positions,
            use_cache=use_cache,
            **{self.cache_arg: cache},
        )
        return out.last_hidden_state, (out.past_key_values if use_cache else None)

    def repeat_cache(self, cache: Cache, n: int) -> Cache:
        out = copy.deepcopy(cache)
        out.batch_repeat_interleave(n)
        return out


class UnifiedLM(torch.nn.Module):
    """Token + soft feature embeddings, a :class:`Backbone` and the tied output layer.

    ``features`` (buffer, ``(n_items, feat_dim)``) are the item vectors for ``[FEAT]`` slots.
    """

    def __init__(
        self,
        vocab_size: int,
        backbone: Backbone,
        features: torch.Tensor,
        output_groups: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        dim = backbone.dim
        self.token = torch.nn.Embedding(vocab_size, dim, padding_idx=0)
        torch.nn.init.normal_(self.token.weight, std=0.02)
        self.register_buffer("features", features.float())
        self.feature_proj = torch.nn.Linear(features.shape[1], dim)
        self.out_bias = torch.nn.Parameter(torch.zeros(vocab_size))
        if output_groups is None:
            output_groups = torch.zeros(vocab_size, dtype=torch.long)
        self.register_buffer("output_groups", output_groups.long(), persistent=False)

    def embed(self, ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Input embeddings ``(B, T, dim)``: tokens, plus projected item features where
        ``feats`` (item + 1) is positive."""
        x = self.token(ids)
        has = feats > 0
        if has.any():
            soft = self.feature_proj(self.features[feats[has] - 1])
            x = x.index_put((has,), x[has] + soft)
        return x

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Logits over the unified vocabulary."""
        return F.linear(states, self.token.weight, self.out_bias)

    def group_logits(self, states: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, V)`` of ``states (N, dim)``, ``-inf`` outside the output group of the
        token ``like (N,)`` (or of ``like ()`` for every row)."""
        other = self.output_groups != self.output_groups[like][..., None]
        return self.logits(states).masked_fill(other, -torch.inf)

    def run(
        self,
        ids: torch.Tensor,
        feats: torch.Tensor,
        key_mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Cache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Cache | None]:
        """Backbone states of tokens ``ids (B, T)`` (see :meth:`Backbone.forward`)."""
        return self.backbone(self.embed(ids, feats), key_mask, positions, cache, use_cache)

    def forward(
        self,
        ids: torch.Tensor,
        feats: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """Training loss of left-padded rows: cross-entropy of ``targets (B, T)`` (next token at
        target positions, -1 elsewhere) within each target's output group, each example's
        tokens averaged, then examples averaged with ``weights (B,)``."""
        key_mask = ids != 0
        positions = (key_mask.long().cumsum(1) - 1).clamp_min(0)
        states, _ = self.run(ids, feats, key_mask, positions)
        at = targets >= 0
        goal = targets[at]
        token_loss = F.cross_entropy(self.group_logits(states[at], goal), goal, reduction="none")
        rows = at.nonzero()[:, 0]
        per_row = torch.zeros(len(ids), device=ids.device).index_add_(0, rows, token_loss)
        per_row = per_row / at.sum(1).clamp_min(1)
        return (per_row * weights).sum() / weights.sum()

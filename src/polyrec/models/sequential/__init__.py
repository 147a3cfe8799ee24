"""Sequential recommenders: the next item from a user's time-ordered history.

SASRec, BERT4Rec, GRU4Rec and HSTU share :class:`SequentialRecommender`, which keeps the users'
histories and scores from them, and the sequence pipeline :mod:`polyrec.data.sequences`
(tokens = item + 1, ``PAD = 0``, left padding, positions counted from the end).

Histories. ``fit(train, valid)`` trains and validates on the ``train`` histories; when it
returns, each user's history is ``train`` followed by ``valid`` (time order), which is what the
leave-one-out test item follows. :meth:`SequentialRecommender.set_histories` replaces them
(e.g. ``set_histories(train)`` to score the validation items again, or all data before
serving), and :meth:`SequentialRecommender.score_histories` scores ad-hoc histories. A user
without any history gets the training popularity ranking.

Evaluation convention. The sequential protocol (SASRec, BERT4Rec and HSTU papers; leave-one-out,
full ranking) does **not** mask the items of the history: the next item may be one seen before.
Evaluate with ``evaluate(model, test, exclude=[])``. ``mask_history=True`` declares the other
convention (the evaluator's default ``exclude``, i.e. training items masked, plus
``{"train": ..., "valid": ...}`` for the test phase); :attr:`mask_history_in_eval` tells
callers which one the model was configured for.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sequences import PAD, histories, merge_interactions, pad_histories, trim
from polyrec.errors import PolyrecError
from polyrec.models.base import ModelConfig
from polyrec.models.torch_base import TorchConfig, TorchRecommender
from polyrec.ranking import inner_products


class SequentialConfig(TorchConfig):
    """Options of every sequential model (on top of the training options)."""

    max_len: int = Field(50, ge=2)
    dim: int = Field(64, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    mask_history: bool = False
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(200, ge=1)


class NextItemHeadConfig(SequentialConfig):
    """Options of the models that predict the next item at every position (SASRec, HSTU).

    ``loss``: ``ce`` is softmax cross-entropy over all items; ``sampled_softmax`` is the loss of
    the HSTU reference code (Zhai et al. 2024, after Zhai et al., "Revisiting Neural Retrieval on
    Accelerators", KDD 2023): states and item embeddings L2-normalised, logits = cosine /
    ``temperature``, the positive against ``negatives`` items drawn uniformly for each position
    (a draw equal to the positive is ignored). Models trained with it also score by cosine.
    """

    loss: Literal["ce", "sampled_softmax"] = "ce"
    negatives: int = Field(128, ge=1)
    temperature: float = Field(0.05, gt=0)


L2_EPS = 1e-6  # the reference code's l2_norm_eps


class SequentialRecommender(TorchRecommender):
    """A :class:`TorchRecommender` that scores from stored or given histories.

    Subclasses implement ``_build``, ``_batches``, ``_loss`` and :meth:`_next_item_scores`;
    ``uses_time`` models also receive the histories' timestamps.
    """

    Config: ClassVar[type[ModelConfig]] = SequentialConfig
    config: SequentialConfig
    uses_time: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.histories = np.zeros((0, self.config.max_len), np.int64)
        self.history_times: np.ndarray | None = None
        self.popularity = torch.zeros(0)

    @property
    def mask_history_in_eval(self) -> bool:
        """Whether evaluation should mask history items (``mask_history``; default no)."""
        return self.config.mask_history

    # ------------------------------------------------------------------ public
    def set_histories(self, *datasets: Dataset) -> None:
        """Make each user's history the time-ordered union of ``datasets`` (same id maps)."""
        self._check_fitted()
        merged = merge_interactions(*datasets)
        if merged.item_ids != self.item_ids or merged.user_ids != self.user_ids:
            raise PolyrecError("histories must come from datasets sharing the model's id maps")
        self.histories, self.history_times = histories(
            merged, self.config.max_len, times=self._with_time()
        )

    def score_histories(
        self,
        items: Sequence[np.ndarray | Sequence[int]],
        timestamps: Sequence[np.ndarray | Sequence[float]] | None = None,
    ) -> torch.Tensor:
        """Scores of all items after each history of internal item indices (oldest first):
        float32 ``(len(items), n_items)``. Models trained with timestamps need ``timestamps``."""
        self._check_fitted()
        if self._with_time() and timestamps is None:
            raise PolyrecError(f"{self.name} was trained with timestamps: pass timestamps")
        tokens, times = pad_histories(
            items, self.n_items, self.config.max_len, timestamps if self._with_time() else None
        )
        with torch.inference_mode():
            return self._score_tokens(tokens, times).float()

    # ------------------------------------------------------------------ Recommender parts
    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        self.popularity = torch.from_numpy(train.item_popularity.astype(np.float32))
        self.dims = self._dims(train)  # _with_time() reads it before the trainer sets it
        self.set_histories(train)
        super()._fit(train, valid)
        if valid is not None:
            self.set_histories(train, valid)

    def _dims(self, train: Dataset) -> dict[str, int]:
        with_time = self.uses_time and train.timestamps is not None
        return {"n_users": train.n_users, "n_items": train.n_items, "time": int(with_time)}

    def _score(self, users: np.ndarray) -> torch.Tensor:
        tokens = self.histories[users]
        times = None if self.history_times is None else self.history_times[users]
        scores = self._score_tokens(tokens, times)
        cold = torch.from_numpy(tokens[:, -1] == PAD)
        if cold.any():
            scores[cold] = self.popularity
        return scores

    def _score_tokens(self, tokens: np.ndarray, times: np.ndarray | None) -> torch.Tensor:
        width = trim(tokens)
        device = self.device
        items = torch.from_numpy(np.ascontiguousarray(tokens[:, -width:])).to(device)
        stamps = None if times is None else torch.from_numpy(times[:, -width:]).to(device)
        return self._next_item_scores(items, stamps).cpu()

    @abstractmethod
    def _next_item_scores(self, items: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
        """Scores ``(B, n_items)`` of the item following each left-padded token row."""

    def _with_time(self) -> bool:
        return bool(self.dims.get("time", 0))

    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        state.update(histories=self.histories, popularity=self.popularity)
        if self.history_times is not None:
            state["history_times"] = self.history_times
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        self.histories = state["histories"].numpy()
        self.popularity = state["popularity"]
        times = state.get("history_times")
        self.history_times = None if times is None else times.numpy()


# ---------------------------------------------------------------------- shared layers
def attention_mask(items: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """``(B, 1, L, L)`` bool, True where query ``t`` may use key ``s``: ``s`` is not padding and
    (``causal``) ``s <= t``. A padding query uses only itself, so that its row is defined and
    depends on nothing else; no real query ever uses padding."""
    width = items.shape[1]
    eye = torch.eye(width, dtype=torch.bool, device=items.device)
    allowed = (items != PAD)[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones_like(eye).tril()
    return allowed | eye


class SelfAttention(torch.nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017) with an output
    projection, through :func:`torch.nn.functional.scaled_dot_product_attention` (``dropout``
    on the attention weights; 0 keeps PyTorch's fused kernel)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise PolyrecError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, L, dim)``, ``mask`` from :func:`attention_mask`."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, n, d))


def item_vectors(items: torch.Tensor, *, cosine: bool) -> torch.Tensor:
    """The item rows that scores are inner products with: unit length for a cosine model."""
    return F.normalize(items, dim=-1, eps=L2_EPS) if cosine else items


def item_scores(states: torch.Tensor, items: torch.Tensor, *, cosine: bool) -> torch.Tensor:
    """Scores ``(..., n_items)`` of every item (rows of ``items``) for each state: dot products,
    or cosines when ``cosine``."""
    return inner_products(item_vectors(states, cosine=cosine), item_vectors(items, cosine=cosine))


def next_item_loss(
    states: torch.Tensor,
    targets: torch.Tensor,
    items: torch.Tensor,
    *,
    loss: str,
    temperature: float,
    negatives: torch.Tensor | None,
) -> torch.Tensor:
    """Mean ``ce`` or ``sampled_softmax`` loss (:class:`NextItemHeadConfig`) of states
    ``(N, dim)`` for target tokens ``(N,)``; ``items`` is the ``(n_items, dim)`` table."""
    if loss == "ce":
        return F.cross_entropy(inner_products(states, items), targets - 1)
    assert negatives is not None
    return sampled_softmax_loss(states, items, targets, negatives, temperature)


def sampled_softmax_loss(
    states: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Mean sampled-softmax loss of states ``(N, dim)`` for target tokens ``(N,)`` against
    negative tokens ``(N, m)``; ``items`` is the ``(n_items, dim)`` table (token ``i`` is row
    ``i - 1``). See :class:`NextItemHeadConfig`.

    While the catalogue has at most ``m x dim`` items the logits are picked out of the full
    ``(N, n_items)`` cosine matrix (one matrix product is cheaper than gathering ``N x m``
    embedding rows and scattering their gradients); larger catalogues gather the rows."""
    if len(items) <= negatives.shape[1] * states.shape[1]:
        # one gather: its backward writes a dense (N, n_items) gradient once, not twice
        picked = item_scores(states, items, cosine=True).gather(
            1, torch.cat([targets[:, None], negatives], dim=1) - 1
        )
        pos, neg = picked[:, :1], picked[:, 1:]
    else:
        user = item_vectors(states, cosine=True)
        pos = (user * item_vectors(items[targets - 1], cosine=True)).sum(-1, keepdim=True)
        sampled = item_vectors(items[negatives - 1], cosine=True)
        neg = torch.bmm(sampled, user[:, :, None])[..., 0]
    neg = neg.masked_fill(negatives == targets[:, None], -torch.inf)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def uniform_negatives(
    targets: np.ndarray, n_items: int, m: int, rng: np.random.Generator
) -> np.ndarray:
    """``m`` item tokens drawn uniformly for each non-padding target token: ``(N, m)``."""
    return rng.integers(1, n_items + 1, size=(int((targets != PAD).sum()), m))


def init_weights(module: torch.nn.Module, std: float = 0.02) -> None:
    """BERT-style initialisation: linear and embedding weights ~ N(0, std^2), biases 0."""
    for m in module.modules():
        if isinstance(m, torch.nn.Linear | torch.nn.Embedding):
            torch.nn.init.normal_(m.weight, std=std)
        if isinstance(m, torch.nn.Linear) and m.bias is not None:
            torch.nn.init.zeros_(m.bias)
        if isinstance(m, torch.nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()


def positions(width: int, max_len: int, device: torch.device) -> torch.Tensor:
    """Position indices of a left-padded window of ``width`` columns: counted from the end, so
    the last column is always position ``max_len - 1``."""
    return torch.arange(max_len - width, max_len, device=device)

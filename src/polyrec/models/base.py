"""The one model API: public ``fit`` / ``score`` / ``recommend`` / ``similar_items`` / ``save`` /
``load`` that validate input and map ids once; subclasses implement only the private parts.

A subclass sets ``name`` and ``Config`` and implements:

- ``_fit(train, valid)``: learn from a :class:`~polyrec.data.Dataset` (internal indices);
- ``_score(users)``: a float32 tensor ``(len(users), n_items)`` of scores for internal users;
  or, when every score is an inner product, ``_user_factors(users)`` and ``_item_factors()``
  (then ``recommend`` and the evaluator rank exactly without scoring every item);
- ``_get_state()`` / ``_set_state(state)``: the learned arrays (numpy or torch), enough to score
  without the training data;
- optionally ``_item_embeddings()`` (enables ``similar_items`` by cosine similarity; default
  the item factors) or ``_similar(items)`` for a model-specific item-item score.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from pydantic import Field

from polyrec.config import StrictModel, build
from polyrec.data.dataset import Dataset, IdMap
from polyrec.errors import PolyrecError
from polyrec.ranking import (
    FACTOR_BATCH_USERS,
    NormSortedItems,
    auto_batch_size,
    inner_products,
    mask_seen_,
    topk,
)

STATE_FILE = "state.pt"
META_FILE = "model.json"


class ModelConfig(StrictModel):
    """Options every model has."""

    seed: int = 42
    score_batch_size: int | None = Field(None, ge=1)  # None: ranking.auto_batch_size


class Recommender(ABC):
    """Base class of every retrieval model (see module docstring for the contract)."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        data = config.model_dump() if isinstance(config, ModelConfig) else dict(config or {})
        data.update(overrides)
        self.config = build(self.Config, data, where=f"{self.name} config")
        self.user_ids: IdMap | None = None
        self.item_ids: IdMap | None = None
        self.seen: sp.csr_matrix | None = None

    # ------------------------------------------------------------------ public API
    def fit(self, train: Dataset, valid: Dataset | None = None) -> Self:
        """Learn from ``train``; ``valid`` (same id maps) is used for early stopping if given."""
        if train.n_interactions == 0:
            raise PolyrecError("cannot fit on a dataset with no interactions")
        if valid is not None and (valid.item_ids != train.item_ids):
            raise PolyrecError("valid must share train's id maps (split one Dataset)")
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed % 2**32)
        self.user_ids, self.item_ids = train.user_ids, train.item_ids
        self.seen = train.binary_csr
        self._fit(train, valid)
        return self

    @property
    def mask_history_in_eval(self) -> bool:
        """Whether evaluation masks the items a user already interacted with (the CF protocol).

        Sequential models return their ``mask_history`` option: their protocol ranks all items.
        """
        return True

    def set_histories(self, *datasets: Dataset) -> None:  # noqa: B027 (optional hook)
        """Condition scoring on ``datasets`` as the users' histories (same id maps).

        A no-op for models whose scores do not depend on a stored history; sequential models
        use it to score the validation items from ``train`` and the test items from
        ``train`` + ``valid``.
        """

    @property
    def n_items(self) -> int:
        self._check_fitted()
        assert self.item_ids is not None
        return len(self.item_ids)

    def score(self, users: np.ndarray | Sequence[int]) -> torch.Tensor:
        """Scores of all items for internal user indices: float32 ``(len(users), n_items)``."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        return self._score(users).float()

    def score_batches(
        self, users: np.ndarray, batch_size: int | None = None
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(users_batch, scores)`` with memory bounded by ``batch_size`` x n_items."""
        bs = self.scoring_batch_size(batch_size)
        with torch.inference_mode():
            for start in range(0, len(users), bs):
                batch = users[start : start + bs]
                yield batch, self.score(batch)

    def top_items(
        self,
        users: np.ndarray,
        k: int,
        exclude: Sequence[sp.csr_matrix] = (),
        batch_size: int | None = None,
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Yield ``(users_batch, values, items)``: each internal user's ``k`` best items
        (internal indices, best first, equal scores by lower index; a slot left without an
        unmasked item has value ``-inf`` and an arbitrary item), the items stored for the user
        in any ``exclude`` matrix masked. Inner-product models rank through
        :class:`~polyrec.ranking.NormSortedItems`: the same top-k, most items unscored.
        ``batch_size``: users per batch (default :meth:`ranking_batch_size`).
        """
        self._check_fitted()
        bs = self.ranking_batch_size(batch_size)
        with torch.inference_mode():
            items = self._item_factors()
            if items is None:
                for batch, scores in self.score_batches(users, bs):
                    for m in exclude:
                        mask_seen_(scores, m, batch)
                    yield batch, *topk(scores, k)
                return
            ranker = NormSortedItems(items.float())
            for start in range(0, len(users), bs):
                batch = users[start : start + bs]
                vals, idx = ranker.topk(self._user_factors(batch).float(), k, exclude, batch)
                yield batch, vals.cpu(), idx.cpu()

    def scoring_batch_size(self, requested: int | None = None) -> int:
        """Users scored at once: ``requested``, else the config's ``score_batch_size``, else
        :func:`~polyrec.ranking.auto_batch_size` for the catalogue size."""
        return requested or self.config.score_batch_size or auto_batch_size(self.n_items)

    def ranking_batch_size(self, requested: int | None = None) -> int:
        """Users ranked at once by :meth:`top_items`: :meth:`scoring_batch_size`, except that
        an inner-product model's default is ``FACTOR_BATCH_USERS`` (its ranking scores blocks of
        a fixed size, whatever the catalogue)."""
        if requested or self.config.score_batch_size or self._item_factors() is None:
            return self.scoring_batch_size(requested)
        return FACTOR_BATCH_USERS

    def recommend(
        self,
        users: Sequence[Any] | np.ndarray,
        k: int = 10,
        *,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-``k`` items for external user ids: a frame ``user, item, score, rank`` (rank from 1).

        ``exclude_seen`` removes the items each user interacted with in the training data.
        """
        self._check_fitted()
        assert self.user_ids is not None and self.item_ids is not None
        if k < 1:
            raise PolyrecError(f"k must be >= 1, got {k}")
        internal = self.user_ids.to_internal(users, what="user")
        exclude = [self.seen] if exclude_seen and self.seen is not None else []
        frames = [
            _topk_frame(batch, vals, idx)
            for batch, vals, idx in self.top_items(internal, k, exclude)
        ]
        out = pd.concat(frames, ignore_index=True)
        out["user"] = self.user_ids.to_external(out["user"].to_numpy())
        out["item"] = self.item_ids.to_external(out["item"].to_numpy())
        return out

    def similar_items(self, items: Sequence[Any] | np.ndarray, k: int = 10) -> pd.DataFrame:
        """The ``k`` most similar items to each external item id (the item itself excluded)."""
        self._check_fitted()
        assert self.item_ids is not None
        internal = self.item_ids.to_internal(items, what="item")
        with torch.inference_mode():
            scores = self._similar(internal).float()
            scores[torch.arange(len(internal)), torch.from_numpy(internal)] = -torch.inf
            vals, idx = topk(scores, k)
        out = _topk_frame(internal, vals, idx).rename(columns={"user": "query_item"})
        out["query_item"] = self.item_ids.to_external(out["query_item"].to_numpy())
        out["item"] = self.item_ids.to_external(out["item"].to_numpy())
        return out

    def save(self, directory: str | Path) -> Path:
        """Write the model so that :func:`load` restores it without the training data."""
        self._check_fitted()
        assert self.user_ids is not None and self.item_ids is not None and self.seen is not None
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.name, "config": self.config.model_dump()}
        (d / META_FILE).write_text(json.dumps(meta, indent=2))
        _save_ids(d / "user_ids.parquet", self.user_ids)
        _save_ids(d / "item_ids.parquet", self.item_ids)
        sp.save_npz(d / "seen.npz", self.seen)
        torch.save(_to_torch(self._get_state()), d / STATE_FILE)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load a model saved by :meth:`save`; works on the base class (dispatches by name)."""
        from polyrec.models.registry import get_model_class

        d = Path(directory)
        if not (d / META_FILE).is_file():
            raise PolyrecError(f"{d} is not a saved polyrec model ({META_FILE} missing)")
        meta = json.loads((d / META_FILE).read_text())
        model_cls = get_model_class(meta["model"]) if cls is Recommender else cls
        model = model_cls(meta["config"])
        model.user_ids = _load_ids(d / "user_ids.parquet")
        model.item_ids = _load_ids(d / "item_ids.parquet")
        model.seen = sp.load_npz(d / "seen.npz").tocsr()
        model._set_state(torch.load(d / STATE_FILE, weights_only=True))
        return model

    # ------------------------------------------------------------------ for subclasses
    @abstractmethod
    def _fit(self, train: Dataset, valid: Dataset | None) -> None: ...

    def _score(self, users: np.ndarray) -> torch.Tensor:
        """Scores ``(len(users), n_items)``; by default the inner products of the factors."""
        items = self._item_factors()
        if items is None:
            raise NotImplementedError(f"{type(self).__name__} has neither _score nor factors")
        return inner_products(self._user_factors(users), items).cpu()

    def _item_factors(self) -> torch.Tensor | None:
        """``(n_items, d)`` item vectors if every score is ``_user_factors(u) . v``, else None."""
        return None

    def _user_factors(self, users: np.ndarray) -> torch.Tensor:
        """``(len(users), d)`` user vectors of a model with :meth:`_item_factors`."""
        raise NotImplementedError(f"{type(self).__name__} has no user factors")

    @abstractmethod
    def _get_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _set_state(self, state: dict[str, Any]) -> None: ...

    def _item_embeddings(self) -> torch.Tensor | None:
        """Item vectors for cosine ``similar_items`` (default: the item factors); ``None`` if
        the model has none."""
        items = self._item_factors()
        return None if items is None else items.cpu()

    def _similar(self, items: np.ndarray) -> torch.Tensor:
        emb = self._item_embeddings()
        if emb is None:
            raise PolyrecError(f"{self.name} does not support similar_items")
        emb = torch.nn.functional.normalize(emb.float(), dim=1)
        return inner_products(emb[torch.from_numpy(items)], emb)

    def _check_fitted(self) -> None:
        if self.item_ids is None:
            raise PolyrecError(f"{self.name} is not fitted: call fit() or load() first")


def _topk_frame(rows: np.ndarray, vals: torch.Tensor, idx: torch.Tensor) -> pd.DataFrame:
    """Long frame of a top-k result, dropping masked (-inf) slots."""
    k = idx.shape[1]
    v = vals.numpy().ravel()
    keep = np.isfinite(v)
    return pd.DataFrame(
        {
            "user": np.repeat(rows, k)[keep],
            "item": idx.numpy().ravel()[keep],
            "score": v[keep],
            "rank": np.tile(np.arange(1, k + 1), len(rows))[keep],
        }
    )


def _to_torch(state: dict[str, Any]) -> dict[str, Any]:
    """numpy arrays -> tensors, sparse matrices -> their CSR parts: loadable with weights_only."""
    out: dict[str, Any] = {}
    for key, val in state.items():
        if sp.issparse(val):
            m = val.tocsr()
            out[key] = {
                "__csr__": torch.tensor(m.shape),
                "data": torch.from_numpy(m.data),
                "indices": torch.from_numpy(m.indices.astype(np.int64)),
                "indptr": torch.from_numpy(m.indptr.astype(np.int64)),
            }
        elif isinstance(val, np.ndarray):
            out[key] = torch.from_numpy(np.ascontiguousarray(val))
        elif isinstance(val, dict):
            out[key] = _to_torch(val)
        else:
            out[key] = val
    return out


def sparse_from_state(val: dict[str, torch.Tensor]) -> sp.csr_matrix:
    """Inverse of the sparse branch of ``_to_torch``."""
    shape = tuple(int(x) for x in val["__csr__"])
    return sp.csr_matrix(
        (val["data"].numpy(), val["indices"].numpy(), val["indptr"].numpy()), shape=shape
    )


def _save_ids(path: Path, ids: IdMap) -> None:
    ext = ids.external
    col = ext.astype(str) if ext.dtype == object else ext
    pd.DataFrame({"id": col}).to_parquet(path, index=False)


def _load_ids(path: Path) -> IdMap:
    df = pd.read_parquet(path)
    return IdMap(df["id"].to_numpy())

"""Mender: TIGER conditioned on natural-language user preferences (Mender-Emb).

Paischer et al., "Preference Discerning with LLM-Enhanced Generative Retrieval", TMLR 2025
(Section 4). Mender-Emb embeds each preference with a frozen sentence encoder and places the
embeddings in the encoder context before the history's semantic-ID tokens; the decoder and the
trie-constrained beam search are TIGER's (:mod:`.tiger`).

Preferences come from a :class:`~.preferences.PreferenceGenerator` over the user's reviews
(the offline extractive one by default). Training conditions each example (history -> next item
``t``) on the *matched* preference, as in the paper's preference-based setting: among the
preferences written at step ``t``, the one whose embedding is closest to the target item's
text embedding (the same encoder embeds items and preferences). After ``fit`` each user's
context is their preferences at their last step; :meth:`Mender.set_preference_context` and
:meth:`Mender.generate_with_preferences` condition on any other preferences (the benchmark
axes in :mod:`.benchmark`).

Not implemented: Mender-Tok (preferences as text tokens through a fine-tuned language encoder).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import torch
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sequences import PAD
from polyrec.errors import PolyrecError
from polyrec.features.text import DEFAULT_MODEL, embed_item_texts
from polyrec.models.base import ModelConfig
from polyrec.models.generative.decoding import scores_from_beams
from polyrec.models.generative.preferences import (
    ExtractiveGenerator,
    PreferenceGenerator,
    PreferenceTable,
    user_preferences,
)
from polyrec.models.generative.semantic_ids import SemanticIdMap
from polyrec.models.generative.tiger import TIGER, TIGERConfig, prefix_examples


class MenderConfig(TIGERConfig):
    """Mender-Emb options on top of TIGER's."""

    preference_model: str = DEFAULT_MODEL
    preference_window: int = Field(5, ge=1)
    preference_steps: int = Field(20, ge=1)
    max_preferences: int = Field(5, ge=1)


class Mender(TIGER):
    """Mender-Emb (see module docstring). ``generator`` writes the preferences (default
    :class:`ExtractiveGenerator`); ``preference_cache`` is a JSON-lines file to reuse them."""

    name = "mender"
    Config: ClassVar[type[ModelConfig]] = MenderConfig
    config: MenderConfig

    def __init__(
        self,
        config: ModelConfig | dict[str, Any] | None = None,
        *,
        generator: PreferenceGenerator | None = None,
        preference_cache: str | None = None,
        **overrides: Any,
    ):
        super().__init__(config, **overrides)
        self.generator = generator or ExtractiveGenerator(self.config.max_preferences)
        self.preference_cache = preference_cache
        self.preferences: PreferenceTable | None = None
        self.pref_texts: list[str] = []
        self.pref_emb = torch.zeros(0, 0)
        self.user_context = np.zeros((0, self.config.max_preferences), np.int64)
        self._train_prefs = np.zeros((0, 1), np.int64)

    # ------------------------------------------------------------------ public
    def embed_preferences(self, texts: Sequence[str]) -> torch.Tensor:
        """Frozen-encoder embeddings of preference texts ``(n, pref_dim)``."""
        emb = embed_item_texts(list(texts), self.config.preference_model, progress=False)
        return torch.from_numpy(emb)

    def set_preference_context(
        self, users: np.ndarray, preferences: Sequence[Sequence[str]]
    ) -> None:
        """Condition the scores of internal ``users`` on the given preference lists (at most
        ``max_preferences`` each are kept)."""
        self._check_fitted()
        self.user_context[np.asarray(users)] = self._index(preferences)

    def generate_with_preferences(
        self,
        tokens: np.ndarray,
        preferences: Sequence[Sequence[str]],
        users: np.ndarray | None = None,
        *,
        beams: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`TIGER.generate` with each history conditioned on its own preference list
        (any length; an empty list means no preference)."""
        width = max(1, max(len(p) for p in preferences))
        texts = sorted({t for p in preferences for t in p})
        lookup = {t: i for i, t in enumerate(texts)}
        emb = self.embed_preferences(texts) if texts else torch.zeros(0, self._pref_dim())
        idx = np.full((len(preferences), width), -1, np.int64)
        for row, prefs in enumerate(preferences):
            idx[row, : len(prefs)] = [lookup[t] for t in prefs]
        return self.generate(tokens, users, beams=beams, **self._prefix(emb, idx))

    # ------------------------------------------------------------------ training
    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        self.preferences = user_preferences(
            train,
            self.generator,
            window=self.config.preference_window,
            last_n=None,
            cache_path=self.preference_cache,
        )
        self.pref_texts = sorted(
            {t for steps in self.preferences.prefs.values() for ps in steps.values() for t in ps}
        )
        if not self.pref_texts:
            raise PolyrecError(f"{self.generator.name} wrote no preference for {train.name!r}")
        self.pref_emb = self.embed_preferences(self.pref_texts)
        item_emb = torch.from_numpy(
            embed_item_texts(train, self.config.preference_model, progress=False)
        )
        self._train_prefs = self._matched(train, item_emb)
        self.user_context = np.full((train.n_users, self.config.max_preferences), -1, np.int64)
        seqs = train.sequences
        last = np.diff(seqs.indptr) - 1
        users = np.flatnonzero(last >= 0)
        self.user_context[users] = self._index(
            [self.preferences.at(u, int(last[u])) for u in users]
        )
        super()._fit(train, valid)

    def _matched(self, train: Dataset, item_emb: torch.Tensor) -> np.ndarray:
        """Per training example (order of :func:`prefix_examples`), the index of the
        preference at its target's step closest to the target item (``-1``: none)."""
        users, _, targets = prefix_examples(train, self.config.max_len)
        lengths = np.diff(train.sequences.indptr)
        pos = np.arange(lengths.sum()) - np.repeat(train.sequences.indptr[:-1], lengths)
        steps = pos[pos >= 1]  # the target's step, in prefix_examples' order
        lookup = {t: i for i, t in enumerate(self.pref_texts)}
        table = cast(PreferenceTable, self.preferences)
        emb = torch.nn.functional.normalize(self.pref_emb, dim=1)
        items = torch.nn.functional.normalize(item_emb, dim=1)
        out = np.full((len(users), 1), -1, np.int64)
        for row, (u, step, item) in enumerate(
            zip(users.tolist(), steps.tolist(), targets.tolist(), strict=True)
        ):
            cands = [lookup[t] for t in table.at(u, step)]
            if cands:
                sims = emb[cands] @ items[item]
                out[row, 0] = cands[int(sims.argmax())]
        return out

    def _dims(self, train: Dataset) -> dict[str, int]:
        dims = super()._dims(train)
        dims["pref_dim"] = self._pref_dim()
        return dims

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        users, hist, targets = prefix_examples(train, self.config.max_len)
        order = rng.permutation(len(users))
        id_map = cast(SemanticIdMap, self.id_map)
        for start in range(0, len(order), self.config.batch_size):
            idx = order[start : start + self.config.batch_size]
            width = max(int((hist[idx] != PAD).sum(1).max(initial=0)), 1)
            batch = {
                "tokens": self._encoder_tokens(hist[idx, -width:], users[idx]),
                "codes": torch.from_numpy(id_map.ids_of(targets[idx])),
            }
            batch.update(self._prefix(self.pref_emb, self._train_prefs[idx]))
            yield batch

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.train_module(
            batch["tokens"], batch["codes"], batch["prefix"], batch["prefix_mask"]
        )

    # ------------------------------------------------------------------ scoring
    def _score(self, users: np.ndarray) -> torch.Tensor:
        tokens = self.histories[users]
        context = self._prefix(self.pref_emb, self.user_context[users])
        scores = scores_from_beams(*self.generate(tokens, users, **context), self.n_items)
        cold = torch.from_numpy(tokens[:, -1] == PAD)
        if cold.any():
            scores[cold] = self.popularity
        return scores

    def _prefix(self, emb: torch.Tensor, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Prefix vectors ``(B, P, pref_dim)`` and mask (True = empty) from indices into
        ``emb`` (``-1`` = empty)."""
        t = torch.from_numpy(idx)
        vec = emb[t.clamp_min(0)] if len(emb) else torch.zeros(*idx.shape, self._pref_dim())
        return {"prefix": vec * (t >= 0)[..., None], "prefix_mask": t < 0}

    def _index(self, preferences: Sequence[Sequence[str]]) -> np.ndarray:
        """Preference lists -> ``(n, max_preferences)`` indices into the table (new texts are
        embedded and appended)."""
        lookup = {t: i for i, t in enumerate(self.pref_texts)}
        new = sorted({t for p in preferences for t in p if t not in lookup})
        if new:
            self.pref_emb = torch.cat([self.pref_emb, self.embed_preferences(new)])
            lookup.update({t: len(self.pref_texts) + i for i, t in enumerate(new)})
            self.pref_texts.extend(new)
        out = np.full((len(preferences), self.config.max_preferences), -1, np.int64)
        for row, prefs in enumerate(preferences):
            keep = list(prefs)[: self.config.max_preferences]
            out[row, : len(keep)] = [lookup[t] for t in keep]
        return out

    def _pref_dim(self) -> int:
        return int(self.pref_emb.shape[1])

    # ------------------------------------------------------------------ state
    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        state.update(
            pref_texts=list(self.pref_texts), pref_emb=self.pref_emb, user_context=self.user_context
        )
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        self.pref_texts = list(state["pref_texts"])
        self.pref_emb = state["pref_emb"]
        self.user_context = state["user_context"].numpy()
        super()._set_state(state)

"""Mender: TIGER conditioned on natural-language user preferences (Mender-Emb, Mender-Tok).

Paischer et al., "Preference Discerning with LLM-Enhanced Generative Retrieval", TMLR 2025
(Section 4). Two ways to put the preferences and the history in the decoder's context; the
decoder and the trie-constrained beam search are TIGER's (:mod:`.tiger`):

- :class:`Mender` (Mender-Emb), as the official ``embedded_history`` model: a frozen sentence
  encoder embeds each preference and each history item's text, one linear map takes those
  vectors to the model width, and the decoder cross-attends to them directly (no trainable
  encoder, no semantic-ID tokens on the input side, no positions: the official decoder is a
  T5's, whose cross-attention has none). Differences: the sentence encoder is
  all-MiniLM-L6-v2 (the paper's instructor-base is not available offline), the item text is
  ``text_fields`` (the paper's is the title), and the decoder is trained from scratch (the
  paper starts from a pretrained T5 decoder).
- :class:`MenderTok` (Mender-Tok) tokenizes the preferences as text: a word vocabulary learned
  from the training preferences (unknown words at inference -> ``[UNK]``), the preferences'
  tokens joined with ``[SEP]``, embedded by the encoder's own trainable text-token table
  (separate from the semantic-ID table, so ids never collide). Differences from the paper's
  Mender-Tok, which fine-tunes a pretrained Flan-T5-small encoder over the preference text
  followed by the history's item *titles*: the text encoder here is trained from scratch with
  the rest of the model, and the history stays as semantic-ID tokens.

Preferences come from a :class:`~.preferences.PreferenceGenerator` over the user's reviews
(the offline extractive one by default). Training conditions each example (history -> next item
``t``) on the *matched* preference, as in the paper's preference-based setting: among the
preferences written from the history before ``t`` (the window ends at the item before ``t``,
as the official code pairs the preferences of item ``j-2`` with target ``j-1``: ``t``'s own
review never reaches its context), the positive one whose embedding is closest to the target
item's text embedding (the same encoder embeds items, from ``text_fields``, and preferences;
:func:`.benchmark.matched_preferences`). Validation (early stopping) conditions the same way, as
the benchmark tests: each validation user gets the matched preference for the validation item.
After ``fit`` each user's context is every preference at their last known step (the last item
of the stored history: the validation item when ``fit`` had one);
:meth:`Mender.set_preference_context` and :meth:`Mender.generate_with_preferences` condition on
any other preferences (the benchmark axes in :mod:`.benchmark`).

Optional training data of the official code (all off by default, as in its configs):

- ``sentiment_pairs`` (its ``add_pos_data`` / ``add_neg_data``): for each training target the
  user reviewed negatively, the negative preference that review caused, matched to the item,
  becomes a pair: its inverted form ("Prefers X") -> the item, and the negative form ("Avoid
  X") as a *negative* example whose ID tokens are pushed down (unlikelihood loss,
  :meth:`.tiger._Seq2Seq.forward`);
- ``steering_pairs`` (its ``add_fine_data`` / ``add_coarse_data``): for each training target
  item, the item most (fine) and least (coarse) similar to it among the training targets; each
  of the two rows keeps its history and takes the other's matched preference and item;
- ``accumulated_fraction`` (its ``accumulate_inst``): that fraction of the rows, drawn afresh
  each batch, is conditioned on every preference accumulated over the history before the
  target instead of the matched one, the history-consolidation setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final, cast

import numpy as np
import torch
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sequences import PAD, merge_interactions
from polyrec.errors import PolyrecError
from polyrec.features.text import DEFAULT_MODEL, embed_item_texts
from polyrec.models.base import ModelConfig
from polyrec.models.generative.benchmark import (
    ACCUMULATED_LIMIT,
    invert,
    matched_preferences,
    steering_partner,
)
from polyrec.models.generative.decoding import scores_from_beams
from polyrec.models.generative.preferences import (
    ExtractiveGenerator,
    PreferenceGenerator,
    PreferenceTable,
    is_negative,
    item_reviews,
    review_sentiment,
    user_preferences,
)
from polyrec.models.generative.tiger import TIGER, TIGERConfig, _Seq2Seq, prefix_examples
from polyrec.models.sequential import init_weights
from polyrec.models.unified.tokens import TextTokenizer

TEXT_SPECIALS: Final = ("[PAD]", "[UNK]", "[SEP]")  # ids 0, 1, 2 of the preference vocabulary
TEXT_PAD, TEXT_UNK, TEXT_SEP = 0, 1, 2


class MenderConfig(TIGERConfig):
    """Mender-Emb options on top of TIGER's (``sentiment_pairs``, ``steering_pairs``,
    ``accumulated_fraction``: see the module docstring). Mender's context is the preferences
    and the history, without TIGER's hashed user-ID token, so ``n_user_tokens`` defaults to 0."""

    n_user_tokens: int = Field(0, ge=0)
    preference_model: str = DEFAULT_MODEL
    preference_window: int = Field(5, ge=1)
    preference_steps: int = Field(20, ge=1)
    max_preferences: int = Field(5, ge=1)
    sentiment_pairs: bool = False
    steering_pairs: bool = False
    accumulated_fraction: float = Field(0.0, ge=0.0, le=1.0)


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
        # the model's input row per preference text (Mender-Emb: its frozen embedding)
        self.pref_rows = torch.zeros(0, 0)
        self.user_context = np.zeros((0, self.config.max_preferences), np.int64)
        # per training example: the prefix_examples row of its history, its target item, context
        # (indices into pref_texts) and sign (-1: a negative sentiment pair); per row: its
        # accumulated preferences
        self._train_rows = np.zeros(0, np.int64)
        self._train_items = np.zeros(0, np.int64)
        self._train_prefs = np.zeros((0, 1), np.int64)
        self._train_sign = np.zeros(0, np.int64)
        self._train_accumulated = np.zeros((0, 1), np.int64)
        self._item_text: torch.Tensor | None = None  # frozen item text embeddings, during fit

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
        (any length; an empty list means no preference; Mender-Tok cuts the joined text at
        ``max_preference_tokens``)."""
        self._check_fitted()
        width = max(1, max(len(p) for p in preferences))
        texts = sorted({t for p in preferences for t in p})
        lookup = {t: i for i, t in enumerate(texts)}
        idx = np.full((len(preferences), width), -1, np.int64)
        for row, prefs in enumerate(preferences):
            idx[row, : len(prefs)] = [lookup[t] for t in prefs]
        return self.generate(
            tokens, users, beams=beams, **self._prefix(self._inputs_of(texts), idx)
        )

    # ------------------------------------------------------------------ training
    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        self.preferences = user_preferences(
            train,
            self.generator,
            window=self.config.preference_window,
            last_n=None,
            cache_path=self.preference_cache,
        )
        written = {
            t for steps in self.preferences.prefs.values() for ps in steps.values() for t in ps
        }
        if not written:
            raise PolyrecError(f"{self.generator.name} wrote no preference for {train.name!r}")
        # inverted negatives are matched when a step has no positive preference
        self.pref_texts = sorted(written | {invert(t) for t in written if is_negative(t)})
        pref_emb = self.embed_preferences(self.pref_texts)
        item_emb = embed_item_texts(
            train, self.config.preference_model, fields=self.config.text_fields, progress=False
        )
        self.pref_rows = self._fit_inputs(pref_emb)
        self._item_text = torch.from_numpy(np.asarray(item_emb, np.float32))
        self._training_examples(train, pref_emb.numpy(), item_emb)
        serving, validating = self._contexts(train, valid, item_emb)
        # early stopping must score what the benchmark tests: the matched preference for the
        # validation item; serving (and a fit cut short by an exception) keeps the last step's
        self.user_context = validating
        try:
            super()._fit(train, valid)
        finally:
            self.user_context = serving
            self._item_text = None  # in the network's buffers now

    def _training_examples(
        self, train: Dataset, pref_emb: np.ndarray, item_emb: np.ndarray
    ) -> None:
        """Fill the ``_train_*`` tables from the frozen embeddings ``pref_emb`` (rows of
        ``pref_texts``) and ``item_emb``: one example per :func:`prefix_examples` row with its
        matched preference (``-1``: none), then the sentiment and steering pairs, and each
        row's accumulated preferences (see the module docstring)."""
        cfg = self.config
        users, _, targets = prefix_examples(train, cfg.max_len)
        lengths = np.diff(train.sequences.indptr)
        flat = np.arange(lengths.sum())
        pos = flat - np.repeat(train.sequences.indptr[:-1], lengths)
        ends, steps = flat[pos >= 1], pos[pos >= 1]  # each target's position, in row order
        table = cast(PreferenceTable, self.preferences)
        lookup = {t: i for i, t in enumerate(self.pref_texts)}

        def embed(texts: list[str]) -> np.ndarray:
            return pref_emb[[lookup[t] for t in texts]]

        pairs = list(zip(users.tolist(), steps.tolist(), strict=True))
        matched = matched_preferences(
            [table.at(u, s - 1) for u, s in pairs], targets, item_emb, embed
        )
        rows, items = list(range(len(users))), targets.tolist()
        contexts = [[] if m is None else [m] for m in matched]
        signs = [1] * len(rows)
        if cfg.sentiment_pairs:
            reviews = item_reviews(train)
            disliked = [
                r for r, j in enumerate(train.order[ends]) if review_sentiment(reviews[j]) < 0
            ]
            # the negative preferences written with each disliked item's review (keyed by their
            # inverted form), and the one matched to the item
            negatives = [
                {invert(p): p for p in table.at(*pairs[r]) if is_negative(p)} for r in disliked
            ]
            positives = matched_preferences(
                [list(n) for n in negatives], targets[disliked], item_emb, embed
            )
            for r, negative, positive in zip(disliked, negatives, positives, strict=True):
                if positive is not None:
                    rows += [r, r]
                    items += [int(targets[r])] * 2
                    contexts += [[positive], [negative[positive]]]
                    signs += [1, -1]
        if cfg.steering_pairs:
            # one source row per target item (the official code's deduplication); its partner is
            # the item most (fine) / least (coarse) similar; each row reads the other's preference
            with_pref = np.flatnonzero([m is not None for m in matched])
            unique, first = np.unique(targets[with_pref], return_index=True)
            source = with_pref[first]
            for coarse in (False, True):
                for s, p in zip(
                    source.tolist(),
                    steering_partner(unique, item_emb, coarse).tolist(),
                    strict=True,
                ):
                    if p >= 0:
                        q = int(source[p])
                        rows += [s, q]
                        items += [int(targets[q]), int(targets[s])]
                        contexts += [[str(matched[q])], [str(matched[s])]]
                        signs += [1, 1]
        self._train_rows = np.array(rows, np.int64)
        self._train_items = np.array(items, np.int64)
        self._train_prefs = self._indices(contexts, 1)
        self._train_sign = np.array(signs, np.int64)
        if cfg.accumulated_fraction > 0:
            self._train_accumulated = self._indices(
                [table.accumulated(u, s - 1) for u, s in pairs], ACCUMULATED_LIMIT
            )

    def _contexts(
        self, train: Dataset, valid: Dataset | None, item_emb: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(serving, validating)`` contexts ``(n_users, max_preferences)``.

        Serving: every preference at the user's last known step, the last item of the history
        scoring uses after ``fit`` (``train`` then ``valid``). Validating: for each user with a
        validation item, the preference matched to it among those written just before it (the
        user's first validation item when there are several), chosen as the benchmark chooses
        it for the test item; users without a validation item (not scored while validating)
        keep the serving context.
        """
        table = cast(PreferenceTable, self.preferences)
        last = np.diff(train.sequences.indptr) - 1
        users = np.flatnonzero(last >= 0)
        serving = np.full((train.n_users, self.config.max_preferences), -1, np.int64)
        serving[users] = self._index([table.at(u, int(last[u])) for u in users])
        if valid is None or valid.n_interactions == 0:
            return serving, serving.copy()
        vusers = valid.active_users
        own = train.with_interactions(np.isin(train.users, vusers))
        known = merge_interactions(own, valid)
        seqs, order = known.sequences, known.order
        lengths = np.diff(seqs.indptr)
        pos = np.arange(len(order)) - np.repeat(seqs.indptr[:-1], lengths)
        from_valid = order >= own.n_interactions
        first = np.full(known.n_users, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first, known.users[order][from_valid], pos[from_valid])
        step, end = first[vusers], lengths[vusers] - 1
        at = user_preferences(
            known,
            self.generator,
            window=self.config.preference_window,
            last_n=int((end - step).max()) + 2,
            cache_path=self.preference_cache,
        )
        matched = matched_preferences(
            [at.at(u, s - 1) for u, s in zip(vusers.tolist(), step.tolist(), strict=True)],
            seqs.items[seqs.indptr[vusers] + step],
            item_emb,
            lambda texts: self.embed_preferences(texts).numpy(),
        )
        validating = serving.copy()
        validating[vusers] = self._index([[] if m is None else [m] for m in matched])
        serving[vusers] = self._index(
            [at.at(u, e) for u, e in zip(vusers.tolist(), end.tolist(), strict=True)]
        )
        return serving, validating

    def _dims(self, train: Dataset) -> dict[str, int]:
        dims = super()._dims(train)
        dims["pref_dim"] = self._pref_dim()
        return dims

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        net = _EmbeddedContextSeq2Seq(dims, self.config)
        if self._item_text is not None:  # fitting (a loaded model gets its buffer restored)
            net.item_text[1:] = self._item_text
        return net

    def _encoder_tokens(self, tokens: np.ndarray, users: np.ndarray | None) -> torch.Tensor:
        """Mender-Emb reads the history's items, not their ID tokens: the item tokens as they
        are (item + 1, ``PAD`` = 0), which index the network's item embeddings."""
        return torch.from_numpy(np.asarray(tokens, np.int64))

    def _examples(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._train_rows, self._train_items

    def _example_context(
        self, idx: np.ndarray, rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        context = self._train_prefs[idx]
        frac = self.config.accumulated_fraction
        if frac > 0:
            rows = self._train_rows[idx]
            swap = (rng.random(len(idx)) < frac) & (self._train_sign[idx] > 0)
            swap &= idx < len(self._train_accumulated)  # the first examples are the rows
            wide = np.full((len(idx), ACCUMULATED_LIMIT), -1, np.int64)
            wide[:, :1] = context
            wide[swap] = self._train_accumulated[rows[swap]]
            context = wide[:, : int((wide >= 0).sum(1).max(initial=1))]
        return {
            **self._prefix(self.pref_rows, context),
            "sign": torch.from_numpy(self._train_sign[idx]),
        }

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.train_module(
            batch["tokens"], batch["codes"], batch["prefix"], batch["prefix_mask"], batch["sign"]
        )

    # ------------------------------------------------------------------ scoring
    def _score(self, users: np.ndarray) -> torch.Tensor:
        tokens = self.histories[users]
        context = self._prefix(self.pref_rows, self.user_context[users])
        scores = scores_from_beams(*self.generate(tokens, users, **context), self.n_items)
        cold = torch.from_numpy(tokens[:, -1] == PAD)
        if cold.any():
            scores[cold] = self.popularity
        return scores

    def _fit_inputs(self, pref_emb: torch.Tensor) -> torch.Tensor:
        """The input rows of ``pref_texts`` once they are known in ``fit``, given their frozen
        embeddings ``pref_emb``: Mender-Emb's inputs are those embeddings."""
        return pref_emb

    def _inputs_of(self, texts: Sequence[str]) -> torch.Tensor:
        """The input rows of new preference texts: their frozen embeddings."""
        if not texts:
            return torch.zeros(0, self._pref_dim())
        return self.embed_preferences(texts)

    def _prefix(self, rows: torch.Tensor, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Prefix vectors ``(B, P, pref_dim)`` and mask (True = empty) from indices into
        ``rows`` (``-1`` = empty)."""
        t = torch.from_numpy(idx)
        vec = rows[t.clamp_min(0)] if len(rows) else torch.zeros(*idx.shape, self._pref_dim())
        return {"prefix": vec * (t >= 0)[..., None], "prefix_mask": t < 0}

    def _index(self, preferences: Sequence[Sequence[str]]) -> np.ndarray:
        """Preference lists -> ``(n, max_preferences)`` indices into the table."""
        return self._indices(preferences, self.config.max_preferences)

    def _indices(self, preferences: Sequence[Sequence[str]], width: int) -> np.ndarray:
        """Preference lists -> ``(n, width)`` indices into the table, ``-1`` = empty (the first
        ``width`` of each list; the input rows of new texts are appended)."""
        lookup = {t: i for i, t in enumerate(self.pref_texts)}
        new = sorted({t for p in preferences for t in p if t not in lookup})
        if new:
            self.pref_rows = torch.cat([self.pref_rows, self._inputs_of(new)])
            lookup.update({t: len(self.pref_texts) + i for i, t in enumerate(new)})
            self.pref_texts.extend(new)
        out = np.full((len(preferences), width), -1, np.int64)
        for row, prefs in enumerate(preferences):
            keep = list(prefs)[:width]
            out[row, : len(keep)] = [lookup[t] for t in keep]
        return out

    def _pref_dim(self) -> int:
        return int(self.pref_rows.shape[1])

    # ------------------------------------------------------------------ state
    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        state.update(
            pref_texts=list(self.pref_texts),
            pref_rows=self.pref_rows,
            user_context=self.user_context,
        )
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        self.pref_texts = list(state["pref_texts"])
        self.pref_rows = state["pref_rows"]
        self.user_context = state["user_context"].numpy()
        super()._set_state(state)


class _EmbeddedContextSeq2Seq(_Seq2Seq):
    """Mender-Emb's network: the decoder's memory is ``W [preference vectors; history item
    vectors]`` (frozen sentence embeddings, one linear map ``pref_proj``), with no encoder
    layers. Its encoder tokens are item tokens (:meth:`Mender._encoder_tokens`), rows of the
    ``item_text`` buffer (saved with the weights)."""

    def __init__(self, dims: dict[str, int], cfg: TIGERConfig) -> None:
        super().__init__(dims, cfg)
        del self.encoder, self.enc_token, self.enc_pos, self.enc_norm  # the memory is given
        self.register_buffer("item_text", torch.zeros(dims["n_items"] + 1, dims["pref_dim"]))

    def encode(
        self,
        tokens: torch.Tensor,
        prefix: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, pad = self.item_text[tokens], tokens == PAD  # row 0 (PAD) is a zero vector
        if prefix is not None:
            if prefix_mask is None:
                prefix_mask = torch.zeros(prefix.shape[:2], dtype=torch.bool, device=x.device)
            x, pad = torch.cat([prefix, x], dim=1), torch.cat([prefix_mask, pad], dim=1)
        keys = ~pad
        keys[~keys.any(1), 0] = True  # an empty context attends to one zero vector, not NaN
        return self.embed_prefix(x), keys[:, None, None, :]


# ---------------------------------------------------------------------- Mender-Tok
class MenderTokConfig(MenderConfig):
    """Mender-Tok options on top of Mender-Emb's. ``preference_model`` is still used, in
    ``fit`` only, to match each training and validation target to its preference (the paper's
    matching)."""

    preference_vocab_size: int = Field(8000, ge=len(TEXT_SPECIALS) + 1)
    preference_min_frequency: int = Field(1, ge=1)
    max_preference_tokens: int = Field(64, ge=2)


def preference_tokenizer(
    texts: Sequence[str], vocab_size: int, min_frequency: int = 1
) -> TextTokenizer:
    """A word-level tokenizer (lower case, accents stripped, punctuation split off) learned from
    ``texts``: its ``vocab_size`` most frequent words seen at least ``min_frequency`` times,
    ``[PAD]``/``[UNK]``/``[SEP]`` first; any other word encodes to ``[UNK]``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(TEXT_SPECIALS)
    )
    tok.train_from_iterator([t for t in texts if t], trainer=trainer)
    return TextTokenizer(tok.to_str())


class _TextPrefixSeq2Seq(_Seq2Seq):
    """TIGER's seq2seq whose context prefix is preference text tokens ``(B, P)`` (``PAD=0``),
    embedded by their own table plus learned positions."""

    def __init__(self, dims: dict[str, int], cfg: TIGERConfig) -> None:
        super().__init__(dims, cfg)
        self.text_token = torch.nn.Embedding(dims["text_vocab"], cfg.dim, padding_idx=TEXT_PAD)
        self.text_pos = torch.nn.Embedding(dims["text_len"], cfg.dim)
        init_weights(self.text_token)
        init_weights(self.text_pos)

    def embed_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(prefix.shape[1], device=prefix.device)
        return self.text_token(prefix) + self.text_pos(pos)


class MenderTok(Mender):
    """Mender-Tok (see module docstring): the same training examples, matched preferences,
    decoder and beam search as :class:`Mender`; the context is the preferences' text tokens.
    After ``fit``: ``tokenizer`` (the preference vocabulary, saved with the model)."""

    name = "mender-tok"
    Config: ClassVar[type[ModelConfig]] = MenderTokConfig
    config: MenderTokConfig

    def __init__(
        self,
        config: ModelConfig | dict[str, Any] | None = None,
        *,
        generator: PreferenceGenerator | None = None,
        preference_cache: str | None = None,
        **overrides: Any,
    ):
        super().__init__(
            config, generator=generator, preference_cache=preference_cache, **overrides
        )
        self.tokenizer: TextTokenizer | None = None
        self.pref_rows = torch.zeros(0, self.config.max_preference_tokens, dtype=torch.long)

    def _fit_inputs(self, pref_emb: torch.Tensor) -> torch.Tensor:
        """Learn the vocabulary from the training preferences; rows are their token ids."""
        cfg = self.config
        self.tokenizer = preference_tokenizer(
            self.pref_texts, cfg.preference_vocab_size, cfg.preference_min_frequency
        )
        return self._inputs_of(self.pref_texts)

    def _inputs_of(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids of each text followed by ``[SEP]``, ``(n, max_preference_tokens)`` padded
        with ``[PAD]`` (a longer text is cut)."""
        width = self.config.max_preference_tokens
        rows = torch.full((len(texts), width), TEXT_PAD, dtype=torch.long)
        for r, ids in enumerate(cast(TextTokenizer, self.tokenizer).encode(list(texts))):
            seq = [*ids[: width - 1], TEXT_SEP]
            rows[r, : len(seq)] = torch.tensor(seq)
        return rows

    def _prefix(self, rows: torch.Tensor, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Each row's preferences (indices into ``rows``, ``-1`` = none) as one text: their
        tokens in order, moved left over the padding, cut to ``max_preference_tokens``;
        ``prefix (B, T)`` and ``prefix_mask`` (True = padding)."""
        t = torch.from_numpy(idx)
        if len(rows):
            sel = rows[t.clamp_min(0)] * (t >= 0)[..., None]
        else:
            sel = torch.zeros(*idx.shape, rows.shape[1], dtype=torch.long)
        flat = sel.reshape(len(idx), -1)
        real = flat != TEXT_PAD
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
        longest = int(real.sum(1).max()) if real.numel() else 0
        width = min(self.config.max_preference_tokens, max(1, longest))
        packed = flat.gather(1, order)[:, :width]
        return {"prefix": packed, "prefix_mask": packed == TEXT_PAD}

    def _dims(self, train: Dataset) -> dict[str, int]:
        dims = TIGER._dims(self, train)  # no preference vectors: text tokens instead
        dims.update(
            text_vocab=cast(TextTokenizer, self.tokenizer).vocab_size,
            text_len=self.config.max_preference_tokens,
        )
        return dims

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        return _TextPrefixSeq2Seq(dims, self.config)

    def _encoder_tokens(self, tokens: np.ndarray, users: np.ndarray | None) -> torch.Tensor:
        return TIGER._encoder_tokens(self, tokens, users)  # its encoder reads ID tokens

    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        state["preference_tokenizer"] = cast(TextTokenizer, self.tokenizer).json
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        self.tokenizer = TextTokenizer(state["preference_tokenizer"])
        super()._set_state(state)

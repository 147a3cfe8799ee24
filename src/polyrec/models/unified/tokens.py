"""The unified token space of UniMP-style models and the serialisation of interleaved histories.

One vocabulary holds, in this order (:class:`UnifiedVocab`):

1. special tokens: padding, BOS/EOS/SEP, field markers (``[ITEM]``, ``[FEAT]``, ``[TITLE]``,
   ``[RATING]``, ``[REVIEW]``, ``[QUERY]``, ``[CAND]``, ``[ANS]``) and one instruction token per
   task (``[NEXT]``, ``[SEARCH]``, ``[RATE]``, ``[EXPLAIN]``);
2. rating tokens, one per rating level of the data (e.g. 1..5);
3. semantic-ID tokens, a separate block per ID depth (TIGER's codes + collision level);
4. text tokens of a byte-pair-encoding tokenizer in SentencePiece / T5 style
   (:class:`TextTokenizer`, a standard :class:`transformers.PreTrainedTokenizerFast` trained
   locally on the dataset's titles, categories and reviews with the ``tokenizers`` library: no
   download).

An event serialises to ``[ITEM] s_1..s_D [FEAT] [TITLE] title.. [RATING] r [REVIEW] review..``
(the fields a dataset lacks, or the configuration leaves out, are skipped); ``[FEAT]`` is the
slot where the model adds the projected item feature vector (a soft token, UniMP's image input).
:meth:`HistorySerializer.parse` reads a serialised history back into events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from polyrec.data.interleaved import Event, InterleavedLog
from polyrec.errors import PolyrecError
from polyrec.models.generative.semantic_ids import SemanticIdMap

SPECIALS: Final = (
    "[PAD]",
    "[BOS]",
    "[EOS]",
    "[SEP]",
    "[ITEM]",
    "[FEAT]",
    "[TITLE]",
    "[RATING]",
    "[REVIEW]",
    "[QUERY]",
    "[CAND]",
    "[ANS]",
)
TASKS: Final = ("next", "search", "rating", "explanation")
TASK_TOKENS: Final = ("[NEXT]", "[SEARCH]", "[RATE]", "[EXPLAIN]")
SPECIAL_ID: Final = {name: i for i, name in enumerate(SPECIALS + TASK_TOKENS)}
PAD_ID: Final = 0
HISTORY_FIELDS: Final = ("feature", "title", "rating", "review")


class TextTokenizer:
    """A tokenizer of the ``tokenizers`` library (BERT normaliser: lower case, accents
    stripped), trained on given texts or restored from its JSON string; :meth:`as_transformers`
    gives it as a :class:`transformers.PreTrainedTokenizerFast` (not used internally: importing
    transformers costs seconds)."""

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self.json = tokenizer_json
        self.tok = Tokenizer.from_str(tokenizer_json)

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int) -> TextTokenizer:
        """Learn a BPE vocabulary of at most ``vocab_size`` entries from ``texts``, words
        split at spaces and marked with SentencePiece's word-start ``\u2581`` (as T5's
        tokenizer), so that decoding restores the normalised text exactly.

        Not WordPiece: the ``tokenizers`` WordPiece trainer numbers its ``##`` pieces in
        hash-map order and breaks merge ties by those numbers, so the same texts give another
        vocabulary in every process (huggingface/tokenizers#1794), and with it another model
        for the same seed. The BPE trainer without a continuing-subword prefix is
        deterministic.
        """
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"])
        tok.train_from_iterator([t for t in texts if t], trainer=trainer)
        return cls(tok.to_str())

    def as_transformers(self) -> Any:
        """The tokenizer as a ``transformers.PreTrainedTokenizerFast``."""
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(self.json), unk_token="[UNK]"
        )

    @property
    def vocab_size(self) -> int:
        return int(self.tok.get_vocab_size())

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens)."""
        if not texts:
            return []
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids."""
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def normalize(self, text: str) -> str:
        """What ``decode(encode(text))`` gives: the text as the model sees it."""
        return self.decode(self.encode([text])[0])


@dataclass(frozen=True)
class UnifiedVocab:
    """Id layout of the unified vocabulary (see module docstring)."""

    rating_levels: tuple[float, ...]
    sid_vocab: tuple[int, ...]
    text_size: int

    @property
    def rating_offset(self) -> int:
        return len(SPECIAL_ID)

    @property
    def sid_offsets(self) -> tuple[int, ...]:
        """First id of each depth's semantic-ID block."""
        start = self.rating_offset + len(self.rating_levels)
        return tuple(int(x) for x in start + np.cumsum([0, *self.sid_vocab[:-1]]))

    @property
    def text_offset(self) -> int:
        return self.rating_offset + len(self.rating_levels) + sum(self.sid_vocab)

    @property
    def size(self) -> int:
        return self.text_offset + self.text_size

    def output_groups(self) -> np.ndarray:
        """Per token, the group a decoding step chooses it from: 0 special tokens, 1 ratings,
        2 + d the semantic-ID codes of depth d, then text tokens with ``[EOS]`` (explanations
        end there)."""
        groups = np.zeros(self.size, np.int64)
        groups[self.rating_offset : self.sid_offsets[0]] = 1
        for d, lo in enumerate(self.sid_offsets):
            groups[lo : lo + self.sid_vocab[d]] = 2 + d
        text = 2 + len(self.sid_vocab)
        groups[self.text_offset :] = text
        groups[SPECIAL_ID["[EOS]"]] = text
        return groups

    def rating_tokens(self, ratings: np.ndarray) -> np.ndarray:
        """Token of the nearest rating level of each rating."""
        levels = np.asarray(self.rating_levels)
        nearest = np.abs(np.asarray(ratings, np.float64)[:, None] - levels).argmin(1)
        return self.rating_offset + nearest

    def sid_tokens(self, codes: np.ndarray) -> np.ndarray:
        """Semantic-ID codes ``(n, depth)`` -> token ids."""
        return np.asarray(codes, np.int64) + np.asarray(self.sid_offsets)

    def text_tokens(self, ids: Sequence[int]) -> np.ndarray:
        return np.asarray(ids, np.int64) + self.text_offset


@dataclass
class Tokens:
    """Ragged token rows: row ``r`` is ``ids[indptr[r]:indptr[r+1]]``; ``feats`` is item + 1 at
    ``[FEAT]`` slots and 0 elsewhere."""

    ids: np.ndarray
    feats: np.ndarray
    indptr: np.ndarray

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[r], self.indptr[r + 1]
        return self.ids[lo:hi], self.feats[lo:hi]

    def span(self, lo_row: int, hi_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``lo_row..hi_row-1`` concatenated (one slice: rows are contiguous)."""
        lo, hi = self.indptr[lo_row], self.indptr[hi_row]
        return self.ids[lo:hi], self.feats[lo:hi]


def ragged(rows: Sequence[np.ndarray], feats: Sequence[np.ndarray] | None = None) -> Tokens:
    """Pack token rows (and their feature rows, default zeros) into :class:`Tokens`."""
    lengths = np.array([len(r) for r in rows], np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate(rows).astype(np.int64) if len(rows) else np.zeros(0, np.int64)
    if feats is None:
        f = np.zeros(len(ids), np.int64)
    else:
        f = np.concatenate(feats).astype(np.int64) if len(feats) else np.zeros(0, np.int64)
    return Tokens(ids, f, indptr)


class HistorySerializer:
    """Turns items and events into unified tokens (module docstring) and back.

    ``item_text`` holds each item's title token ids (text ids of :class:`TextTokenizer`, already
    truncated); ``fields`` the optional event fields to write (:data:`HISTORY_FIELDS`).
    """

    def __init__(
        self,
        vocab: UnifiedVocab,
        id_map: SemanticIdMap,
        tokenizer: TextTokenizer,
        item_text: Tokens,
        fields: Sequence[str] = HISTORY_FIELDS,
        max_review_tokens: int = 8,
    ) -> None:
        unknown = set(fields) - set(HISTORY_FIELDS)
        if unknown:
            raise PolyrecError(f"unknown history fields {sorted(unknown)}; use {HISTORY_FIELDS}")
        self.vocab, self.id_map, self.tokenizer = vocab, id_map, tokenizer
        self.fields = tuple(fields)
        self.max_review_tokens = max_review_tokens
        self.items = self._item_chunks(item_text)

    def _item_chunks(self, item_text: Tokens) -> Tokens:
        """Per item: ``[ITEM] sid.. [FEAT] [TITLE] title..``."""
        sid = self.vocab.sid_tokens(self.id_map.codes)
        rows, feats = [], []
        for i in range(self.id_map.n_items):
            parts = [[SPECIAL_ID["[ITEM]"]], sid[i]]
            f = [np.zeros(1 + sid.shape[1], np.int64)]
            if "feature" in self.fields:
                parts.append([SPECIAL_ID["[FEAT]"]])
                f.append(np.array([i + 1]))
            if "title" in self.fields:
                title = self.vocab.text_tokens(item_text.row(i)[0])
                parts.append(np.concatenate([[SPECIAL_ID["[TITLE]"]], title]))
                f.append(np.zeros(1 + len(title), np.int64))
            rows.append(np.concatenate(parts).astype(np.int64))
            feats.append(np.concatenate(f))
        return ragged(rows, feats)

    def item(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and feature slots of one item (its part of an event)."""
        return self.items.row(item)

    def events(self, log: InterleavedLog) -> Tokens:
        """One token row per event of ``log`` (flat positions), in the log's order."""
        n = len(log.items)
        rating_tok = None
        if "rating" in self.fields and log.ratings is not None:
            known = ~np.isnan(log.ratings)
            rating_tok = np.where(known, self.vocab.rating_tokens(np.nan_to_num(log.ratings)), -1)
        review_tok: list[list[int]] | None = None
        if "review" in self.fields and log.reviews is not None:
            texts = ["" if r is None else str(r) for r in log.reviews]
            review_tok = self.tokenizer.encode(texts)
        rows, feats = [], []
        for j in range(n):
            ids, f = self.items.row(int(log.items[j]))
            parts, fparts = [ids], [f]
            if rating_tok is not None and rating_tok[j] >= 0:
                parts.append(np.array([SPECIAL_ID["[RATING]"], rating_tok[j]]))
                fparts.append(np.zeros(2, np.int64))
            if review_tok is not None and log.reviews is not None and log.reviews[j] is not None:
                rev = self.vocab.text_tokens(review_tok[j][: self.max_review_tokens])
                parts.append(np.concatenate([[SPECIAL_ID["[REVIEW]"]], rev]))
                fparts.append(np.zeros(1 + len(rev), np.int64))
            rows.append(np.concatenate(parts).astype(np.int64))
            feats.append(np.concatenate(fparts))
        return ragged(rows, feats)

    def parse(self, ids: np.ndarray) -> list[Event]:
        """Events of a serialised history (inverse of :meth:`events` up to text normalisation
        and truncation); a malformed sequence is a :class:`PolyrecError`."""
        depth = self.id_map.depth
        starts = np.flatnonzero(ids == SPECIAL_ID["[ITEM]"])
        if len(ids) and (len(starts) == 0 or starts[0] != 0):
            raise PolyrecError("a serialised history must start with [ITEM]")
        out = []
        for lo, hi in zip(starts, [*starts[1:], len(ids)], strict=True):
            chunk = ids[lo:hi]
            codes = chunk[1 : 1 + depth] - np.asarray(self.vocab.sid_offsets)
            item = int(self.id_map.items_of(codes[None])[0])
            if item < 0:
                raise PolyrecError(f"event at token {lo}: {codes.tolist()} is no item's ID")
            fields = self._fields(chunk[1 + depth :])
            rating = None
            if "[RATING]" in fields:
                level = int(fields["[RATING]"][0]) - self.vocab.rating_offset
                rating = float(self.vocab.rating_levels[level])
            review = None
            if "[REVIEW]" in fields:
                review = self.tokenizer.decode(fields["[REVIEW]"] - self.vocab.text_offset)
            out.append(Event(item, rating, review))
        return out

    @staticmethod
    def _fields(tail: np.ndarray) -> dict[str, np.ndarray]:
        """Split an event's tokens after its ID into ``marker -> following tokens``."""
        markers = {SPECIAL_ID[m]: m for m in ("[FEAT]", "[TITLE]", "[RATING]", "[REVIEW]")}
        pos = [i for i, t in enumerate(tail.tolist()) if t in markers]
        return {
            markers[int(tail[p])]: tail[p + 1 : q]
            for p, q in zip(pos, [*pos[1:], len(tail)], strict=True)
        }

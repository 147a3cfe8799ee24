"""User preferences in natural language, distilled from a user's recent items and reviews.

Mender (Paischer et al., "Preference Discerning with LLM-Enhanced Generative Retrieval", TMLR
2025, Section 3) has an LLM read, for every (user, time step), the last <= 5 items the user
bought with their reviews and write up to five short preferences, positive ("Prefers ...") and
negative ("Avoid ..."), without brands or product names. A preference is *negative* when it
starts with "Avoid", "Exclude" or "No" (the rule of the official code).

:class:`PreferenceGenerator` is the interface; three backends:

- :class:`ExtractiveGenerator` needs no model: it takes the aspect of each item (its category,
  else the content words of its title or review) and the review's sentiment (from the rating,
  or review words when there is no rating) and writes template preferences
  ("Prefers skincare", "Avoid fragrance").
- :class:`LLMGenerator` prompts a Hugging Face ``transformers`` causal or seq2seq model (by name
  or local folder, offline, or objects passed in) with a prompt like the paper's and parses the
  ``{"instructions": [...]}`` answer.
- :class:`OpenAIChatGenerator` sends the same prompt to an OpenAI-compatible
  ``/chat/completions`` endpoint over HTTP (standard library only) and parses the reply the same
  way (:func:`parse_preferences`).

:func:`user_preferences` runs a generator over every (user, step) of a dataset's sequences and
caches the result in a JSON-lines file that can be shared (keyed by external user id and step).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError

NEGATIVE_PREFIXES: Final = ("avoid", "exclude", "no ")
_STOP = frozenset(
    "a an the and or of for with to in on at by from this that these those it its is are was "
    "were be been i my me we you your they them he she his her not no very so too as but if "
    "than then just also all any some more most much many new set pack oz ml fl ounce count "
    "inch x piece pieces size item product".split()
)
_POSITIVE_WORDS = frozenset(
    "love loved like liked great excellent good nice perfect best amazing wonderful works "
    "recommend happy favorite soft smooth gentle pleased beautiful awesome".split()
)
_NEGATIVE_WORDS = frozenset(
    "hate hated terrible awful bad poor broke broken disappointed disappointing worst waste "
    "return returned regret cheap irritated irritation smell smells sticky greasy useless "
    "not".split()
)


@dataclass(frozen=True)
class ItemReview:
    """One item in a preference window: its text, the user's review and rating."""

    title: str = ""
    category: str = ""
    review: str = ""
    rating: float | None = None


def is_negative(preference: str) -> bool:
    """Whether a preference is negative ("Avoid ...", "Exclude ...", "No ...")."""
    return preference.strip().lower().startswith(NEGATIVE_PREFIXES)


def review_sentiment(item: ItemReview) -> int:
    """+1, -1 or 0: from the rating (>= 4 / <= 2) when there is one, else (or for 3 stars) from
    positive minus negative review words."""
    if item.rating is not None and not np.isnan(item.rating):
        if item.rating >= 4:
            return 1
        if item.rating <= 2:
            return -1
    words = _words(item.review)
    score = sum(w in _POSITIVE_WORDS for w in words) - sum(w in _NEGATIVE_WORDS for w in words)
    return int(np.sign(score))


class PreferenceGenerator(ABC):
    """Writes at most ``max_preferences`` short preferences for a window of recent items."""

    max_preferences: int = 5

    @property
    @abstractmethod
    def name(self) -> str:
        """Identifies the generator and its settings (part of the cache key)."""

    @abstractmethod
    def generate(self, window: Sequence[ItemReview]) -> list[str]:
        """Preferences for one window (oldest item first)."""

    def generate_many(self, windows: Sequence[Sequence[ItemReview]]) -> list[list[str]]:
        """Preferences for several windows (backends may batch)."""
        return [self.generate(w) for w in windows]


class ExtractiveGenerator(PreferenceGenerator):
    """Template preferences from item aspects and review sentiment, no model needed.

    Most recent items first; a positive review gives "Prefers <aspect>", a negative one
    "Avoid <aspect>", a neutral one nothing; duplicates are dropped.
    """

    def __init__(self, max_preferences: int = 5, aspect_words: int = 3) -> None:
        self.max_preferences = max_preferences
        self.aspect_words = aspect_words

    @property
    def name(self) -> str:
        return f"extractive-{self.max_preferences}-{self.aspect_words}"

    def aspect(self, item: ItemReview) -> str:
        """The item's category, else the first content words of its title, else its review."""
        if item.category.strip():
            return item.category.strip().lower()
        for text in (item.title, item.review):
            words = [w for w in _words(text) if w not in _STOP and not w.isdigit() and len(w) > 2]
            if words:
                return " ".join(words[: self.aspect_words])
        return ""

    def generate(self, window: Sequence[ItemReview]) -> list[str]:
        out: list[str] = []
        for item in reversed(window):
            aspect, sentiment = self.aspect(item), review_sentiment(item)
            if not aspect or sentiment == 0:
                continue
            text = f"Prefers {aspect}" if sentiment > 0 else f"Avoid {aspect}"
            if text not in out:
                out.append(text)
            if len(out) == self.max_preferences:
                break
        return out


PROMPT: Final = (
    "Here is a list of items a user bought along with their reviews, as JSON objects:\n"
    "{items}\n"
    "Write up to five short search instructions that describe this user's preferences: what "
    "they like, what they dislike and what should be avoided (start those with 'Avoid'). Do not "
    "mention brands or specific products, delivery or price. Answer in JSON with the key "
    '"instructions".\n'
)
ANSWER_PREFIX: Final = '{"instructions": ["'


class LLMGenerator(PreferenceGenerator):
    """Preferences from a ``transformers`` language model (causal or seq2seq), offline.

    Args:
        model: a model name in the local Hugging Face cache or a local folder, or a loaded
            ``PreTrainedModel``.
        tokenizer: the tokenizer when ``model`` is an object (else loaded with the model).
        max_new_tokens: generation length (the paper: 512).
        greedy: greedy decoding (reproducible); else sampling with the paper's
            ``top_p=0.9, temperature=0.6``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        max_new_tokens: int = 128,
        greedy: bool = True,
        max_preferences: int = 5,
    ) -> None:
        self.max_preferences = max_preferences
        self.max_new_tokens = max_new_tokens
        self.greedy = greedy
        if isinstance(model, str | Path):
            self._label = str(model)
            self.model, self.tokenizer = _load_lm(str(model))
        else:
            if tokenizer is None:
                raise PolyrecError("LLMGenerator: pass the tokenizer with a model object")
            self._label = type(model).__name__
            self.model, self.tokenizer = model, tokenizer
        self.model.eval()

    @property
    def name(self) -> str:
        return f"llm-{self._label}-{self.max_new_tokens}-{'greedy' if self.greedy else 'sample'}"

    def prompt(self, window: Sequence[ItemReview]) -> str:
        """The prompt for one window followed by the start of the answer (the paper's
        assistant prefix)."""
        return window_prompt(window) + ANSWER_PREFIX

    def generate(self, window: Sequence[ItemReview]) -> list[str]:
        import torch

        text = self.prompt(window)
        enc = self.tokenizer(text, return_tensors="pt")
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.greedy:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, top_p=0.9, temperature=0.6)
        pad = self.tokenizer.pad_token_id
        kwargs["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        if not self.model.config.is_encoder_decoder:
            out = out[:, enc["input_ids"].shape[1] :]
        answer = self.tokenizer.decode(out[0], skip_special_tokens=True)
        return parse_preferences(ANSWER_PREFIX + answer, self.max_preferences)


def window_prompt(window: Sequence[ItemReview]) -> str:
    """The request for one window: :data:`PROMPT` with the items as JSON objects (reviews
    included)."""
    items = [
        {
            k: v
            for k, v in {
                "title": w.title,
                "category": w.category,
                "review": w.review,
                "rating": w.rating,
            }.items()
            if v not in ("", None)
        }
        for w in window
    ]
    return PROMPT.format(items="\n".join(json.dumps(i) for i in items))


class OpenAIChatGenerator(PreferenceGenerator):
    """Preferences from an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp
    server, Ollama, ...): one ``POST {base_url}/chat/completions`` per window with the prompt of
    :func:`window_prompt` as the user message; the reply's text is parsed by
    :func:`parse_preferences`.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (``http`` or ``https``).
        model: the model name the endpoint serves.
        api_key_env: name of the environment variable holding the API key, sent as
            ``Authorization: Bearer``; unset or empty sends none. The key itself is never an
            argument, so it cannot end up in a config file or the cache key.
        temperature, max_tokens: sent with each request (0.0: as reproducible as the endpoint
            allows; the paper samples at 0.6).
        timeout: seconds per request.
        retries: further attempts after a connection error, a timeout, HTTP 408, 429 or 5xx,
            waiting ``backoff * 2**attempt`` seconds (longer if the server's ``Retry-After``
            says so, at most 60 s); other HTTP errors fail at once.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 128,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_preferences: int = 5,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise PolyrecError(f"preference endpoint {base_url!r}: use an http(s):// URL")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_preferences = max_preferences

    @property
    def name(self) -> str:
        return f"openai-{self.model}-{self.max_tokens}-t{self.temperature:g}"

    def request_body(self, window: Sequence[ItemReview]) -> dict[str, Any]:
        """The JSON body sent for one window."""
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": window_prompt(window)}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def generate(self, window: Sequence[ItemReview]) -> list[str]:
        raw = self._post(json.dumps(self.request_body(window)).encode())
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise PolyrecError(
                f"preference endpoint {self.url}: malformed reply {_one_line(raw)!r}"
            ) from exc
        if not isinstance(content, str):
            raise PolyrecError(
                f"preference endpoint {self.url}: the reply has no text content ({content!r})"
            )
        return parse_preferences(content, self.max_preferences)

    def _post(self, body: bytes) -> bytes:
        """POST with retries (class docstring); the response body, else a PolyrecError."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        attempt = 0
        while True:
            wait = self.backoff * 2**attempt
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                detail = _one_line(exc.read())
                error = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
                transient = exc.code in (408, 429) or exc.code >= 500
                after = exc.headers.get("Retry-After", "") if exc.headers else ""
                if after.replace(".", "", 1).isdigit():
                    wait = max(wait, min(float(after), 60.0))
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                error, transient = f"{type(exc).__name__}: {reason}", True
            if not transient or attempt >= self.retries:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                raise PolyrecError(f"preference endpoint {self.url}: {_one_line(error)}{tries}")
            time.sleep(wait)
            attempt += 1


def parse_preferences(answer: str, limit: int = 5) -> list[str]:
    """Preferences from a model answer: the ``instructions`` list of its first JSON object,
    else its non-empty lines without bullets; at most ``limit``, duplicates dropped."""
    items: list[str] = []
    match = re.search(r"\{.*?\}", answer, flags=re.S)
    if match:
        try:
            data = json.loads(match.group(0))
            if isinstance(data, dict) and isinstance(data.get("instructions"), list):
                items = [str(x) for x in data["instructions"]]
        except json.JSONDecodeError:
            items = []
    if not items:
        body = answer.removeprefix(ANSWER_PREFIX)
        items = [re.sub(r'^[\s\-*\d.)"\[\]]+|[\s",\]}]+$', "", line) for line in body.splitlines()]
    out: list[str] = []
    for item in items:
        item = " ".join(item.split())
        if item and item not in out:
            out.append(item)
    return out[:limit]


def _load_lm(where: str) -> tuple[Any, Any]:
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSeq2SeqLM,
            AutoTokenizer,
        )

        config = AutoConfig.from_pretrained(where, local_files_only=True)
        cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = cls.from_pretrained(where, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
    except ImportError as exc:
        raise PolyrecError("LLMGenerator needs transformers: pip install transformers") from exc
    except OSError as exc:
        raise PolyrecError(f"language model {where!r} is not available offline") from exc
    return model, tokenizer


# ---------------------------------------------------------------------- per (user, step)
@dataclass
class PreferenceTable:
    """Preferences per (user, step): ``prefs[u][t]`` were written after the user's ``t``-th
    item (0-based, time order), from the window of items ``t - window + 1 .. t``."""

    prefs: dict[int, dict[int, list[str]]]
    generator: str

    def at(self, user: int, step: int) -> list[str]:
        """Preferences of ``user`` at ``step`` (or the latest earlier step); ``[]`` if none."""
        steps = self.prefs.get(int(user), {})
        earlier = [s for s in steps if s <= step]
        return steps[max(earlier)] if earlier else []

    def accumulated(self, user: int, step: int) -> list[str]:
        """Every distinct preference of ``user`` up to ``step`` (history consolidation)."""
        out: list[str] = []
        for s in sorted(self.prefs.get(int(user), {})):
            if s <= step:
                out.extend(p for p in self.prefs[int(user)][s] if p not in out)
        return out


def item_reviews(ds: Dataset) -> list[ItemReview]:
    """Per interaction (dataset order), the :class:`ItemReview` of its item and review."""
    n = ds.n_interactions
    data = ds.item_data
    titles = _column(data, "title", ds.n_items)
    cats = _column(data, "category", ds.n_items)
    if not any(cats) and data is not None and "categories" in data.columns:
        cats = [
            re.split(r"[,']+\s*", c.strip("[]' "))[-1] if c else ""
            for c in _column(data, "categories", ds.n_items)
        ]
    reviews = _column(ds.interaction_data, "review", n)
    ratings = ds.ratings if ds.ratings is not None else np.full(n, np.nan, np.float32)
    return [
        ItemReview(titles[i], cats[i], reviews[j], float(ratings[j]))
        for j, i in enumerate(ds.items.tolist())
    ]


def user_preferences(
    ds: Dataset,
    generator: PreferenceGenerator,
    *,
    window: int = 5,
    last_n: int | None = 20,
    cache_path: str | Path | None = None,
) -> PreferenceTable:
    """Run ``generator`` on every (user, step) of ``ds`` (the last ``last_n`` steps of each user;
    the paper uses 20) with a window of ``window`` items; reuses and extends ``cache_path``."""
    cache: dict[tuple[str, int], list[str]] = {}
    path = Path(cache_path) if cache_path is not None else None
    if path is not None and path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("generator") == generator.name:
                cache[(str(rec["user"]), int(rec["step"]))] = list(rec["preferences"])
    reviews = item_reviews(ds)
    seqs = ds.sequences
    order = ds.order
    ext = ds.user_ids.external
    prefs: dict[int, dict[int, list[str]]] = {}
    todo: list[tuple[int, int, list[ItemReview]]] = []
    for u in np.flatnonzero(np.diff(seqs.indptr) > 0).tolist():
        lo, hi = int(seqs.indptr[u]), int(seqs.indptr[u + 1])
        first = lo if last_n is None else max(lo, hi - last_n)
        for pos in range(first, hi):
            step = pos - lo
            key = (str(ext[u]), step)
            if key in cache:
                prefs.setdefault(u, {})[step] = cache[key]
            else:
                win = [reviews[j] for j in order[max(lo, pos - window + 1) : pos + 1]]
                todo.append((u, step, win))
    new = generator.generate_many([w for _, _, w in todo])
    for (u, step, _), p in zip(todo, new, strict=True):
        prefs.setdefault(u, {})[step] = p
    if path is not None and todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            for (u, step, _), p in zip(todo, new, strict=True):
                rec = {
                    "generator": generator.name,
                    "user": str(ext[u]),
                    "step": step,
                    "preferences": p,
                }
                fh.write(json.dumps(rec) + "\n")
    return PreferenceTable(prefs, generator.name)


def _column(frame: Any, name: str, n: int) -> list[str]:
    if frame is None or name not in frame.columns:
        return [""] * n
    col = frame[name]
    return col.astype(object).where(col.notna(), "").astype(str).tolist()


def _one_line(text: bytes | str, limit: int = 200) -> str:
    """A reply or error squeezed onto one short line (for error messages)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return " ".join(str(text).split())[:limit]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z'-]*", text.lower())

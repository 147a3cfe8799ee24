"""Item image embeddings from image files with a CLIP-family model.

The model is a sentence-transformers CLIP model (e.g. ``clip-ViT-B-32``, whose ``encode``
takes PIL images; Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021), named on the Hugging Face hub or given as a local folder. Any object
with the same ``encode(images, batch_size=...)`` method can be passed instead (an
:class:`ImageEncoder`), which is how tests run a tiny randomly initialised network offline.

:func:`embed_item_images` finds each item's image in a folder by a file-name pattern, embeds
the images found and returns an ``(n_items, d)`` matrix with zero rows (and ``False`` in the
returned mask) for items without an image, so the matrix can go straight into
``Dataset.item_vectors`` beside the text features.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError

DEFAULT_IMAGE_MODEL = "clip-ViT-B-32"


class ImageEncoder(Protocol):
    """What :func:`embed_images` needs: sentence-transformers' ``encode`` for images."""

    def encode(self, images: list[Any], batch_size: int = ..., **kwargs: Any) -> Any:
        """Embeddings of ``images`` (PIL images), one row each."""
        ...


class PixelEncoder:
    """A model-free :class:`ImageEncoder`: each image resized to ``size x size`` RGB, its
    pixels centred on the image's mean and flattened (``3 * size**2`` values). A weak but
    weight-free baseline for machines without a CLIP model (and for synthetic images)."""

    def __init__(self, size: int = 16) -> None:
        if size < 1:
            raise PolyrecError(f"pixel encoder size must be >= 1, got {size}")
        self.size = size

    def encode(self, images: list[Any], batch_size: int = 32, **kwargs: Any) -> np.ndarray:
        """``(len(images), 3 * size**2)`` float32 centred pixels of PIL images."""
        rows = [
            np.asarray(img.convert("RGB").resize((self.size, self.size)), np.float32).ravel()
            for img in images
        ]
        out = np.stack(rows) / 255.0
        return out - out.mean(axis=1, keepdims=True)


def load_image_encoder(model: str | Path = DEFAULT_IMAGE_MODEL, device: str = "cpu") -> Any:
    """A sentence-transformers CLIP model by hub name or local path, offline only (the local
    Hugging Face cache or a folder), with one clear error when sentence-transformers is missing
    or the model is not on this machine."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # never download weights at run time
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise PolyrecError(
            "image embeddings need sentence-transformers: pip install 'sentence-transformers>=3'"
        ) from exc
    try:
        path = Path(model).expanduser()
        where = str(path.resolve()) if path.exists() else str(model)
        return SentenceTransformer(where, device=device, local_files_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PolyrecError(
            f"image model {str(model)!r} is unavailable offline (not a local model folder nor in "
            f"the Hugging Face cache: {reason})"
        ) from exc


def embed_images(
    paths: Sequence[str | Path],
    model: str | Path | ImageEncoder = DEFAULT_IMAGE_MODEL,
    *,
    batch_size: int = 32,
    normalize: bool = True,
    device: str = "cpu",
) -> np.ndarray:
    """Embeddings ``(len(paths), d)`` float32 of the image files, L2-normalised by default."""
    from PIL import Image, UnidentifiedImageError

    encoder = model if hasattr(model, "encode") else load_image_encoder(model, device)  # type: ignore[arg-type]
    if not paths:
        raise PolyrecError("no image to embed")
    rows = []
    for start in range(0, len(paths), batch_size):
        images = []
        for path in paths[start : start + batch_size]:
            try:
                with Image.open(path) as img:
                    images.append(img.convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise PolyrecError(f"cannot read image {path}: {exc}") from exc
        out = encoder.encode(images, batch_size=batch_size)  # type: ignore[union-attr]
        rows.append(np.asarray(out.detach().cpu() if hasattr(out, "detach") else out))
    emb = np.concatenate(rows).astype(np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(paths):
        raise PolyrecError(
            f"image model returned shape {emb.shape} for {len(paths)} images; expected (n, d)"
        )
    if normalize:
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb


def embed_item_images(
    dataset: Dataset,
    image_dir: str | Path,
    model: str | Path | ImageEncoder = DEFAULT_IMAGE_MODEL,
    *,
    pattern: str = "{item}.jpg",
    batch_size: int = 32,
    normalize: bool = True,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Image embeddings of ``dataset``'s items: ``(matrix (n_items, d), has_image (n_items,))``.

    Item ``i``'s image is ``image_dir / pattern.format(item=external_id)``; items without a
    file get a zero row. At least one image must exist.
    """
    root = Path(image_dir)
    if not root.is_dir():
        raise PolyrecError(f"image folder {root} does not exist")
    candidates = [root / pattern.format(item=ext) for ext in dataset.item_ids.external.tolist()]
    has_image = np.fromiter((p.is_file() for p in candidates), bool, len(candidates))
    if not has_image.any():
        example = candidates[0].name if candidates else pattern
        raise PolyrecError(f"no item image found in {root} (looked for files like {example})")
    found = [p for p, ok in zip(candidates, has_image, strict=True) if ok]
    emb = embed_images(found, model, batch_size=batch_size, normalize=normalize, device=device)
    out = np.zeros((dataset.n_items, emb.shape[1]), np.float32)
    out[has_image] = emb
    return out, has_image

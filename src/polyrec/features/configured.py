"""The ``features:`` section of a run config: which item feature matrices a run attaches to its
dataset before splitting (text embeddings computed and cached, or MMRec ``*_feat.npy`` files)::

    features:
      text: {model: all-MiniLM-L6-v2, fields: [title, brand, categories], pca: 64}
      folder: /data/baby          # text_feat.npy / image_feat.npy, MMRec layout
      modalities: [image]         # read from ``folder``
      pca: 64
"""

from __future__ import annotations

from pydantic import Field

from polyrec.config import StrictModel
from polyrec.data.dataset import Dataset
from polyrec.features.matrix import attach_features, load_feature_matrices, reduce_pca
from polyrec.features.text import DEFAULT_FIELDS, DEFAULT_MODEL, embed_item_texts


class TextFeaturesConfig(StrictModel):
    """Sentence-transformers embeddings of the items' text fields (``item_vectors["text"]``)."""

    model: str = DEFAULT_MODEL
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_FIELDS))
    pca: int | None = Field(None, ge=1)


class FeaturesConfig(StrictModel):
    """Item features of a run; empty means none (ID-only models)."""

    text: TextFeaturesConfig | None = None
    folder: str | None = None
    modalities: list[str] = Field(default_factory=lambda: ["text", "image"])
    pca: int | None = Field(None, ge=1)

    @property
    def empty(self) -> bool:
        return self.text is None and self.folder is None


def attach_configured_features(ds: Dataset, cfg: FeaturesConfig, *, seed: int = 0) -> Dataset:
    """``ds`` with the configured feature matrices in ``item_vectors`` (rows = its items)."""
    features = {}
    if cfg.folder is not None:
        features = load_feature_matrices(cfg.folder, ds, cfg.modalities, pca=cfg.pca, seed=seed)
    if cfg.text is not None:
        text = embed_item_texts(ds, cfg.text.model, fields=cfg.text.fields, progress=False)
        features["text"] = (
            text if cfg.text.pca is None else reduce_pca(text, cfg.text.pca, seed=seed)
        )
    return attach_features(ds, features)

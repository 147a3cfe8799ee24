"""Model registry: name -> class, imported lazily. Adding a model = one file + one line here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from polyrec.errors import PolyrecError

if TYPE_CHECKING:
    from polyrec.models.base import Recommender

MODELS: dict[str, str] = {
    "pop": "polyrec.models.classic.pop:Pop",
    "itemknn": "polyrec.models.classic.itemknn:ItemKNN",
    "ease": "polyrec.models.classic.ease:EASE",
    "bpr": "polyrec.models.classic.bpr:BPRMF",
    "als": "polyrec.models.classic.als:ALS",
    "gfcf": "polyrec.models.graph.gfcf:GFCF",
    "lightgcn": "polyrec.models.graph.lightgcn:LightGCN",
    "ngcf": "polyrec.models.graph.ngcf:NGCF",
    "sasrec": "polyrec.models.sequential.sasrec:SASRec",
    "bert4rec": "polyrec.models.sequential.bert4rec:BERT4Rec",
    "gru4rec": "polyrec.models.sequential.gru4rec:GRU4Rec",
    "hstu": "polyrec.models.sequential.hstu:HSTU",
    "vbpr": "polyrec.models.multimodal.vbpr:VBPR",
    "freedom": "polyrec.models.multimodal.freedom:FREEDOM",
    "sisa": "polyrec.unlearn.sisa:SISA",
    "unlearned": "polyrec.unlearn.base:Unlearned",
    "tiger": "polyrec.models.generative.tiger:TIGER",
    "mender": "polyrec.models.generative.mender:Mender",
    "unimp": "polyrec.models.unified.unimp:UniMP",
}


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def get_model_class(name: str) -> type[Recommender]:
    """The class registered under ``name`` (case-insensitive)."""
    key = name.lower()
    if key not in MODELS:
        raise PolyrecError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    module, _, attr = MODELS[key].partition(":")
    return getattr(importlib.import_module(module), attr)

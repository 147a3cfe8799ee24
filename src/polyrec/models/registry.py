"""Model registry: name -> class, imported lazily. Adding a model = one file + one line here."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
    "mender-tok": "polyrec.models.generative.mender:MenderTok",
    "unimp": "polyrec.models.unified.unimp:UniMP",
}


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def get_model_class(name: str) -> type[Recommender]:
    """The class registered under ``name`` (case-insensitive)."""
    return load_registered(MODELS, name, "model")


def load_registered(table: Mapping[str, str], name: str, what: str) -> Any:
    """Import and return the ``"module:attr"`` that ``table`` maps ``name`` to
    (case-insensitive); an unknown name is one error listing the known ones."""
    key = name.lower()
    if key not in table:
        raise PolyrecError(f"unknown {what} {name!r}; available: {', '.join(sorted(table))}")
    module, _, attr = table[key].partition(":")
    return getattr(importlib.import_module(module), attr)

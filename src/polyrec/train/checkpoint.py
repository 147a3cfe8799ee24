"""Resumable training: what the :class:`~polyrec.train.trainer.Trainer` needs to continue a
fit where it stopped, written to one file after every epoch.

A CPU cannot run a paper's hundreds of epochs in one sitting (LightGCN's 1,000 on Gowalla
take about a day), so a fit with ``checkpoint: PATH`` saves, after each epoch, the weights,
the optimiser's state, both random generators (the batches' numpy generator and torch's), the
epoch history, the best epoch's weights, the early-stopping counters and the training seconds
spent. A later fit with the same path starts from that state: the epochs it then runs are the
ones an uninterrupted fit would have run, with the same weights (the tests check equality).

The file belongs to one model, config and training set: it stores a fingerprint of them and
a fit with another refuses it. Options that do not change what an epoch computes may differ
(:data:`RESUMABLE_OPTIONS`): more ``epochs`` or a larger ``max_seconds`` continue a finished
fit. The file is written atomically (a killed process leaves the previous epoch's file) and
loaded with ``torch.load(weights_only=True)``: tensors and plain Python values only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from polyrec.errors import PolyrecError

if TYPE_CHECKING:
    from polyrec.data.dataset import Dataset
    from polyrec.models.torch_base import TorchRecommender

FORMAT = 1
RESUMABLE_OPTIONS = frozenset(
    {"checkpoint", "epochs", "max_seconds", "patience", "eval_every", "progress", "device"}
)
"""Config options a resumed fit may change: when and how long to train, not what."""


def fingerprint(model: TorchRecommender, train: Dataset) -> dict[str, Any]:
    """What a checkpoint must match: the model, its config (but :data:`RESUMABLE_OPTIONS`)
    and the training data."""
    config = model.config.model_dump(mode="json", exclude=set(RESUMABLE_OPTIONS))
    return {"model": model.name, "config": config, "train": train.fingerprint()}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` through a temporary file, so ``path`` always holds a whole
    checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The state saved at ``path`` (``None`` if there is no file), after checking that it was
    written for the ``expected`` :func:`fingerprint`."""
    state = _read(Path(path))
    if state is None:
        return None
    found = state.get("fingerprint", {})
    if found != expected:
        raise PolyrecError(
            f"{path}: checkpoint of another run ({_difference(found, expected)}); "
            "delete it or choose another checkpoint path"
        )
    return state


def saved_history(path: str | Path) -> list[dict[str, Any]]:
    """The per-epoch history a checkpoint holds (empty if there is no file), for a caller that
    records a learning curve across resumed fits."""
    state = _read(Path(path))
    return [] if state is None else list(state["history"])


def _read(path: Path) -> dict[str, Any] | None:
    """The checkpoint file's contents, ``None`` if there is none; a one-line error if it is
    not a checkpoint of this format."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PolyrecError(f"{path}: not a readable polyrec checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PolyrecError(f"{path}: not a polyrec training checkpoint (format {FORMAT})")
    return state


def _difference(found: dict[str, Any], expected: dict[str, Any]) -> str:
    """The first fields that differ, as ``name: saved -> now``."""
    if found.get("model") != expected["model"]:
        return f"model: {found.get('model')} -> {expected['model']}"
    if found.get("train") != expected["train"]:
        return "the training data differ"
    saved, now = found.get("config", {}), expected["config"]
    keys = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    return ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys[:3])

"""The built-in unlearner of ``polyrec serve --unlearn METHOD``: forget requests reach the
served models, not only the store and the serving masks.

For a forget request, each served run is unlearned with :func:`polyrec.unlearn.run.unlearn_run`
(``retrain``, ``finetune``, ``sisa`` or ``mmrecun``) from the run as trained, with *every*
request up to this one: a retrain never learns again what an earlier request removed, and an
approximate method starts from the original model each time instead of stacking
approximations. Only what a run was trained on is passed (a user known from events alone has
nothing to unlearn); a run with nothing to forget is served as it is.

Output goes to ``OUT/<request id>/<i>-<run name>`` (the request file beside it), and a request
whose output exists is not computed again, so the service's restart serves the latest
unlearned models at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrec.experiment import MODEL_DIR
from polyrec.models.base import Recommender
from polyrec.record import RECORD_FILE
from polyrec.serve.store import ForgetRecord
from polyrec.unlearn import check_method
from polyrec.unlearn.request import ForgetRequest
from polyrec.unlearn.run import unlearn_run


class RunUnlearner:
    """Unlearns the served ``runs`` with ``method`` for each forget request (module docstring);
    an :data:`~polyrec.serve.service.Unlearner`."""

    def __init__(
        self,
        runs: Sequence[Path],
        method: str,
        out_dir: Path,
        *,
        data_dir: Path | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        check_method(method)  # at start, not at the first forget request
        self.runs = [Path(r) for r in runs]
        self.method, self.out_dir, self.data_dir = method, Path(out_dir), data_dir
        self.options = dict(options or {})

    def __call__(self, record: ForgetRecord, upto: Sequence[ForgetRecord]) -> list[Path]:
        folder = self.out_dir / record.id
        served = []
        for i, run in enumerate(self.runs):
            out = folder / f"{i}-{run.name}"
            if not (out / RECORD_FILE).is_file():
                request = trained_part(Recommender.load(run / MODEL_DIR), upto)
                if request is None:
                    served.append(run)
                    continue
                forget_file = folder / f"{i}-forget.json"
                folder.mkdir(parents=True, exist_ok=True)
                forget_file.write_text(json.dumps(request.to_dict()))
                unlearn_run(
                    run,
                    forget_file,
                    self.method,
                    out,
                    data_dir=self.data_dir,
                    options=self.options,
                    command=f"polyrec serve --unlearn {self.method} (forget request {record.id})",
                )
            served.append(out)
        return served


def trained_part(model: Recommender, requests: Sequence[ForgetRecord]) -> ForgetRequest | None:
    """The users, items and interactions of ``requests`` that ``model`` was trained on (its
    ``seen`` matrix) as one :class:`ForgetRequest`, or None when there are none."""
    assert model.user_ids is not None and model.item_ids is not None and model.seen is not None
    seen = model.seen.tocsr()
    users = {str(u): i for i, u in enumerate(model.user_ids.external)}
    items = {str(v): i for i, v in enumerate(model.item_ids.external)}
    active_items = seen.getnnz(axis=0) > 0
    forget_users: dict[str, None] = {}
    forget_items: dict[str, None] = {}
    pairs: dict[tuple[str, str], None] = {}
    for r in requests:
        user = users.get(r.user_id) if r.user_id is not None else None
        if r.kind == "user" and user is not None and seen[user].nnz:
            forget_users[str(r.user_id)] = None
        elif r.kind == "items":
            forget_items.update(
                (i, None) for i in r.item_ids if i in items and active_items[items[i]]
            )
        elif r.kind == "interactions" and user is not None:
            row = set(seen[user].indices.tolist())
            pairs.update(((str(r.user_id), i), None) for i in r.item_ids if items.get(i) in row)
    # an interaction of a forgotten user or item is forgotten with them
    kept = [p for p in pairs if p[0] not in forget_users and p[1] not in forget_items]
    if not (forget_users or forget_items or kept):
        return None
    return ForgetRequest(
        users=tuple(forget_users), items=tuple(forget_items), interactions=tuple(kept)
    )

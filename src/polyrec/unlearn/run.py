"""``polyrec unlearn``: apply a forget request to a saved run and record the result.

The run's data is prepared again exactly as recorded; the request is applied to its training
part; the unlearned model is saved with a run record whose ``metrics.test`` holds the
forget/retain report of :func:`polyrec.unlearn.evaluate.unlearning_report` (retain-test
utility, forget-set recall and rank, membership-attack AUC, seconds).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from polyrec.experiment import MODEL_DIR, load_run
from polyrec.record import RunRecord, command_line, now_utc, peak_rss_mb, versions
from polyrec.unlearn import unlearn
from polyrec.unlearn.evaluate import unlearning_report
from polyrec.unlearn.request import ForgetRequest, apply_request


def unlearn_run(
    run_dir: str | Path,
    forget_file: str | Path,
    method: str,
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    options: dict[str, Any] | None = None,
    command: str | None = None,
) -> RunRecord:
    """Unlearn ``forget_file`` from the model of ``run_dir`` with ``method``; write ``out_dir``
    (``model/`` and ``record.json``) and return the record."""
    request = ForgetRequest.from_file(forget_file)  # a bad file fails before any loading
    record, data, model = load_run(run_dir, data_dir)
    train = data.split.train
    applied = apply_request(train, request)
    kwargs = dict(options or {})
    valid = data.split.valid
    # MMRecUn's stopping rule compares forgotten pairs with held-out ones: the run's validation
    reference = method == "mmrecun" and valid is not None and valid.n_interactions > 0
    if reference:
        kwargs.setdefault("reference", valid)
    if method == "retrain" and valid is not None:
        # the gold model is fitted as the run was: early-stopped on validation, which loses
        # the forgotten users' and items' rows too
        gone = np.isin(valid.users, applied.users) | np.isin(valid.items, applied.items)
        kwargs.setdefault("valid", valid.with_interactions(~gone))
    start = time.perf_counter()
    out_model = unlearn(model, train, request, method, **kwargs)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    report = unlearning_report(out_model, applied, data.split.test, seconds=seconds)
    eval_seconds = time.perf_counter() - start
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    out_model.save(out / MODEL_DIR)
    result = RunRecord(
        model=record.model,
        dataset=record.dataset,
        dataset_fingerprint=record.dataset_fingerprint,
        protocol={
            **record.protocol,
            "unlearning": {
                "method": method,
                "options": dict(options or {}),
                "forget_file": str(forget_file),
                "source_run": str(run_dir),
                "forget_interactions": applied.forget.n_interactions,
                "stopping_reference": "valid" if reference else None,
            },
        },
        config=record.config,
        metrics={"test": {k: float(v) for k, v in report.items()}},
        timings={"fit_seconds": seconds, "eval_seconds": eval_seconds},
        peak_rss_mb=peak_rss_mb(),
        versions=versions(),
        seed=record.seed,
        command=command or command_line(),
        created_at=now_utc(),
    )
    result.save(out)
    return result

"""How much signal the synthetic CTR suite's data holds: an oracle that knows the generator.

Scores each test sample of ``configs/synthetic-ctr/`` by the dot product between the
target item's true latent vector and the mean of the last ``n`` history items' vectors, and
reports its test AUC, for the suite's generator options and with ``--temperature`` replaced
(the generator's default 0.3 against the suite's 0.1). Writes
``results/ctr_synthetic_oracle.json``.

    OMP_NUM_THREADS=1 python benchmarks/ctr_synthetic_oracle.py --temperature 0.3 0.1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from polyrec.config import build, load_yaml
from polyrec.data.ctr import BehaviorLog, build_ctr_samples
from polyrec.data.registry import load_dataset
from polyrec.eval.ctr_metrics import auc
from polyrec.models.ranking.experiment import CTRRunConfig

ROOT = Path(__file__).resolve().parent
CONFIG = ROOT.parent / "configs" / "synthetic-ctr" / "dare.yaml"


def oracle_auc(temperature: float, lasts: list[int]) -> dict[str, float]:
    """Test AUC of the latent-vector oracle over the last ``n`` behaviours, for each ``n``."""
    cfg = build(CTRRunConfig, load_yaml(CONFIG)).data
    ds = load_dataset("synthetic", **{**cfg.options, "temperature": temperature})
    data = build_ctr_samples(BehaviorLog.from_dataset(ds, cfg.category), cfg.protocol)
    vectors = ds.item_vectors["latent"][data.item_ids.astype(np.int64)]  # row i: item i + 1
    test, log = data.test, data.test.log
    target = vectors[test.item - 1]
    out = {}
    for n in lasts:
        scores = np.empty(len(test))
        for i in range(len(test)):
            hist = log.items[max(test.hist_start[i], test.hist_end[i] - n) : test.hist_end[i]]
            scores[i] = vectors[hist - 1].mean(0) @ target[i]
        out[f"last_{n}"] = float(auc(test.label, scores))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temperature", type=float, nargs="+", default=[0.3, 0.1])
    ap.add_argument("--last", type=int, nargs="+", default=[20, 1000])
    args = ap.parse_args()
    out = {str(t): oracle_auc(t, args.last) for t in args.temperature}
    path = ROOT / "results" / "ctr_synthetic_oracle.json"
    path.write_text(
        json.dumps({"config": str(CONFIG.relative_to(ROOT.parent)), "auc": out}, indent=1) + "\n"
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

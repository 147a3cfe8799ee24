"""Evaluation: ranking metrics, the full-ranking evaluator, beyond-accuracy, significance."""

from polyrec.eval.beyond import BEYOND_METRICS, BeyondAccuracy, gini, intra_list_diversity
from polyrec.eval.evaluator import EvalResult, SampledSpec, evaluate
from polyrec.eval.metrics import RANKING_METRICS, ranking_metrics
from polyrec.eval.significance import (
    benjamini_hochberg,
    compare_runs,
    holm,
    paired_tests,
    summarize_seeds,
)

__all__ = [
    "BEYOND_METRICS",
    "RANKING_METRICS",
    "BeyondAccuracy",
    "EvalResult",
    "SampledSpec",
    "benjamini_hochberg",
    "compare_runs",
    "evaluate",
    "gini",
    "holm",
    "intra_list_diversity",
    "paired_tests",
    "ranking_metrics",
    "summarize_seeds",
]

"""Evaluation of an aligned space: retrieval metrics, modality gap, reports."""

from modalign.evaluation.evaluate import EvalResult, evaluate, evaluate_detailed
from modalign.evaluation.retrieval import first_positive_ranks, metrics_from_ranks, modality_gap, retrieval_metrics

__all__ = ["EvalResult", "evaluate", "evaluate_detailed", "first_positive_ranks", "metrics_from_ranks",
           "modality_gap", "retrieval_metrics"]

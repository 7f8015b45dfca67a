"""Alignment measures between two representations of the same items."""

from modalign.metrics.mutual_knn import mutual_knn, rice_k

__all__ = ["mutual_knn", "rice_k"]

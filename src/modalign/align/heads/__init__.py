"""Heads: one file each, registered in HEADS."""

from modalign.align.heads import ensemble, identity, linear, mlp, moe  # noqa: F401
from modalign.align.heads.base import HEADS, Head
from modalign.align.heads.registry import build_head

__all__ = ["HEADS", "Head", "build_head"]

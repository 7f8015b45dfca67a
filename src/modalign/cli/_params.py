"""Parsers of numeric options: a number that is not finite, or out of its range, is one clear usage error
(exit 2), never a NaN that travels on into a traceback."""

from __future__ import annotations

import math
from collections.abc import Callable

import typer


def number(low: float | None = None, high: float | None = None, *, above: bool = False,
           below: bool = False) -> Callable[[str | float], float]:
    """A parser for a finite float in [low, high] (``above``/``below``: the bound itself excluded)."""

    def parse(text: str | float) -> float:
        try:
            value = float(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise typer.BadParameter(f"{text!r} is not a finite number")
        if low is not None and (value < low or (above and value == low)):
            raise typer.BadParameter(f"{value:g} is too small: it must be {'>' if above else '≥'} {low:g}")
        if high is not None and (value > high or (below and value == high)):
            raise typer.BadParameter(f"{value:g} is too large: it must be {'<' if below else '≤'} {high:g}")
        return value

    return parse

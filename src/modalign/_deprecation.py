"""Deprecation warnings that point at the user's line, however deep inside modalign they are raised."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_deprecated(message: str) -> None:
    """A DeprecationWarning attributed to the first calling frame outside this package.

    A fixed ``stacklevel`` names the right line for one call path only: auto's options reach it from
    ``fit`` and from ``fit_arrays`` at different depths."""
    level = 2  # the caller of this function
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)

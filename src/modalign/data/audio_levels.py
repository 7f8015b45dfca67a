"""Audio thresholds shared by dataset recipes (validating rendered clips) and the audio encoders.

In the data layer, the lowest one that needs it, so recipes never import from ``encoders``.
"""

from __future__ import annotations

#: a clip whose RMS is under this (-80 dBFS) carries no signal: all-zero or dither only
SILENCE_RMS = 1e-4

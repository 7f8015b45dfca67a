"""``python -m modalign`` = the ``modalign`` command (e.g. ``torchrun ... -m modalign fit ...``)."""

from modalign.cli import app

app(prog_name="modalign")

"""Exceptions with messages a user can act on (they name the row, file or field)."""

from __future__ import annotations


class ModalignError(Exception):
    """Base class of every error modalign raises on purpose."""


class ManifestError(ModalignError):
    """The manifest is malformed; ``problems`` lists (row, field, reason) triples."""

    def __init__(self, path: str, problems: list[tuple[int | str, str, str]], total: int | None = None):
        self.path = path
        self.problems = problems
        total = len(problems) if total is None else total
        lines = [f"{path}: {total} problem(s) in the manifest"]
        for row, field, reason in problems[:20]:
            lines.append(f"  row {row}, field {field!r}: {reason}")
        if total > 20:
            lines.append(f"  ... and {total - 20} more")
        super().__init__("\n".join(lines))


class ItemError(ModalignError):
    """One item could not be read or encoded (corrupt image, silent audio, NaN vector...)."""

    def __init__(self, item: object, reason: str):
        self.item = item
        self.reason = reason
        super().__init__(f"{item!s:.200}: {reason}")


class ConfigError(ModalignError):
    """A model/index/config file is invalid."""


class UntrustedCodeError(ConfigError):
    """A model or index folder names code to run (``py:`` encoder, plugin) and the user did not allow it."""


class StorageError(ModalignError):
    """A file could not be written or read: disk full, read-only folder, no permission (names the path)."""

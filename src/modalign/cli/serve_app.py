"""The app ``modalign serve`` listens with, built the same way in one process and in each worker
(``serve_workers.py``), from a plan that travels to a worker as JSON."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from modalign.cli._ui import console
from modalign.errors import ModalignError
from modalign.search import Index
from modalign.search.hubness import use_hubness
from modalign.server import ServerSettings, create_app
from modalign.server.runtimes import AUTO, runtime_report, serving_runtimes


class ServeSetupError(Exception):
    """The index, its model or an encoder cannot be served: one line for the user."""


@dataclasses.dataclass(frozen=True)
class ServePlan:
    index_dir: str
    data_root: str | None
    settings: ServerSettings
    hubness: bool
    #: encoder threads per process; 0 = the cores shared out among the workers
    torch_threads: int = 0
    #: ``auto``, ``index`` or {modality: runtime} (``server/runtimes.py``)
    runtime: str | Mapping[str, str] = AUTO
    #: folder of vectors shared by the workers (``Index.share``); None = read the index's own
    shared: str | None = None
    #: ``--trust-code``: the index's model may load an encoder that runs code
    trust_code: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServePlan:
        raw: dict[str, Any] = json.loads(text)
        settings = dict(raw.pop("settings"))
        settings["cors_origins"] = tuple(settings.get("cors_origins", ()))
        return cls(settings=ServerSettings(**settings), **raw)


def open_index(plan: ServePlan, quiet: bool = False) -> Index:
    """The plan's index, with its hubness statistics when asked; raises ServeSetupError."""
    try:
        index = Index.open(plan.index_dir, data_root=plan.data_root, shared=plan.shared, trust_code=plan.trust_code)
    except (ModalignError, ValueError) as exc:
        raise ServeSetupError(str(exc)) from None
    if plan.hubness:
        try:
            stats = use_hubness(index, folder=plan.index_dir)
        except ModalignError as exc:
            raise ServeSetupError(str(exc)) from None
        if not quiet:
            console.print(f"hubness {stats.method} {'k' if stats.method == 'csls' else 'β'}={stats.value:g}")
    return index


def threads_of(plan: ServePlan) -> int:
    """Encoder threads per process: as asked, else the cores shared out among the workers (at least one)."""
    return plan.torch_threads or max(1, (os.cpu_count() or 1) // plan.settings.workers)


def worker_environment(plan: ServePlan) -> dict[str, str]:
    """Environment a worker process must start with (read when torch and the tokenizers load, too late to set
    inside it): OpenMP's pool at the worker's thread count, so no idle OpenMP thread spins on a core another
    worker needs, and no tokenizer thread pool (a query batch is too small to gain from one). A variable
    the user set is kept."""
    wanted = {"OMP_NUM_THREADS": str(threads_of(plan)), "TOKENIZERS_PARALLELISM": "false"}
    return {key: os.environ.get(key, value) for key, value in wanted.items()}


def build_app(plan: ServePlan, quiet: bool = False) -> FastAPI:
    """The app over the plan's index with every encoder loaded, so the first search is not the slow one.

    Each micro-batch is encoded with every thread of the process (torch and onnxruntime), so numpy's BLAS
    gets one: its idle threads would otherwise spin on the cores the encoder needs. Once loaded, the
    process's objects are frozen out of the garbage collector's view: a full collection over them took
    ~100 ms and set the p99 latency under load."""
    torch.set_num_threads(threads_of(plan))
    threadpool_limits(1, user_api="blas")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    index = open_index(plan, quiet=quiet)
    report = None
    if index.model is not None:
        indexed = index.model
        with console.status("loading encoders") if not quiet else contextlib.nullcontext():
            served = _load_encoders(indexed, plan.runtime, quiet)
        index.model = indexed.with_runtimes(served)
        report = runtime_report(indexed, served)
    app = create_app(index, plan.settings, runtimes=report)
    gc.collect()
    _return_freed_memory()
    gc.freeze()
    return app


def _return_freed_memory() -> None:
    """Hand the heap pages freed while loading (a torch model read only to build its ONNX session, start-up
    garbage) back to the system: glibc keeps them otherwise, and the server would carry them for its life."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _load_encoders(model: Any, choice: str | Mapping[str, str], quiet: bool) -> dict[str, str]:
    """Load every encoder of ``model`` in its serving runtime; the runtimes chosen (``serving_runtimes``).
    A runtime ``auto`` picked that cannot load falls back to the index's own; any other failure is one line."""
    try:
        served = serving_runtimes(model, choice)
    except ModalignError as exc:
        raise ServeSetupError(str(exc)) from None
    for modality in model.modalities:
        try:
            try:
                model.with_runtimes(served).encoder_for(modality)
            except (ModalignError, ValueError, KeyError) as exc:
                if choice != AUTO or modality not in served:
                    raise
                # the faster runtime was our choice, not the user's: serve as indexed, and say why
                served.pop(modality)
                if not quiet:
                    console.print(f"modality {modality!r}: queries run in the index's runtime ({exc})")
                model.encoder_for(modality)
        except (ModalignError, ValueError, KeyError) as exc:
            # a path gone, a plugin not installed or changed weights: say which spec, not a traceback
            message = str(exc).strip("'\"")
            raise ServeSetupError(f"modality {modality!r}: {message}") from None
    return served

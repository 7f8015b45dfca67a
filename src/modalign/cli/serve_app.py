"""The app ``modalign serve`` listens with, built the same way in one process and in each worker
(``serve_workers.py``), from a plan that travels to a worker as JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import torch
from fastapi import FastAPI

from modalign.cli._ui import console
from modalign.errors import ModalignError
from modalign.search import Index
from modalign.search.hubness import use_hubness
from modalign.server import ServerSettings, create_app


class ServeSetupError(Exception):
    """The index, its model or an encoder cannot be served: one line for the user."""


@dataclasses.dataclass(frozen=True)
class ServePlan:
    index_dir: str
    data_root: str | None
    settings: ServerSettings
    hubness: bool
    torch_threads: int
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


def build_app(plan: ServePlan, quiet: bool = False) -> FastAPI:
    """The app over the plan's index with every encoder loaded, so the first search is not the slow one."""
    torch.set_num_threads(plan.torch_threads)
    app = create_app(open_index(plan, quiet=quiet), plan.settings)
    index = app.state.index
    if index.model is not None:
        with console.status("loading encoders") if not quiet else contextlib.nullcontext():
            try:
                for modality in index.model.modalities:
                    index.model.encoder_for(modality)
            except (ModalignError, ValueError, KeyError) as exc:
                # a path gone, a plugin not installed or changed weights: say which spec, not a traceback
                message = str(exc).strip("'\"")
                raise ServeSetupError(f"modality {modality!r}: {message}") from None
    return app

"""What training runs on: the rows (``TrainData``), the settings and schedule, the device, and how
feature sources (arrays, memory maps, streamed cache matrices) hand over a batch of rows.

Below both loops: the one-process trainer (``trainer``) and the DDP ranks (``ddp``) import it, so
neither has to import the other for these.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class TrainData:
    """Frozen features of every modality over the same rows; ``present[m]`` marks rows that have m."""

    features: dict[str, np.ndarray]  # m -> (n_rows, D_m) (rows without m hold anything, e.g. zeros)
    present: dict[str, np.ndarray]  # m -> bool (n_rows,)
    groups: np.ndarray  # int64 (n_rows,)

    def __len__(self) -> int:
        return len(self.groups)

    def pairs(self) -> list[tuple[str, str]]:
        return list(itertools.combinations(self.features, 2))

    def in_memory(self) -> TrainData:
        """The same data with streamed features (``CachedMatrix``, memory maps) read into arrays: for the
        closed forms, which need the whole matrix anyway."""
        feats = {m: x if isinstance(x, torch.Tensor) or type(x) is np.ndarray else np.asarray(x, np.float32)
                 for m, x in self.features.items()}
        return TrainData(features=feats, present=self.present, groups=self.groups)

    def followed_by(self, other: TrainData | None) -> TrainData:
        """These rows, then ``other``'s (itself when ``other`` is None or empty): a closed form refits on the
        training and validation rows together."""
        if other is None or not len(other):
            return self
        return TrainData(features={m: np.concatenate([np.asarray(self.features[m]), np.asarray(other.features[m])])
                                   for m in self.features},
                         present={m: np.concatenate([self.present[m], other.present[m]]) for m in self.present},
                         groups=np.concatenate([self.groups, other.groups]))


@dataclass
class TrainerSettings:
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 10
    seed: int = 0
    #: GradCache: embed a batch in this many chunks without a graph, score the loss on the whole batch,
    #: then backpropagate chunk by chunk (same gradients; the heads' activations of one chunk at a time)
    grad_chunks: int = 1
    #: > 1: torch DDP processes (``align.ddp``; gloo on CPU, NCCL on GPUs), fixed epochs, no early stop
    workers: int = 1
    #: where one process trains: "cpu", "cuda", "cuda:N" or "auto" (cuda when available); the heads come
    #: back on the CPU either way. DDP workers (> 1) and torchrun ranks pick one GPU per rank themselves.
    device: str = "cpu"
    #: a budget in optimizer steps instead of ``epochs`` (one process): linear warm-up over
    #: ``warmup`` of them, then cosine decay to 0; validation every ``steps // 20`` steps on validation
    #: MRR (every rank moves it, so it tells models apart on a few dozen rows where R@1 ties),
    #: stopping after ``patience`` evaluations without gain.
    #: None = the epoch loop; "auto" = ``step_schedule(n)`` picks batch size and steps from the number
    #: of training rows (the trained methods resolve it, see ``resolved_for``).
    steps: int | str | None = None
    warmup: float = 0.1
    #: the step schedule only. False (default): train the whole budget and keep the final weights; the
    #: cosine decay to zero is the regulariser. Stopping on validation MRR (True: after ``patience`` stale
    #: evaluations, restoring the best) scored lower on held-out concepts in most cells up to 1k pairs on
    #: speech, instruments, bible-en-es and emoji-multilingual (validation is a few dozen concepts there;
    #: benchmarks/early_stopping.py, docs/alignment.md).
    restore_best: bool = False


def resolved_for(settings: TrainerSettings, n_rows: int) -> TrainerSettings:
    """``settings`` with ``steps="auto"`` replaced by the schedule for ``n_rows`` (batch size too)."""
    if settings.steps != "auto":
        return settings
    # a batch size other than the class default was asked for: keep it, take only the step count
    keep = settings.batch_size != TrainerSettings.batch_size
    batch, steps = step_schedule(n_rows, max_batch=settings.batch_size if keep else 256,
                                 min_batch=settings.batch_size if keep else 32)
    return dataclasses.replace(settings, batch_size=batch, steps=steps)


def step_schedule(n_rows: int, max_batch: int = 256, min_batch: int = 32) -> tuple[int, int]:
    """(batch size, optimizer steps) for ``n_rows`` training rows.

    Small sets get small batches, so an epoch is several steps rather than one, and a step budget that
    does not shrink with n (a contrastive head needs on the order of a thousand updates whatever the
    set size): about n/8 rows per batch, 32..256, and 60 epochs' worth of steps within 400..4000.
    """
    batch = int(min(max_batch, max(min_batch, 2 ** round(np.log2(max(n_rows, 1) / 8)))))
    per_epoch = max(1, -(-n_rows // batch))
    return batch, int(min(4000, max(400, 60 * per_epoch)))


def resolve_device(spec: str | torch.device) -> torch.device:
    """``TrainerSettings.device`` as a torch device: "cpu", "cuda", "cuda:N", or "auto" (cuda if available).

    Asking for a GPU that is not there is an error, not a silent CPU run: the user would wait hours
    for a run they meant to take minutes.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ValueError(f"device {spec!r}: expected cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: CUDA is not available (torch {torch.__version__}, "
                             f"{'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}); "
                             "use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def feature_source(x: Any, device: str | torch.device = "cpu") -> Any:
    """In-memory arrays become one tensor (no copy); memory maps and ``CachedMatrix`` stay on disk."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap):
        return torch.as_tensor(x, dtype=torch.float32, device=device)
    return x


def take_rows(source: Any, rows: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """Rows of a feature source as a float32 tensor on ``device`` (a tensor source: on its own device);
    streamed sources read only these rows, then the batch is moved."""
    if isinstance(source, torch.Tensor):
        return source[torch.as_tensor(rows, device=source.device)]
    if isinstance(source, np.ndarray) and not isinstance(source, np.memmap):
        return torch.as_tensor(source[rows], dtype=torch.float32, device=device)
    arr = np.ascontiguousarray(source.take(rows, axis=0), dtype=np.float32)
    return torch.from_numpy(np.asarray(arr)).to(device)

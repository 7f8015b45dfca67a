"""A spawned DDP rank that reports whether ``train_loop`` left its DistributedDataParallel wrapper alive.

The cyclic GC is switched off first, so the report depends only on what ``train_loop`` freed itself, not on
when the collector happened to run: a wrapper left in a reference cycle shows up as alive.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from modalign.align.ddp import train_loop
from modalign.align.heads.base import Head
from modalign.align.losses.base import Loss
from modalign.align.trainer import TrainData, TrainerSettings


def rank_main(rank: int, world: int, store_path: str, heads: dict[str, Head], loss: Loss, train: TrainData,
              settings: TrainerSettings, out_dir: str) -> None:
    gc.disable()
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    try:
        train_loop(heads, loss, train, settings, rank=rank, world=world)
        alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps({"ddp_alive": alive}))
        dist.barrier()
    finally:
        dist.destroy_process_group()

"""Data-parallel head training: ``workers`` processes (torch DDP; gloo on CPU, NCCL on CUDA).

Each rank embeds its slice of every global batch; the embeddings are all-gathered so every rank
scores the contrastive loss over the whole batch, exactly as one process would
(in-batch negatives are not lost to sharding). Only the rank's own slice carries gradients, so its
backward gives that slice's share of the full gradient; DDP averages the shares over the W ranks and
× W makes it the one-process gradient. Trade-off: the gathered (N, d) embeddings and the N×N
logits sit on every rank, so a larger effective batch costs memory on each rank, not compute.
Ranks drop the ≤ W−1 rows of a batch that do not divide evenly. No early stopping here: a fixed
number of epochs; select with validation after.

Two ways to get the processes: ``train_ddp(workers=N)`` spawns N local ones; under a launcher
(torchrun, ``srun torchrun``: RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT in the
environment, WORLD_SIZE > 1) every process is already a rank, joins the launcher's group (``env://``)
and runs the same ``train_loop`` on ``cuda:LOCAL_RANK`` (NCCL) or the CPU (gloo).
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from modalign.align.heads.base import Head
from modalign.align.losses.base import Batch, Loss
from modalign.align.train_data import TrainData, TrainerSettings, feature_source, resolve_device, take_rows

log = logging.getLogger(__name__)

#: how long a node's other ranks wait for its local rank 0 to fill the feature cache (encoding may take
#: hours); training collectives keep torch's default timeout so that a dead rank is still noticed
EXTRACT_WAIT = timedelta(hours=24)


@dataclass(frozen=True)
class Launch:
    """This process's place in a launcher-started job (torchrun sets these variables)."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str:
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"


def launched() -> Launch | None:
    """The launcher's RANK / WORLD_SIZE / LOCAL_RANK when WORLD_SIZE > 1, else None (a plain process)."""
    raw = {k: os.environ.get(k, "").strip() for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    if not raw["WORLD_SIZE"]:
        return None
    try:
        world = int(raw["WORLD_SIZE"])
        if world <= 1:
            return None
        rank = int(raw["RANK"])
        local_rank = int(raw["LOCAL_RANK"] or rank)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={raw['WORLD_SIZE']!r} is set (a launcher such as torchrun), but RANK="
                         f"{raw['RANK']!r} / LOCAL_RANK={raw['LOCAL_RANK']!r} are not integers") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Launch(rank=rank, world=world, local_rank=local_rank)


def join_launch() -> tuple[Launch, bool]:
    """Join the launcher's process group (``env://``) unless this process already has; (launch, joined now)."""
    import torch.distributed as dist

    launch = launched()
    if launch is None:
        raise ValueError("not started by a launcher: WORLD_SIZE > 1 is not set in the environment")
    if dist.is_initialized():
        return launch, False
    backend = "gloo"
    if torch.cuda.is_available():  # one GPU per rank, numbered per node
        torch.cuda.set_device(launch.local_rank)
        backend = "nccl"
    try:
        dist.init_process_group(backend, init_method="env://")
    except ValueError as exc:  # e.g. MASTER_ADDR missing: WORLD_SIZE set by hand, not by torchrun
        raise ValueError(f"cannot join the launcher's process group (WORLD_SIZE={launch.world}): {exc}") from None
    return launch, True


def leave_launch() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def fill_once(fn: Callable[[], None], launch: Launch) -> None:
    """Fill the feature cache before training: ``fn`` on global rank 0, then on LOCAL_RANK 0 of every
    other node, while all other ranks wait; then everyone goes on together.

    Why two rounds rather than every rank extracting (the cache would allow concurrent writers): the
    ranks of a node share its CPUs and memory, and on a shared cache concurrent writers of the same
    items each append their own shard, so N nodes would encode everything N times and store it N
    times. Round 1 encodes once; in round 2 a node on the same shared cache finds every item cached
    (it only hashes them), while a node with its own local cache encodes into it. A separate gloo
    group carries the long wait (encoding may take hours); an error is raised after both rounds so
    that no rank is left waiting at a barrier.
    """
    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=EXTRACT_WAIT)
    error: BaseException | None = None
    for mine in (launch.rank == 0, launch.local_rank == 0 and launch.rank != 0):
        if mine:
            try:
                fn()
            except BaseException as exc:  # re-raised below, after releasing the others
                error = exc
        dist.barrier(group=group)
    if error is not None:
        raise error


@dataclass
class DDPResult:
    history: list[float]  # mean training loss per epoch (rank 0)
    workers: int
    max_rank_divergence: float = 0.0  # largest |w_rank − w_rank0| over every parameter after training
    extra: dict[str, float] = field(default_factory=dict)


class _Embed(nn.Module):
    """The trained heads as one module, so DDP syncs all their gradients in one reducer."""

    def __init__(self, heads: dict[str, Head]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: F.normalize(h(x[m]), dim=1) for m, h in self.heads.items()}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gather(z: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """The whole batch's embeddings; only this rank's slice carries gradients (no collective in backward)."""
    if world == 1:
        return z
    import torch.distributed as dist

    parts = [torch.empty_like(z) for _ in range(world)]
    dist.all_gather(parts, z.detach().contiguous())
    parts[rank] = z
    return torch.cat(parts, dim=0)


def train_loop(heads: dict[str, Head], loss: Loss, train: TrainData, settings: TrainerSettings,
               rank: int = 0, world: int = 1, frozen: frozenset[str] = frozenset(),
               device: str | None = None) -> list[float]:
    """Fixed-epoch training; with ``world`` > 1 it must run inside an initialised process group.

    ``device``: this rank's device; None = ``settings.device`` (one process). The heads stay there.
    """
    device = str(resolve_device(settings.device if device is None else device))
    for h in heads.values():
        h.to(device)
    loss.to(device)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)  # same seed on every rank: same batches everywhere
    fixed = {m for m, h in heads.items() if m in frozen or not any(p.requires_grad for p in h.parameters())}
    trained = [m for m in heads if m not in fixed]
    if not trained:
        raise ValueError("nothing to train: every head is locked or frozen")
    module: nn.Module = _Embed({m: heads[m] for m in trained})
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # a MoE router may leave experts unused in a step; DDP must then not wait for their gradients
        index = torch.device(device).index  # the GPU of this rank on its node (LOCAL_RANK), not the global rank
        module = DistributedDataParallel(module, device_ids=[index] if device.startswith("cuda") else None,
                                         find_unused_parameters=any(heads[m].name == "moe" for m in trained))
    params = [p for p in module.parameters() if p.requires_grad]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params + loss_params, lr=settings.lr, weight_decay=settings.weight_decay)
    # arrays go to the device once; memory maps / CachedMatrix are read batch by batch
    feats = {m: feature_source(x, device) for m, x in train.features.items()}
    present = {m: torch.as_tensor(p, dtype=torch.bool, device=device) for m, p in train.present.items()}
    groups = torch.as_tensor(train.groups, dtype=torch.int64, device=device)
    for m in fixed:
        heads[m].eval()
    n_mod = np.sum([train.present[m] for m in heads], axis=0)
    usable = np.flatnonzero((n_mod >= 2) & np.any([train.present[m] for m in trained], axis=0))
    history: list[float] = []
    step = 0
    try:
        for _epoch in range(settings.epochs):
            module.train()
            order = rng.permutation(usable)
            losses = []
            for start in range(0, len(order), settings.batch_size):
                rows_np = order[start : start + settings.batch_size]
                rows_np = rows_np[: len(rows_np) // world * world]
                if len(rows_np) < 2:
                    continue
                rows = torch.as_tensor(rows_np, device=device)
                per = len(rows) // world
                x = {m: take_rows(feats[m], rows_np, device) for m in heads}
                z_local = module({m: x[m][rank * per : (rank + 1) * per] for m in trained})
                with torch.no_grad():
                    z_fixed = {m: F.normalize(heads[m](x[m]), dim=1) for m in fixed}
                z = {m: z_fixed[m] if m in fixed else _gather(z_local[m], rank, world) for m in heads}
                batch = Batch(z=z, x=x, present={m: present[m][rows] for m in heads},
                              groups=groups[rows], step=step, frozen=frozenset(fixed))
                total = loss.batch_loss(batch)
                if total is None:
                    continue
                for m in trained:
                    aux = heads[m].auxiliary_loss()
                    if aux is not None:
                        total = total + aux
                opt.zero_grad(set_to_none=True)
                total.backward()
                if world > 1:
                    # DDP averaged Σ-parts of one loss: × W restores the full gradient of the heads
                    for p in params:
                        if p.grad is not None:
                            p.grad.mul_(world)
                    _average_grads(loss_params, world)
                opt.step()
                losses.append(float(total.detach()))
                step += 1
            history.append(float(np.mean(losses)) if losses else float("nan"))
    finally:
        if world > 1:
            # DDP sits in a reference cycle (its hooks hold it), and through its reducer it holds the process
            # group and gloo's pending work. Left to the cyclic GC it can outlive destroy_process_group and be
            # freed during interpreter exit, where gloo's teardown aborts the worker with SIGABRT ("terminate
            # called without an active exception"). Free it now, while the interpreter is whole.
            del module
            gc.collect()
    for h in heads.values():
        h.eval()
    return history


def _average_grads(params: list[torch.Tensor], world: int) -> None:
    # loss parameters (temperature) live outside DDP; every rank sees the same loss, average to be exact
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _state(heads: dict[str, Head], loss: Loss) -> dict[str, torch.Tensor]:
    out = {f"head.{m}.{k}": v.detach().cpu().contiguous().clone()
           for m, h in heads.items() for k, v in h.state_dict().items()}
    out.update({f"loss.{k}": v.detach().cpu().contiguous().clone() for k, v in loss.state_dict().items()})
    return out


def _worker(rank: int, world: int, port: int, backend: str, heads: dict[str, Head], loss: Loss, train: TrainData,
            settings: TrainerSettings, frozen: frozenset[str], out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    # spawn hands tensors over in shared memory: without a private copy all ranks would step one set of weights
    heads, loss = copy.deepcopy(heads), copy.deepcopy(loss)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        device = "cpu"
        if backend == "nccl":  # one GPU per rank
            torch.cuda.set_device(rank)
            device = f"cuda:{rank}"
        history = train_loop(heads, loss, train, settings, rank=rank, world=world, frozen=frozen, device=device)
        save_file(_state(heads, loss), str(Path(out_dir) / f"rank{rank}.safetensors"))
        if rank == 0:
            (Path(out_dir) / "history.json").write_text(json.dumps(history))
        dist.barrier()  # no rank tears the group down while another is still in a collective
    finally:
        dist.destroy_process_group()


def train_ddp(heads: dict[str, Head], loss: Loss, train: TrainData, settings: TrainerSettings, workers: int = 2,
              frozen: frozenset[str] = frozenset(), backend: str | None = None) -> DDPResult:
    """Train ``heads`` (in place) with ``workers`` DDP processes; ``workers=1`` runs in this process.

    Heads must have their input statistics fitted. The trained weights come back from rank 0; every
    rank's weights are compared to report ``max_rank_divergence`` (0 when DDP kept them in sync).
    Under a launcher (``launched()``) this process trains as its rank and ``workers`` must stay 1:
    the launcher already decided how many processes there are.
    """
    launch = launched()
    if launch is not None:
        if workers > 1:
            raise ValueError(f"workers={workers} inside a launcher (torchrun: WORLD_SIZE={launch.world}): the "
                             "launcher already started the processes; drop --workers / workers")
        return _train_launched(heads, loss, train, settings, frozen)
    if workers <= 1:
        try:
            history = train_loop(heads, loss, train, settings, frozen=frozen)  # on settings.device
        finally:  # back on the CPU, as from the spawned workers
            for h in heads.values():
                h.to("cpu").eval()
            loss.to("cpu")
        return DDPResult(history=history, workers=1)
    import torch.multiprocessing as mp

    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    with tempfile.TemporaryDirectory(prefix="modalign-ddp-") as tmp:
        mp.spawn(_worker, args=(workers, free_port(), backend, heads, loss, train, settings, frozen, tmp),
                 nprocs=workers, join=True)
        states = [load_file(str(Path(tmp) / f"rank{r}.safetensors")) for r in range(workers)]
        history = json.loads((Path(tmp) / "history.json").read_text())
    ref = states[0]
    gaps = {k: max(float((s[k] - ref[k]).abs().max()) for s in states[1:]) for k in ref if ref[k].numel()}
    divergence = max(gaps.values(), default=0.0)
    if divergence > 0:
        log.warning("DDP ranks diverged by up to %.3g (%s)", divergence, max(gaps, key=gaps.__getitem__))
    for m, h in heads.items():
        prefix = f"head.{m}."
        h.load_state_dict({k[len(prefix):]: v for k, v in ref.items() if k.startswith(prefix)})
        h.eval()
    loss.load_state_dict({k[5:]: v for k, v in ref.items() if k.startswith("loss.")})
    return DDPResult(history=history, workers=workers, max_rank_divergence=divergence)


def _train_launched(heads: dict[str, Head], loss: Loss, train: TrainData, settings: TrainerSettings,
                    frozen: frozenset[str]) -> DDPResult:
    """This process as one rank of the launcher's job: the same loop as the spawned workers."""
    import torch.distributed as dist

    launch, joined = join_launch()
    try:
        device = launch.device
        history = train_loop(heads, loss, train, settings, rank=launch.rank, world=launch.world, frozen=frozen,
                             device=device)
        # every rank holds the result; compare it with rank 0's like the spawned path does
        flat = torch.cat([v.flatten().float() for v in _state(heads, loss).values()]).to(device)
        ref = flat.clone()
        dist.broadcast(ref, src=0)
        gap = (flat - ref).abs().max()
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        divergence = float(gap)
    finally:
        if joined:
            leave_launch()
    for h in heads.values():  # back on the CPU: validation, saving and encoding expect it there
        h.to("cpu").eval()
    loss.to("cpu")
    if divergence > 0:
        log.warning("DDP ranks diverged by up to %.3g", divergence)
    return DDPResult(history=history, workers=launch.world, max_rank_divergence=divergence)

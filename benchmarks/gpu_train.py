"""GPU check of single-process head training (``TrainerSettings.device``, issue #8), one short run.

    PYTHONPATH=src python3 benchmarks/gpu_train.py --data .gpu/pairs.npz --json $OUT/gpu.json

Pairs: ``scripts/make_gpu_pairs.py`` (real minilm features of CLDR emoji names, no encoder needed here).
Imports only ``modalign.align`` + torch / numpy / safetensors (checked at the end). Parts:

a. linear InfoNCE heads trained on "cpu" and "cuda" (TF32 off): max loss-curve and weight gaps;
b. the same with ``grad_chunks=4``, cuda chunks=4 vs chunks=1, and GradCache's dropout replay on the
   device (MLP head, one batch: gradients vs a one-pass reference; without the CUDA RNG replay they differ);
c. seconds per epoch, CPU vs GPU, pairs tiled to ``--big-rows``, batch 4096, linear and MLP heads;
d. ``train_ddp(workers=1)`` on the device, and a spawned process: NCCL ``init_process_group`` (world 1) +
   ``all_gather`` + a DDP step, then ``ddp._worker`` trains on NCCL and must equal (d)'s weights;
e. every trained method / regularizer / head for 2 epochs through ``fit_arrays`` on the device.

Without CUDA the cuda sides are skipped with a message (the CPU sides and gloo still run). Exit status 1
when a check fails; the JSON is written either way.
"""

from __future__ import annotations

import sys
import traceback

#: what the interpreter loaded before this script (site hooks, sitecustomize): not this script's imports
STARTUP = {name.split(".")[0] for name in sys.modules}
#: top-level module -> the file:line that first imported it (to tell modalign's imports from torch's own)
IMPORTERS: dict[str, str] = {}


class _ImportTrace:
    """A meta-path finder that finds nothing; it notes who imports each new top-level module."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if "." not in name and name not in IMPORTERS and name not in STARTUP and name not in sys.stdlib_module_names:
            IMPORTERS[name] = "?"  # first, so that nothing below can recurse into this finder
            frames = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename
                      and "<frozen" not in f.filename]
            IMPORTERS[name] = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        return None


sys.meta_path.insert(0, _ImportTrace())  # type: ignore[arg-type]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from modalign.align.ddp import _worker, free_port, train_ddp  # noqa: E402
from modalign.align.fit import fit_arrays  # noqa: E402
from modalign.align.heads.base import HEADS  # noqa: E402
from modalign.align.losses.base import Batch  # noqa: E402
from modalign.align.losses.combined import build_loss  # noqa: E402
from modalign.align.trainer import (  # noqa: E402
    TrainData,
    TrainerSettings,
    backward_batch,
    feature_source,
    take_rows,
    train_heads,
)

T0 = time.perf_counter()
#: float32 on two devices sums in different orders (cuBLAS vs CPU BLAS): ~1e-7 relative per op. The loss
#: curve stays within ~1e-6; weights drift further, because Adam divides by √v and so amplifies rounding
#: in small gradient entries over the 64 steps (H200: ≤ 1.2e-4 of a tensor's max |w|, the same size as
#: CPU-vs-CPU reordering alone, chunks=4 vs 1). A device bug is far larger: without the CUDA RNG replay
#: GradCache's gradients are off by ~0.9 (part b's control).
TOL = 1e-4  # losses, gradients
WEIGHT_TOL = 1e-3  # weights after training
#: third-party top-level modules this script may load: the GPU machine has nothing else
ALLOWED = {"torch", "torchgen", "numpy", "safetensors", "PIL", "tqdm", "modalign", "cython_runtime",
           # torch's own dependencies, imported by torch itself
           "typing_extensions", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "filelock", "fsspec",
           "triton", "nvidia", "setuptools", "pkg_resources", "_distutils_hack", "opt_einsum", "optree",
           "pynvml"}  # torch.cuda asks NVML about the devices
CHECKS: list[dict[str, Any]] = []


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def check(name: str, value: float, tol: float) -> None:
    ok = bool(value <= tol)  # NaN fails
    CHECKS.append({"check": name, "value": value, "tol": tol, "ok": ok})
    say(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.3g} (tol {tol:.1g})")


def load_pairs(path: Path, views: str = "ab", tile: int = 1) -> TrainData:
    z = np.load(path)
    groups = np.tile(z["groups"], tile)  # tiled rows share a group: positives of each other
    return TrainData(features={m: np.tile(z[m], (tile, 1)) for m in views},
                     present={m: np.ones(len(groups), bool) for m in views}, groups=groups)


def new_heads(kind: str, data: TrainData, dim: int = 256, **options: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    heads = {m: HEADS.create(kind, in_dim=x.shape[1], out_dim=dim, **options) for m, x in data.features.items()}
    for m, h in heads.items():
        h.fit_input_stats(data.features[m])
    return heads


def state(heads: dict[str, Any], loss: Any) -> dict[str, torch.Tensor]:
    out = {f"{m}.{k}": v.detach().cpu() for m, h in heads.items() for k, v in h.state_dict().items()}
    return out | {f"loss.{k}": v.detach().cpu() for k, v in loss.state_dict().items()}


def gaps(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> float:
    """Largest |Δw| over all tensors, relative to the largest |w| of that tensor."""
    return max(float((other[k] - v).abs().max() / v.abs().max().clamp(min=1e-12)) for k, v in ref.items())


def curve_gap(ref: list[float], other: list[float]) -> float:
    return max(abs(a - b) / abs(a) for a, b in zip(ref, other, strict=True))


def train(data: TrainData, device: str, epochs: int, head: str = "linear", chunks: int = 1, batch: int = 256,
          **head_options: Any) -> dict[str, Any]:
    heads, loss = new_heads(head, data, **head_options), build_loss("infonce")
    times: list[float] = []
    start = [time.perf_counter()]

    def tick(stage: str, done: int, total: int) -> None:
        if len(times) < done:
            times.append(time.perf_counter() - start[0])
            start[0] = time.perf_counter()

    res = train_heads(heads, loss, data, None, TrainerSettings(epochs=epochs, batch_size=batch, patience=epochs + 1,
                                                               grad_chunks=chunks, device=device), progress=tick)
    assert all(p.device.type == "cpu" for h in heads.values() for p in h.parameters()), "heads left on the device"
    return {"losses": [h["loss"] for h in res.history], "best_epoch": res.best_epoch, "state": state(heads, loss),
            "epoch_s": times}


def part_equivalence(data: TrainData, dev: str | None, epochs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for chunks in (1, 4):
        cpu = train(data, "cpu", epochs, chunks=chunks)
        say(f"cpu chunks={chunks}: loss {cpu['losses'][0]:.4f} -> {cpu['losses'][-1]:.4f}")
        entry: dict[str, Any] = {"cpu_losses": cpu["losses"]}
        if dev is not None:
            gpu = train(data, dev, epochs, chunks=chunks)
            entry |= {"gpu_losses": gpu["losses"], "loss_gap_rel": curve_gap(cpu["losses"], gpu["losses"]),
                      "weight_gap_rel": gaps(cpu["state"], gpu["state"]),
                      "same_best_epoch": cpu["best_epoch"] == gpu["best_epoch"]}
            check(f"chunks={chunks} cpu vs cuda loss curve", entry["loss_gap_rel"], TOL)
            check(f"chunks={chunks} cpu vs cuda weights", entry["weight_gap_rel"], WEIGHT_TOL)
            if chunks == 4:  # GradCache on the GPU = one pass on the GPU
                entry["gpu_chunks4_vs_1_weight_gap_rel"] = gaps(out["chunks1"]["_gpu_state"], gpu["state"])
                check("cuda chunks=4 vs chunks=1 weights", entry["gpu_chunks4_vs_1_weight_gap_rel"], WEIGHT_TOL)
            entry["_gpu_state"] = gpu["state"]
        if chunks == 4:  # the noise floor: the same device, the same math, sums in another order
            entry["cpu_chunks4_vs_1_weight_gap_rel"] = gaps(out["chunks1"]["_cpu_state"], cpu["state"])
            say(f"noise floor: cpu chunks=4 vs 1 weights {entry['cpu_chunks4_vs_1_weight_gap_rel']:.3g}")
        entry["_cpu_state"] = cpu["state"]
        out[f"chunks{chunks}"] = entry
    for entry in out.values():
        entry.pop("_gpu_state", None)
        entry.pop("_cpu_state", None)
    return out


def part_dropout_replay(data: TrainData, device: str) -> dict[str, float]:
    """One GradCache batch (4 chunks) of MLP heads with dropout vs a one-pass reference drawing the same masks."""
    import modalign.align.trainer as trainer

    dev = torch.device(device)
    heads, loss = new_heads("mlp", data, dim=128, dropout=0.3, input_dropout=0.2), build_loss("infonce")
    for h in heads.values():
        h.to(dev).train()
    loss.to(dev)
    sources = {m: feature_source(x, dev) for m, x in data.features.items()}
    rows = np.arange(512)
    spans = np.array_split(np.arange(len(rows)), 4)

    def grads() -> dict[str, torch.Tensor]:
        out = {f"{m}.{k}": p.grad.detach().clone() for m, h in heads.items() for k, p in h.named_parameters()}
        for h in heads.values():
            h.zero_grad(set_to_none=True)
        loss.zero_grad(set_to_none=True)
        return out

    def chunked() -> dict[str, torch.Tensor]:
        torch.manual_seed(7)
        backward_batch(heads, loss, sources, data.present, data.groups, rows, list(heads), chunks=4, device=dev)
        return grads()

    got = chunked()
    torch.manual_seed(7)  # the reference: the same chunks in the same order, with a graph, one backward
    x = {m: take_rows(sources[m], rows, dev) for m in heads}
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in heads}
    for span in spans:
        for m in heads:
            parts[m].append(torch.nn.functional.normalize(heads[m](x[m][span]), dim=1))
    z = {m: torch.cat(p) for m, p in parts.items()}
    batch = Batch(z=z, x=x, present={m: torch.ones(len(rows), dtype=torch.bool, device=dev) for m in heads},
                  groups=torch.as_tensor(data.groups[rows], device=dev))
    loss.batch_loss(batch).backward()
    ref = grads()
    gap = gaps(ref, got)
    original = trainer._set_rng_state
    trainer._set_rng_state = lambda st, d: torch.set_rng_state(st[0])  # negative control: CPU replay only
    try:
        broken = gaps(ref, chunked())
    finally:
        trainer._set_rng_state = original
    for h in heads.values():
        h.to("cpu")
    return {"grad_gap_rel": gap, "grad_gap_rel_without_device_rng_replay": broken}


def part_speed(path: Path, rows: int, dev: str | None, epochs: int) -> dict[str, Any]:
    tile = max(1, math.ceil(rows / len(np.load(path)["groups"])))
    big = load_pairs(path, tile=tile)
    say(f"speed: {len(big)} rows, batch 4096, {epochs} epochs, {torch.get_num_threads()} CPU threads")
    out: dict[str, Any] = {"rows": len(big), "batch": 4096, "epochs": epochs, "cpu_threads": torch.get_num_threads()}
    for head in ("linear", "mlp"):
        entry: dict[str, Any] = {}
        for name, device in (("cpu", "cpu"), ("gpu", dev)):
            if device is None:
                continue
            if device != "cpu":
                torch.cuda.reset_peak_memory_stats()
            run = train(big, device, epochs, head=head, batch=4096)
            entry[name] = {"epoch_s": run["epoch_s"], "pairs_s": len(big) / min(run["epoch_s"]),
                           "final_loss": run["losses"][-1]}
            if device != "cpu":
                entry[name]["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
            say(f"{head} on {name}: epochs {[round(t, 2) for t in run['epoch_s']]} s, "
                f"{entry[name]['pairs_s']:,.0f} pairs/s")
        if "gpu" in entry:
            entry["gpu_over_cpu"] = entry["gpu"]["pairs_s"] / entry["cpu"]["pairs_s"]
            say(f"{head}: GPU / CPU = {entry['gpu_over_cpu']:.1f}x")
        out[head] = entry
    return out


def _spawned(rank: int, backend: str, ports: tuple[int, int], heads: dict[str, Any], loss: Any, data: TrainData,
             settings: TrainerSettings, out_dir: str) -> None:
    """Child process: a bare process group (world 1) + all_gather + a DDP step, then the real DDP worker."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dev = "cuda:0" if backend == "nccl" else "cpu"
    if backend == "nccl":
        torch.cuda.set_device(0)
        torch.backends.cuda.matmul.allow_tf32 = False  # as in the parent, whose weights these must equal
    t0 = time.perf_counter()
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{ports[0]}", rank=0, world_size=1)
    x = torch.arange(8, dtype=torch.float32, device=dev)
    parts = [torch.empty_like(x)]
    dist.all_gather(parts, x)
    lin = torch.nn.Linear(8, 4).to(dev)
    ddp = DistributedDataParallel(lin, device_ids=[0] if backend == "nccl" else None)
    ddp(torch.randn(16, 8, device=dev)).sum().backward()
    info = {"backend": dist.get_backend(), "all_gather_ok": bool(torch.equal(parts[0], x)),
            "ddp_grad_finite": bool(torch.isfinite(lin.weight.grad).all()), "init_s": time.perf_counter() - t0,
            "nccl_version": ".".join(map(str, torch.cuda.nccl.version())) if backend == "nccl" else None}
    dist.destroy_process_group()
    (Path(out_dir) / "probe.json").write_text(json.dumps(info))
    _worker(0, 1, ports[1], backend, heads, loss, data, settings, frozenset(), out_dir)


def part_ddp(data: TrainData, dev: str | None, epochs: int) -> dict[str, Any]:
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    settings = TrainerSettings(epochs=epochs, batch_size=256)
    out: dict[str, Any] = {}
    runs = {}
    for name, device in (("cpu", "cpu"), ("gpu", dev)):
        if device is None:
            continue
        heads, loss = new_heads("linear", data), build_loss("infonce")
        res = train_ddp(heads, loss, data, TrainerSettings(epochs=epochs, batch_size=256, device=device), workers=1)
        runs[name] = (res.history, state(heads, loss))
        out[f"{name}_losses"] = res.history
    if "gpu" in runs:
        out["loss_gap_rel"] = curve_gap(runs["cpu"][0], runs["gpu"][0])
        out["weight_gap_rel"] = gaps(runs["cpu"][1], runs["gpu"][1])
        check("train_ddp(workers=1) cpu vs cuda loss curve", out["loss_gap_rel"], TOL)
        check("train_ddp(workers=1) cpu vs cuda weights", out["weight_gap_rel"], WEIGHT_TOL)
    backend = "nccl" if dev is not None else "gloo"
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        t0 = time.perf_counter()
        mp.spawn(_spawned, args=(backend, (free_port(), free_port()), new_heads("linear", data),
                                 build_loss("infonce"), data, settings, tmp), nprocs=1, join=True)
        out["spawn_s"] = time.perf_counter() - t0
        out["spawned"] = json.loads((Path(tmp) / "probe.json").read_text())
        got = load_file(str(Path(tmp) / "rank0.safetensors"))
        history = json.loads((Path(tmp) / "history.json").read_text())
    ref_name = "gpu" if dev is not None else "cpu"
    ref = {f"head.{k}" if not k.startswith("loss.") else k: v for k, v in runs[ref_name][1].items()}
    out["spawned"]["weight_gap_rel_vs_in_process"] = gaps(ref, got)
    out["spawned"]["loss_gap_rel_vs_in_process"] = curve_gap(runs[ref_name][0], history)
    say(f"spawned {backend}: {out['spawned']}")
    check(f"{backend} probe all_gather + DDP step", 0.0 if out["spawned"]["all_gather_ok"]
          and out["spawned"]["ddp_grad_finite"] else 1.0, 0.0)
    check(f"spawned {backend} worker vs in-process train_ddp on {ref_name}",
          out["spawned"]["weight_gap_rel_vs_in_process"], TOL)
    return out


def part_sweep(path: Path, device: str) -> dict[str, Any]:
    """Every trained method / regularizer / head, 2 epochs on ``device`` through ``fit_arrays``."""
    data = load_pairs(path, "abc")
    feats = {m: {"x": x} for m, x in data.features.items()}
    groups = [str(g) for g in data.groups]
    configs = [(m, "linear", {}) for m in ("infonce", "siglip", "cwcl", "gram", "symile")]
    configs += [("infonce", "linear", {"structure": 1.0}), ("infonce", "linear", {"intra": 1.0}),
                ("infonce", "mlp", {}), ("infonce", "moe", {})]
    out: dict[str, Any] = {}
    for method, head, options in configs:
        key = "+".join([method, head, *options])
        try:
            res = fit_arrays(feats, data.present, groups, list(feats), default_layers={m: "x" for m in feats},
                             method=method, head=head, dim=64, options=options,
                             settings=TrainerSettings(epochs=2, batch_size=256, device=device))
            out[key] = {"ok": True, "val_R@1": res.info["val_R@1"]}
        except Exception as exc:  # reported, not fatal: the sweep is there to list what breaks on a device
            out[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300],
                        "where": traceback.format_exc().strip().splitlines()[-3][:200]}
        say(f"sweep {key} on {device}: {out[key]}")
        check(f"sweep {key} trains on {device}", 0.0 if out[key]["ok"] else 1.0, 0.0)
    return out


def loaded_third_party() -> list[str]:
    tops = {name.split(".")[0] for name in list(sys.modules)}
    return sorted(t for t in tops if t not in sys.stdlib_module_names and not t.startswith("_")
                  and t != "__main__" and t != "__mp_main__")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(".gpu/pairs.npz"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="the GPU to check (cuda, cuda:N)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the cpu-vs-cuda comparisons")
    parser.add_argument("--big-rows", type=int, default=200_000, help="rows of the speed part (tiled pairs)")
    parser.add_argument("--big-epochs", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c,d,e")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    dev = args.device if torch.cuda.is_available() else None
    result: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": None}
    if dev is None:
        say("CUDA is not available: skipping the cuda parts (CPU and gloo sides still run)")
    else:
        # TF32 would round matmul inputs to 10-bit mantissas: the cpu-vs-cuda comparison must see float32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        result["device"] = torch.cuda.get_device_name(torch.device(dev))
        say(f"device {dev}: {result['device']}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    data = load_pairs(args.data)
    parts = {"a_b_equivalence": lambda: part_equivalence(data, dev, args.epochs),
             "b_dropout_replay": lambda: part_dropout_replay(data, dev or "cpu"),
             "c_speed": lambda: part_speed(args.data, args.big_rows, dev, args.big_epochs),
             "d_ddp": lambda: part_ddp(data, dev, max(2, args.epochs // 2)),
             "e_sweep": lambda: part_sweep(args.data, dev or "cpu")}
    for name, run in parts.items():
        if name[0] in skip:
            continue
        say(f"--- {name}")
        try:
            result[name] = run()
        except Exception as exc:
            traceback.print_exc()
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            CHECKS.append({"check": name, "ok": False, "error": result[name]["error"]})
        if name == "b_dropout_replay" and "error" not in result[name]:
            check(f"GradCache dropout replay on {dev or 'cpu'} (grads vs one pass)", result[name]["grad_gap_rel"],
                  TOL)
            # the control must *fail* on CUDA (its masks come from CUDA's generator); on CPU it is the same replay
            if dev is not None:
                check("control: without the CUDA RNG replay the grads differ (1 / gap)",
                      1.0 / max(result[name]["grad_gap_rel_without_device_rng_replay"], 1e-30), 1.0 / TOL)
    result["third_party_modules"] = [m for m in loaded_third_party() if m not in STARTUP]
    result["importers"] = {m: IMPORTERS.get(m, "?") for m in result["third_party_modules"]}
    # what modalign or this script imports itself must be installed there; what torch pulls in comes with it
    ours = (str(Path(__file__).resolve()), str(Path(sys.modules["modalign"].__file__).resolve().parent))
    stray = sorted(m for m in set(result["third_party_modules"]) - ALLOWED
                   if result["importers"][m].startswith(ours))
    others = sorted(set(result["third_party_modules"]) - ALLOWED - set(stray))
    if others:
        importers = result["importers"]
        say(f"also loaded, not by modalign: {[f'{m} ({importers[m]})' for m in others]}")
    check(f"modalign/this script import beyond torch/numpy/safetensors/PIL/tqdm: {stray}", float(len(stray)), 0.0)
    result["checks"] = CHECKS
    result["total_s"] = time.perf_counter() - T0
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    failed = [c["check"] for c in CHECKS if not c["ok"]]
    say(f"done in {result['total_s']:.0f}s: {len(CHECKS) - len(failed)}/{len(CHECKS)} checks ok"
        + (f"; FAILED: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Every registered loss passes the same checks (iterating LOSSES, so new entries are covered).

Finite value on a batch with missing modalities, gradients into every head and every own parameter,
a lower value for an aligned batch than for a scrambled one, a safetensors + config round trip, and
seeded determinism. Then every registered method trains on real data (emoji names in three
languages) and retrieves held-out concepts well above chance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from modalign.align.losses import LOSSES, Batch, CombinedLoss, Loss, build_loss

MODS = ("a", "b", "c")
N, D_IN, D = 48, 24, 16


def _inputs(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(N, D_IN, generator=g) for m in MODS}
    present = {m: torch.rand(N, generator=g) > 0.25 for m in MODS}
    present["a"][:8] = True  # some rows hold all three modalities, some only two
    present["b"][:8] = True
    present["c"][:8] = True
    groups = torch.arange(N) // 2  # two rows per concept: multi-positive targets
    return x, present, groups


def _heads(seed: int = 0) -> dict[str, torch.nn.Linear]:
    torch.manual_seed(seed)
    return {m: torch.nn.Linear(D_IN, D) for m in MODS}


def _batch(heads: dict[str, torch.nn.Module], seed: int = 0, step: int = 50) -> Batch:
    x, present, groups = _inputs(seed)
    z = {m: F.normalize(heads[m](x[m]), dim=1) for m in MODS}
    return Batch(z=z, x=x, present=present, groups=groups, step=step)


def _create(name: str) -> Loss:
    loss = LOSSES.create(name)
    if loss.is_regularizer:  # regularizers are only ever used on top of a contrastive loss
        return CombinedLoss(LOSSES.create("infonce"), [(1.0, loss)])
    return loss


@pytest.mark.parametrize("name", LOSSES.names())
def test_finite_and_gradients_reach_every_parameter(name: str) -> None:
    heads = _heads()
    loss = LOSSES.create(name)
    value = loss.batch_loss(_batch(heads))
    assert value is not None and value.ndim == 0 and torch.isfinite(value), value
    value.backward()
    for m, h in heads.items():
        for p in h.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, (name, m)
    for pname, p in loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, (name, pname)


@pytest.mark.parametrize("name", LOSSES.names())
def test_aligned_batch_scores_better_than_scrambled(name: str) -> None:
    """Contrastive: identical embeddings across modalities beat row-shuffled ones. Regularizers: an
    embedding with the frozen features' own geometry beats a random one."""
    x, present, groups = _inputs()
    torch.manual_seed(1)
    loss = LOSSES.create(name)
    if loss.is_regularizer:
        proj = torch.randn(D_IN, D_IN)
        q, _ = torch.linalg.qr(proj)  # a rotation keeps every neighbourhood
        good = {m: F.normalize(x[m] @ q, dim=1) for m in MODS}
        bad = {m: F.normalize(torch.randn(N, D_IN), dim=1) for m in MODS}
    else:
        shared = F.normalize(torch.randn(N // 2, D), dim=1)[groups]
        # frozen features that know the concepts too (CWCL reads its targets from them)
        x = {m: shared @ torch.randn(D, D_IN) + 0.1 * torch.randn(N, D_IN) for m in MODS}
        good = dict.fromkeys(MODS, shared)
        bad = {m: shared[torch.randperm(N)] for m in MODS}
    with torch.no_grad():
        lg = loss.batch_loss(Batch(good, x, present, groups, step=100))
        lb = loss.batch_loss(Batch(bad, x, present, groups, step=100))
    assert lg is not None and lb is not None
    assert float(lg) < float(lb), (name, float(lg), float(lb))


@pytest.mark.parametrize("name", LOSSES.names())
def test_round_trip_through_safetensors_and_config(name: str, tmp_path: Path) -> None:
    heads = _heads()
    loss = _create(name)
    opt = torch.optim.SGD([*loss.parameters(), *(p for h in heads.values() for p in h.parameters())], lr=0.5)
    for step in range(3):  # move the learnt scalars away from their initial values
        opt.zero_grad()
        value = loss.batch_loss(_batch(heads, step=step))
        assert value is not None
        value.backward()
        opt.step()
    state = {k: v.contiguous() for k, v in loss.state_dict().items()}
    if state:
        save_file(state, str(tmp_path / "loss.safetensors"))
    cfg = loss.config()
    rebuilt = _rebuild(cfg)
    if state:
        rebuilt.load_state_dict(load_file(str(tmp_path / "loss.safetensors")))
    assert rebuilt.config() == cfg
    with torch.no_grad():
        batch = _batch(heads)
        assert torch.equal(loss.batch_loss(batch), rebuilt.batch_loss(batch))  # type: ignore[arg-type]


def _rebuild(cfg: dict) -> Loss:
    if cfg["name"] == "combined":
        main = _rebuild(cfg["main"])
        regs = [(r["weight"], _rebuild({k: v for k, v in r.items() if k != "weight"})) for r in cfg["regularizers"]]
        return CombinedLoss(main, regs)
    args = {k: v for k, v in cfg.items() if k != "name"}
    return LOSSES.create(cfg["name"], **args)


@pytest.mark.parametrize("name", LOSSES.names())
def test_deterministic_with_a_seed(name: str) -> None:
    def run() -> list[float]:
        heads = _heads(seed=3)
        loss = _create(name)
        opt = torch.optim.AdamW([*loss.parameters(), *(p for h in heads.values() for p in h.parameters())])
        values = []
        for step in range(3):
            opt.zero_grad()
            value = loss.batch_loss(_batch(heads, seed=step, step=step))
            assert value is not None
            value.backward()
            opt.step()
            values.append(float(value.detach()))
        return values

    assert run() == run()


def test_regularizers_combine_with_any_contrastive_loss() -> None:
    loss = build_loss("siglip", {"structure": 10, "structure_levels": 2, "structure_warmup": 4, "intra": 1.0})
    assert isinstance(loss, CombinedLoss)
    assert [r.name for r in loss.regularizers] == ["intra", "structure"]
    assert loss.regularizers[1].levels == 2
    heads = _heads()
    # the warm-up ramps STRUCTURE in: at step 0 it adds nothing, at step 2 half of it
    parts0 = loss.parts(_batch(heads, step=0))
    parts2 = loss.parts(_batch(heads, step=2))
    parts9 = loss.parts(_batch(heads, step=9))
    assert float(parts0["structure"]) == 0.0
    assert float(parts2["structure"]) == pytest.approx(0.5 * float(parts9["structure"]), rel=1e-5)
    with pytest.raises(ValueError, match="regularizer"):
        build_loss("structure")
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        build_loss("infonce", {"structure": 1, "structure_nope": 3})


def test_structure_levels_and_weighting_change_the_value() -> None:
    heads = _heads()
    batch = _batch(heads)
    values = {}
    for levels, weighting in ((1, "uniform"), (2, "uniform"), (2, "inverse")):
        with torch.no_grad():
            values[(levels, weighting)] = float(LOSSES.create("structure", levels=levels,
                                                              weighting=weighting).batch_loss(batch))
    assert len(set(values.values())) == 3
    # the margin only forgives: above every d_l it zeroes the term
    with torch.no_grad():
        assert float(LOSSES.create("structure", margin=100.0).batch_loss(batch)) == 0.0


# ------------------------------------------------------------------ every method on real data
@pytest.fixture(scope="module")
def names_dataset(tmp_path_factory: pytest.TempPathFactory):
    """120 emoji concepts named in English, German and French (CLDR), 2 image styles each."""
    from modalign.data import PairedDataset
    from modalign.data.recipes import DATASETS

    out = tmp_path_factory.getbasetemp() / "emoji-ml-120"
    if not (out / "manifest.jsonl").exists():
        DATASETS.create("emoji-multilingual", languages=("de", "fr"), styles=["noto", "openmoji"]).prepare(
            out, limit=120)
    return PairedDataset.from_manifest(out / "manifest.jsonl")


def test_every_method_aligns_real_data(names_dataset, session_cache) -> None:
    """English ↔ German ↔ French emoji names (frozen MiniLM): held-out concepts, 3 modalities."""
    from modalign.align import METHODS, TrainerSettings, fit
    from modalign.evaluation import evaluate

    train, test = names_dataset.split(0.25, seed=0)
    chance = 1 / len(set(test.groups))
    for method in METHODS.names():
        model = fit(train, ["text", "text_de", "text_fr"], method=method, dim=64, cache=session_cache,
                    settings=TrainerSettings(epochs=40, seed=0))
        result = evaluate(model, test, session_cache)
        r1 = np.mean([d["R@1"] for d in result["directions"].values()])
        assert len(result["directions"]) == 6
        assert r1 > 5 * chance, (method, result["directions"])

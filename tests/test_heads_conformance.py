"""Every registered head passes the same checks (iterating HEADS, so new entries are covered).

scikit-learn contract (hyper-parameters only in ``__init__``, ``config()`` rebuilds it), finite
output of the right shape, gradients reach every trainable parameter during training, a save/load
round trip through ``AlignedModel`` (safetensors + JSON), seeded determinism. Then every head
trains end to end on real data, and LiT locking keeps a modality's frozen space.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalign.align import AlignedModel, Branch, TrainerSettings, load
from modalign.align.heads import HEADS, Head

IN, OUT, N = 20, 12, 64


def _make(name: str, seed: int = 0) -> Head:
    torch.manual_seed(seed)
    head = HEADS.create(name, in_dim=IN) if name == "identity" else HEADS.create(name, in_dim=IN, out_dim=OUT)
    head.fit_input_stats(np.random.default_rng(seed).normal(size=(N, IN)) * 3 + 1)
    return head


def _x(seed: int = 1) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(N, IN)) * 3 + 1, dtype=torch.float32)


@pytest.mark.parametrize("name", HEADS.names())
def test_config_holds_exactly_the_init_hyperparameters(name: str) -> None:
    head = _make(name)
    cfg = head.config()
    assert cfg["name"] == name
    params = set(inspect.signature(type(head).__init__).parameters) - {"self"}
    assert set(cfg) - {"name"} <= params
    rebuilt = HEADS.create(name, **{k: v for k, v in cfg.items() if k != "name"})
    assert rebuilt.config() == cfg
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}


@pytest.mark.parametrize("name", HEADS.names())
def test_output_shape_and_finite(name: str) -> None:
    head = _make(name).eval()
    out = head(_x())
    assert out.shape == (N, head.out_dim)
    assert torch.isfinite(out).all()
    assert head.auxiliary_loss() is None  # auxiliary losses exist only while training


@pytest.mark.parametrize("name", HEADS.names())
def test_gradients_reach_every_trainable_parameter(name: str) -> None:
    head = _make(name)
    params = [p for p in head.parameters() if p.requires_grad]
    if not head.trainable:
        assert params == []
        return
    reached = {id(p): False for p in params}
    opt = torch.optim.AdamW(params, lr=1e-2)
    target = F.normalize(torch.randn(N, head.out_dim), dim=1)
    head.train()
    for step in range(3):  # zero-initialised residual branches only get gradients after a step
        opt.zero_grad()
        z = F.normalize(head(_x(step)), dim=1)
        loss = -(z * target).sum(1).mean()
        aux = head.auxiliary_loss()
        if aux is not None:
            assert torch.isfinite(aux)
            loss = loss + aux
        loss.backward()
        for p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all()
            reached[id(p)] |= bool(p.grad.abs().sum() > 0)
        opt.step()
    names = {id(p): n for n, p in head.named_parameters()}
    assert all(reached.values()), [names[i] for i, ok in reached.items() if not ok]


@pytest.mark.parametrize("name", HEADS.names())
def test_round_trip_through_aligned_model(name: str, tmp_path: Path) -> None:
    head = _make(name)
    if head.trainable:  # change every weight so zero-initialised parts are exercised too
        with torch.no_grad():
            for p in head.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    other = _make("linear", seed=5) if head.out_dim == OUT else HEADS.create("linear", in_dim=IN, out_dim=IN)
    model = AlignedModel(
        branches={"vec_a": Branch("vec_a", "vector", "vectors", {"dim": IN}, "vector", head.eval()),
                  "vec_b": Branch("vec_b", "vector", "vectors", {"dim": IN}, "vector", other.eval())},
        dim=head.out_dim, method="infonce")
    model.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    x = _x(7).numpy()
    np.testing.assert_array_equal(model.embed_features("vec_a", x), loaded.embed_features("vec_a", x))
    assert loaded.branch("vec_a").head.config() == head.config()


@pytest.mark.parametrize("name", HEADS.names())
def test_deterministic_with_a_seed(name: str) -> None:
    a, b = _make(name, seed=3), _make(name, seed=3)
    for h in (a, b):
        h.train()
    torch.manual_seed(11)
    out_a = a(_x())
    torch.manual_seed(11)
    out_b = b(_x())
    assert torch.equal(out_a, out_b)


def test_moe_routes_top_k_and_balances() -> None:
    head = HEADS.create("moe", in_dim=IN, out_dim=OUT, experts=4, top_k=2, aux_weight=1.0)
    head.fit_input_stats(_x().numpy())
    gates, _probs = head.gates(head.standardize(_x()))
    assert ((gates > 0).sum(1) == 2).all()
    torch.testing.assert_close(gates.sum(1), torch.ones(N))
    head.train()
    head(_x())
    aux = head.auxiliary_loss()
    assert aux is not None and torch.isfinite(aux)
    with torch.no_grad():  # a router that sends every row to experts 0 and 1 is penalised more
        head.router.weight.zero_()
        head.router.bias.copy_(torch.tensor([5.0, 5.0, -5.0, -5.0]))
    head(_x())
    skewed = head.auxiliary_loss()
    assert skewed is not None and float(skewed.detach()) > float(aux.detach())
    assert float(skewed.detach()) == pytest.approx(2.0, abs=1e-3)  # E·Σ f·p = 4·(½·½ + ½·½)
    with pytest.raises(ValueError, match="top_k"):
        HEADS.create("moe", in_dim=IN, out_dim=OUT, experts=2, top_k=3)


# ------------------------------------------------------------------ end to end on real data
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


@pytest.mark.parametrize("name", [n for n in HEADS.names() if n != "identity" and not HEADS.get(n).assembled])
def test_every_head_trains_on_real_data(name: str, names_dataset, session_cache) -> None:
    from modalign.align import fit
    from modalign.evaluation import evaluate

    train, test = names_dataset.split(0.25, seed=0)
    model = fit(train, ["text", "text_fr"], head=name, dim=64, cache=session_cache,
                settings=TrainerSettings(epochs=40, seed=0))
    assert model.branch("text").head.config()["name"] == name
    r1 = np.mean([d["R@1"] for d in evaluate(model, test, session_cache)["directions"].values()])
    assert r1 > 5 / len(set(test.groups)), name


def test_an_assembled_head_is_refused_by_fit(names_dataset, session_cache) -> None:
    """``--head ensemble`` is built by ``--seeds N --ensemble``; asking fit to train one is one clear error."""
    from modalign.align import fit

    with pytest.raises(ValueError, match="assembled from trained heads"):
        fit(names_dataset, ["text", "text_fr"], head="ensemble", cache=session_cache)


def test_lit_lock_keeps_the_frozen_space(names_dataset, session_cache, tmp_path: Path) -> None:
    """--lock text: text embeddings are the normalised frozen MiniLM features; French maps into them."""
    from typer.testing import CliRunner

    from modalign.cli import app
    from modalign.encoders import get_encoder
    from modalign.evaluation import evaluate

    manifest = Path(names_dataset.source)
    out = tmp_path / "lit"
    result = CliRunner().invoke(app, [
        "fit", "--data", str(manifest), "--modalities", "text,text_fr", "--lock", "text", "--head", "mlp",
        "--holdout", "0.25", "--epochs", "40", "--cache", str(session_cache.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = load(out)
    assert model.training["locked"] == ["text"]
    assert model.branch("text").head.config() == {"name": "identity", "in_dim": 384}
    assert model.dim == 384 and model.branch("text_fr").head.out_dim == 384
    texts = ["grinning face", "red heart", "cat"]
    raw = get_encoder("minilm").encode(texts)["layer6"]
    head = model.branch("text").head
    expected = F.normalize((torch.as_tensor(raw) - head.input_mean) / head.input_scale, dim=1).numpy()
    np.testing.assert_allclose(model.encode("text", texts, cache=session_cache), expected, atol=1e-5)
    test = names_dataset.split(0.25, seed=0)[1]
    r1 = np.mean([d["R@1"] for d in evaluate(model, test, session_cache)["directions"].values()])
    assert r1 > 5 / len(set(test.groups))

"""Training at scale: GradCache chunks give the full-batch gradients; features stream from memory-mapped
cache shards (never loaded whole) with the same result as in memory; ``fit --workers/--grad-chunks``."""

from __future__ import annotations

import copy
import json
import pickle
import tracemalloc

import numpy as np
import pytest


def _names(n: int, offset: int = 0) -> list[str]:
    import emoji

    return sorted({d["en"].strip(":").replace("_", " ") for d in emoji.EMOJI_DATA.values()})[offset : offset + n]


@pytest.fixture(scope="module")
def cached_pairs(session_cache):
    """512 real pairs in the cache: CLDR emoji names (minilm layer 3) ↔ "a picture of <name>" (final layer)."""
    from modalign.encoders import get_encoder
    from modalign.features import extract

    names = _names(512)
    enc = get_encoder("minilm")
    items = {"a": names, "b": [f"a picture of {n}" for n in names]}
    layers = {"a": "layer3", "b": enc.default_layer}
    feats = {m: extract(enc, items[m], session_cache, shard_size=128).features for m in items}
    return enc, items, layers, {m: feats[m][layers[m]] for m in items}


def _train_data(features):
    from modalign.align.trainer import TrainData

    n = len(next(iter(features.values())))
    return TrainData(features=features, present={m: np.ones(n, bool) for m in features},
                     groups=np.arange(n, dtype=np.int64))


def _heads(features, out_dim=64, head="linear"):
    import torch

    from modalign.align.heads.base import HEADS

    torch.manual_seed(0)
    heads = {m: HEADS.create(head, in_dim=x.shape[1], out_dim=out_dim) for m, x in features.items()}
    for m, h in heads.items():
        h.fit_input_stats(np.asarray(features[m][:256]))  # a sample: the stats need not see every row
    return heads


def _grads(heads, loss):
    return {f"{m}.{k}": p.grad.clone() for m, h in heads.items() for k, p in h.named_parameters()} | \
        {f"loss.{k}": p.grad.clone() for k, p in loss.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method,options", [("infonce", {}), ("siglip", {}), ("infonce", {"structure": 10.0})])
def test_grad_cache_four_chunks_equal_the_full_batch(cached_pairs, method, options):
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import backward_batch

    features = cached_pairs[3]
    data = _train_data(features)
    rows = np.random.default_rng(0).permutation(512)
    out = {}
    for chunks in (1, 4):
        heads, loss = _heads(features), build_loss(method, {**options, "structure_warmup": 0} if options else {})
        value = backward_batch(heads, loss, data.features, data.present, data.groups, rows, ["a", "b"], step=5,
                               chunks=chunks)
        out[chunks] = (value, _grads(heads, loss))
    assert out[1][0] == pytest.approx(out[4][0], rel=1e-5)
    full, chunked = out[1][1], out[4][1]
    assert set(full) == set(chunked) and any(k.startswith("loss.") for k in full)  # learnt scale (and bias)
    for k in full:
        scale = float(full[k].abs().max())
        assert scale > 0, k
        np.testing.assert_allclose(chunked[k].numpy(), full[k].numpy(), atol=1e-5 * scale + 1e-8, err_msg=k)


def test_grad_cache_replays_dropout_of_an_mlp_head(cached_pairs):
    """With dropout, chunked re-embedding must reuse each chunk's RNG state: same loss, finite grads."""
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainerSettings, train_heads

    features = {m: x[:256] for m, x in cached_pairs[3].items()}
    data = _train_data(features)
    res = train_heads(_heads(features, head="mlp"), build_loss("infonce"), data, None,
                      TrainerSettings(epochs=3, batch_size=128, grad_chunks=4, patience=5))
    losses = [h["loss"] for h in res.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_cache_features_are_memory_mapped_and_stream(cached_pairs, session_cache):
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainerSettings, train_heads
    from modalign.features.reader import CachedMatrix, open_matrix

    enc, items, layers, in_memory = cached_pairs
    streamed = {}
    for m in items:
        mat, ok = open_matrix(session_cache, enc, [*items[m], None, "never encoded"], layers[m])
        assert ok[:512].all() and not ok[512:].any()
        assert all(isinstance(p, np.memmap) for p in mat.parts) and len(mat.parts) >= 4  # one map per shard
        np.testing.assert_array_equal(np.asarray(mat[:512]), in_memory[m])
        assert not mat.take([512, 513]).any()  # missing rows read as zeros
        streamed[m] = mat[:512]
    again = pickle.loads(pickle.dumps(streamed["a"]))  # how DDP workers get it: re-mapped, not copied
    assert isinstance(again.parts[0], np.memmap) and len(pickle.dumps(streamed["a"])) < 512 * 384 * 4 // 10
    np.testing.assert_array_equal(again.take([3, 500]), in_memory["a"][[3, 500]])

    # count the rows each read asks for: training must only ever read one batch
    largest = [0]
    take = CachedMatrix.take

    def counting_take(self, rows, axis=0):
        largest[0] = max(largest[0], len(np.asarray(rows)))
        return take(self, rows, axis)

    settings = TrainerSettings(epochs=3, batch_size=64, lr=3e-3, patience=5)
    heads_mem = _heads(in_memory)
    heads_disk = copy.deepcopy(heads_mem)
    res_mem = train_heads(heads_mem, build_loss("infonce"), _train_data(in_memory), None, settings)
    CachedMatrix.take = counting_take  # type: ignore[method-assign]
    tracemalloc.start()
    try:
        res_disk = train_heads(heads_disk, build_loss("infonce"), _train_data(streamed), None, settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        CachedMatrix.take = take  # type: ignore[method-assign]
    whole = sum(x.nbytes for x in in_memory.values())
    assert largest[0] == 64
    assert peak < whole / 4, f"training allocated {peak} bytes; the features are {whole}"
    np.testing.assert_allclose([h["loss"] for h in res_disk.history], [h["loss"] for h in res_mem.history],
                               rtol=1e-5)
    for m in heads_mem:
        np.testing.assert_allclose(heads_disk[m].linear.weight.detach().numpy(),
                                   heads_mem[m].linear.weight.detach().numpy(), atol=1e-5)


def test_fit_cli_workers_and_grad_chunks(tmp_path, session_cache):
    from typer.testing import CliRunner

    from modalign.align import load
    from modalign.cli import app

    names = _names(96, offset=600)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": n, "text": n, "text_fr": f"a picture of {n}"}) + "\n"
                                for n in names))
    common = ["fit", "--data", str(manifest), "--modalities", "text,text_fr", "--dim", "32", "--epochs", "3",
              "--batch-size", "32", "--cache", str(session_cache.root)]
    for extra in (["--workers", "2"], ["--grad-chunks", "4"]):
        out = tmp_path / extra[0].strip("-")
        res = CliRunner().invoke(app, [*common, *extra, "--out", str(out)])
        assert res.exit_code == 0, res.output
        model = load(out)
        assert model.training["settings"][extra[0][2:].replace("-", "_")] == int(extra[1])
        assert len(model.metrics["history"]) == 3
    bad = CliRunner().invoke(app, [*common, "--workers", "2", "--grad-chunks", "2", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "grad" in bad.output


def test_fit_arrays_takes_cached_matrices(cached_pairs, session_cache):
    """The whole post-encoding fit (split, input stats, method, validation) runs on mapped shards too."""
    import torch

    from modalign.align.fit import fit_arrays
    from modalign.align.trainer import TrainerSettings
    from modalign.features.reader import open_matrix

    enc, items, layers, in_memory = cached_pairs
    streamed = {m: {layers[m]: open_matrix(session_cache, enc, items[m], layers[m])[0]} for m in items}
    ram = {m: {layers[m]: in_memory[m]} for m in items}
    present = {m: np.ones(512, bool) for m in items}
    runs = []
    for feats in (ram, streamed):
        torch.manual_seed(0)  # head initialisation draws from the global generator
        runs.append(fit_arrays(feats, present, items["a"], list(items), default_layers=layers,
                               settings=TrainerSettings(epochs=3, batch_size=64)))
    assert [h["loss"] for h in runs[1].info["history"]] == pytest.approx([h["loss"] for h in runs[0].info["history"]],
                                                                          rel=1e-5)
    assert runs[1].info["val_R@1"] == pytest.approx(runs[0].info["val_R@1"])

"""``fit`` streams features from the cache: no step reads a whole column (only batches, fixed-size chunks
and a capped validation subset), and the result equals fitting the same features held in memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch

N_ROWS = 320


def _names(n: int) -> list[str]:
    import emoji

    return sorted({d["en"].strip(":").replace("_", " ") for d in emoji.EMOJI_DATA.values()})[1000 : 1000 + n]


@pytest.fixture(scope="module")
def text_pairs(tmp_path_factory):
    """Real CLDR emoji names ↔ "an icon of <name>", a group per name (minilm encodes both)."""
    from modalign.data import PairedDataset

    path = tmp_path_factory.mktemp("streamed") / "m.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": n, "text_en": f"an icon of {n}"}) + "\n"
                            for i, n in enumerate(_names(N_ROWS))))
    return PairedDataset.from_manifest(path)


class ReadLog:
    """Wraps ``CachedMatrix.take`` to record how many rows each read asked for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from modalign.features.reader import CachedMatrix

        self.sizes: list[int] = []
        original = CachedMatrix.take

        def take(matrix, rows, axis=0):
            rows_arr = np.asarray(rows)
            self.sizes.append(int(rows_arr.sum()) if rows_arr.dtype == bool else len(rows_arr))
            return original(matrix, rows, axis)

        monkeypatch.setattr(CachedMatrix, "take", take)


def _in_memory_fit(dataset, cache, method, settings):
    """The pre-streaming path: every column encoded into arrays, then the same ``fit_arrays``."""
    from modalign.align.fit import encode_column, fit_arrays
    from modalign.encoders import get_encoder

    enc = get_encoder("minilm")
    feats, present = {}, {}
    for m in ("text", "text_en"):
        feats[m], present[m], _ = encode_column(dataset, m, enc, cache, [enc.default_layer], stream=False)
        assert all(type(x) is np.ndarray for x in feats[m].values())
    return fit_arrays(feats, present, dataset.groups, ["text", "text_en"],
                      default_layers={"text": enc.default_layer, "text_en": enc.default_layer}, method=method,
                      dim=32, settings=settings)


@pytest.mark.parametrize("method", ["infonce", "procrustes"])
def test_fit_streams_and_equals_in_memory_fit(text_pairs, session_cache, monkeypatch, method):
    import modalign.align.heads.base as head_base
    import modalign.align.trainer as trainer
    from modalign.align import fit
    from modalign.align.trainer import TrainerSettings

    settings = TrainerSettings(epochs=3, batch_size=32)
    reference = _in_memory_fit(text_pairs, session_cache, method, settings)

    if method == "infonce":
        # a small stats chunk, so the streamed path must use it on this small real dataset (a closed form
        # reads its rows into memory anyway: there, equal stats keep the SVD input identical)
        monkeypatch.setattr(head_base, "STATS_CHUNK", 100)
    reads = ReadLog(monkeypatch)
    model = fit(text_pairs, ["text", "text_en"], method=method, dim=32, cache=session_cache, settings=settings)
    assert reads.sizes, "fit read nothing from the cache shards: features were not streamed"
    n_train = model.training["n_train_rows"]
    if method == "infonce":
        # batches of 32, the validation rows, the stats chunk: never a whole column of train rows at once...
        assert max(reads.sizes) < n_train
    for m in ("text", "text_en"):
        streamed, ram = model.branches[m].head.state_dict(), reference.heads[m].state_dict()
        for key in ram:
            np.testing.assert_allclose(streamed[key].numpy(), ram[key].numpy(), atol=1e-6, err_msg=f"{m}.{key}")
    assert model.metrics["fit"]["val_R@1"] == pytest.approx(reference.info["val_R@1"])
    if method == "infonce":
        assert model.training["n_val_rows"] <= trainer.MAX_VAL_ROWS  # the cap did not change this score


def test_chunked_input_stats_equal_one_pass(text_pairs, session_cache):
    from modalign.align.fit import encode_column
    from modalign.align.heads.base import HEADS
    from modalign.encoders import get_encoder

    enc = get_encoder("minilm")
    feats, present, _ = encode_column(text_pairs, "text", enc, session_cache, [enc.default_layer], stream=True)
    matrix = feats[enc.default_layer]
    assert present.all() and len(matrix) == N_ROWS
    one, chunked = (HEADS.create("linear", in_dim=matrix.shape[1], out_dim=8) for _ in range(2))
    one.fit_input_stats(np.asarray(matrix))
    chunked.fit_input_stats(matrix, chunk=37)  # 320 rows in 9 uneven chunks, read from the shards
    torch.testing.assert_close(chunked.input_mean, one.input_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(chunked.input_scale, one.input_scale, atol=1e-6, rtol=1e-5)


def test_validation_is_scored_on_a_capped_fixed_subset(monkeypatch):
    """Scoring is rows² work per epoch: R@1 uses a seeded subset of ≤ MAX_VAL_ROWS, scored in query chunks."""
    import modalign.align.trainer as trainer
    from modalign.align.heads.base import HEADS
    from modalign.align.trainer import TrainData, validation_score

    rng = np.random.default_rng(0)
    n = 6000
    x = rng.standard_normal((n, 16)).astype(np.float32)
    data = TrainData(features={"a": x, "b": x + 0.05 * rng.standard_normal((n, 16)).astype(np.float32)},
                     present={"a": np.ones(n, bool), "b": np.ones(n, bool)}, groups=np.arange(n))
    heads = {m: HEADS.create("identity", in_dim=16) for m in "ab"}
    monkeypatch.setattr(trainer, "MAX_VAL_ROWS", 500)
    tracemalloc.start()
    capped = validation_score(heads, data, [("a", "b")])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 30e6  # one 6000² float32 score matrix alone would be 144 MB
    assert capped == validation_score(heads, data, [("a", "b")])  # the same subset every epoch
    full = validation_score(heads, data, [("a", "b")], max_rows=n)
    assert 0.5 < capped <= 1.0 and capped >= full  # fewer distractors: at least as easy as the full set


def test_chunked_validation_equals_one_block():
    from modalign.align.trainer import both_ways_r_at_1

    rng = np.random.default_rng(1)
    za = rng.standard_normal((700, 8)).astype(np.float32)
    zb = za + 0.8 * rng.standard_normal((700, 8)).astype(np.float32)
    groups = rng.integers(0, 500, 700)  # some shared groups: several relevant items per query
    one = both_ways_r_at_1(za, zb, groups, chunk=1000)
    chunked = both_ways_r_at_1(za, zb, groups, chunk=128)
    assert 0.05 < one[0] < 0.95 and chunked == pytest.approx(one, abs=1e-12)

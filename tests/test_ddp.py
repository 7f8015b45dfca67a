"""DDP head training: 2 gloo processes keep the weights in sync and follow the 1-process loss curve."""

from __future__ import annotations

import copy

import numpy as np
import pytest


@pytest.fixture(scope="module")
def emoji_pairs(session_cache):
    """Real pairs: CLDR emoji names (minilm layer 3) ↔ the same names in a sentence (final layer)."""
    import emoji

    from modalign.align.trainer import TrainData
    from modalign.encoders import get_encoder
    from modalign.features import extract

    names = sorted({d["en"].strip(":").replace("_", " ") for d in emoji.EMOJI_DATA.values()})[:64]
    enc = get_encoder("minilm")
    a = extract(enc, names, session_cache, layers=["layer3"]).features["layer3"]
    b = extract(enc, [f"a picture of {n}" for n in names], session_cache, layers=[enc.default_layer])
    b_feats = b.features[enc.default_layer]
    n = len(names)
    return TrainData(features={"a": a, "b": b_feats}, present={"a": np.ones(n, bool), "b": np.ones(n, bool)},
                     groups=np.arange(n, dtype=np.int64))


def _heads(train):
    import torch

    from modalign.align.heads.linear import LinearHead

    torch.manual_seed(0)
    heads = {m: LinearHead(x.shape[1], 32) for m, x in train.features.items()}
    for m, h in heads.items():
        h.fit_input_stats(train.features[m])
    return heads


def test_ddp_two_gloo_workers_match_one(emoji_pairs):
    from modalign.align.ddp import train_ddp
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainerSettings

    settings = TrainerSettings(epochs=4, batch_size=32, lr=3e-3, seed=0)
    heads1, heads2 = _heads(emoji_pairs), _heads(emoji_pairs)
    one = train_ddp(heads1, build_loss("infonce"), emoji_pairs, settings, workers=1)
    two = train_ddp(heads2, build_loss("infonce"), emoji_pairs, settings, workers=2)
    assert two.workers == 2 and two.max_rank_divergence == 0.0  # DDP kept both ranks bit-identical
    assert len(one.history) == len(two.history) == 4
    assert one.history[-1] < one.history[0]  # it learns
    np.testing.assert_allclose(two.history, one.history, rtol=1e-4, atol=1e-5)
    for m in heads1:
        np.testing.assert_allclose(heads2[m].linear.weight.detach().numpy(), heads1[m].linear.weight.detach().numpy(),
                                   atol=1e-4)


def test_ddp_learnable_temperature_and_untrained_copy_differ(emoji_pairs):
    """A learnable loss scale is synced too, and training really moved the weights."""
    from modalign.align.ddp import train_ddp
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainerSettings

    heads = _heads(emoji_pairs)
    before = copy.deepcopy(heads["a"].linear.weight.detach())
    loss = build_loss("siglip")
    res = train_ddp(heads, loss, emoji_pairs, TrainerSettings(epochs=2, batch_size=48, seed=1), workers=2)
    assert res.max_rank_divergence == 0.0
    assert float((heads["a"].linear.weight.detach() - before).abs().max()) > 1e-4


def test_train_loop_frees_its_ddp_wrapper_before_returning(emoji_pairs, tmp_path):
    """The cause of a rare SIGABRT of a spawned worker ("terminate called without an active exception"):
    the DDP wrapper lives in a reference cycle that holds the gloo process group, so unless train_loop frees
    it, it can be collected only during interpreter exit, where gloo's teardown aborts the process."""
    import json

    import torch.multiprocessing as mp

    from helpers.ddp_lifetime import rank_main
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainerSettings

    settings = TrainerSettings(epochs=1, batch_size=32, seed=0)
    mp.spawn(rank_main, args=(2, str(tmp_path / "store"), _heads(emoji_pairs), build_loss("infonce"), emoji_pairs,
                              settings, str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports == [{"ddp_alive": 0}, {"ddp_alive": 0}]

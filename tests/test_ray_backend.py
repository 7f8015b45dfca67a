"""Ray Data extraction backend on a local Ray cluster: same cache shards, same features as local."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_backend_fills_the_cache_like_local(local_ray, tmp_path):
    import emoji

    from modalign.encoders import get_encoder
    from modalign.features import FeatureCache, extract
    from modalign.features.backends import BACKENDS

    names = sorted({d["en"].strip(":").replace("_", " ") for d in emoji.EMOJI_DATA.values()})[:40]
    names += names[:3]  # duplicates are encoded once
    enc = get_encoder("minilm")
    ray_cache, local_cache = FeatureCache(tmp_path / "ray"), FeatureCache(tmp_path / "local")

    backend = BACKENDS["ray"](concurrency=2, batch_size=16)
    done: list[int] = []
    assert backend.fill("minilm", {}, names, ray_cache, progress=done.append) == 40
    assert sum(done) == len(names)
    shards = list(ray_cache.root.rglob("shard-*.safetensors"))
    assert len(shards) >= 3  # one shard per 16-item batch, the local layout

    from_ray = extract(enc, names, ray_cache)
    assert from_ray.n_encoded == 0  # everything came from the shards Ray wrote
    local = extract(enc, names, local_cache)
    assert local.n_encoded == 40
    for layer in enc.layers:
        np.testing.assert_allclose(from_ray.features[layer], local.features[layer], rtol=1e-4, atol=1e-5)
    assert backend.fill("minilm", {}, names, ray_cache) == 0  # a second run sends nothing to Ray


def test_local_backend_is_extract(tmp_path):
    from modalign.features import FeatureCache
    from modalign.features.backends import BACKENDS

    cache = FeatureCache(tmp_path)
    assert BACKENDS["local"]().fill("minilm", {}, ["cat", "dog", "cat"], cache) == 2
    assert BACKENDS["local"]().fill("minilm", {}, ["cat", "dog"], cache) == 0


def test_fit_cli_with_ray_backend(local_ray, tmp_path):
    """``modalign fit --backend ray`` encodes on Ray, then fits from the shards it wrote."""
    import json

    import emoji
    from typer.testing import CliRunner

    from modalign.cli import app

    names = sorted({d["en"].strip(":").replace("_", " ") for d in emoji.EMOJI_DATA.values()})[100:130]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": n, "text": n, "text_fr": f"a picture of {n}"}) + "\n"
                                for n in names))
    cache = tmp_path / "cache"
    res = CliRunner().invoke(app, ["fit", "--data", str(manifest), "--modalities", "text,text_fr", "--method",
                                   "procrustes", "--dim", "16", "--out", str(tmp_path / "model"), "--cache", str(cache),
                                   "--backend", "ray", "--ray-workers", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "model" / "heads.safetensors").exists()
    assert list(cache.rglob("shard-*.safetensors"))
    bad = CliRunner().invoke(app, ["fit", "--data", str(manifest), "--modalities", "text,text_fr", "--out",
                                   str(tmp_path / "m2"), "--backend", "spark"])
    assert bad.exit_code == 2 and "--backend" in bad.output

"""Write the real pairs that ``benchmarks/gpu_train.py`` trains on, so the GPU machine needs no encoder.

Three minilm views of CLDR emoji names (a group per name): ``a`` the name (hidden layer 3), ``b`` "an icon
of <name>" and ``c`` "a picture of <name>" (final layer). ~2,000 names x 3 x 384 float32 is ~9 MB.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/make_gpu_pairs.py --cache /work/cache --out .gpu/pairs.npz

``.gpu/`` is for this machine only: list it in ``.git/info/exclude`` (not .gitignore).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np


def emoji_names(n: int) -> list[str]:
    import emoji

    return sorted({d["en"].strip(":").replace("_", " ") for d in emoji.EMOJI_DATA.values()})[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".gpu/pairs.npz"))
    parser.add_argument("--cache", type=Path, default=None, help="feature cache directory (default: the user cache)")
    parser.add_argument("--names", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from modalign.encoders import get_encoder
    from modalign.features import FeatureCache, extract

    names = emoji_names(args.names)
    enc = get_encoder("minilm")
    cache = FeatureCache(args.cache)
    views = {"a": (names, "layer3"), "b": ([f"an icon of {n}" for n in names], enc.default_layer),
             "c": ([f"a picture of {n}" for n in names], enc.default_layer)}
    arrays: dict[str, np.ndarray] = {}
    for key, (texts, layer) in views.items():
        got = extract(enc, texts, cache, layers=[layer], on_error="fail")
        arrays[key] = np.ascontiguousarray(got.features[layer], dtype=np.float32)
        print(f"{key}: {arrays[key].shape} ({layer}, {got.n_encoded} newly encoded)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays, groups=np.arange(len(names), dtype=np.int64),
                        names=np.asarray(names), layers=np.asarray([views[k][1] for k in "abc"]))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, {len(names)} pairs)", flush=True)


if __name__ == "__main__":
    main()

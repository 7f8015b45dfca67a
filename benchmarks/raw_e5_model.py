"""Save the raw multilingual-e5 space as a modalign model (identity heads, nothing trained): the baseline
a fitted alignment of e5 (or of an English-only encoder to e5) has to beat.

    .venv/bin/python benchmarks/raw_e5_model.py --data MANIFEST --modalities text,text_es \
        --holdout 0.2 --cache CACHE --out MODEL_DIR
    .venv/bin/modalign eval --model MODEL_DIR --data MANIFEST --cache CACHE

Each head only centres its language on the training rows' mean (the identity head's input statistics),
which is what every modalign head does before projecting. The holdout split matches `modalign fit`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modalign.align.fit import encode_column
from modalign.align.heads.base import HEADS
from modalign.align.model import AlignedModel, Branch
from modalign.data.dataset import PairedDataset
from modalign.encoders import get_encoder
from modalign.features import FeatureCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--modalities", required=True, help="comma-separated text modalities")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ds = PairedDataset.from_manifest(args.data)
    train = ds.split(args.holdout, seed=args.seed)[0] if args.holdout > 0 else ds
    encoder = get_encoder("e5")
    cache = FeatureCache(args.cache)
    branches = {}
    for m in args.modalities.split(","):
        feats, present, _ = encode_column(train, m, encoder, cache, ["final"])
        head = HEADS.create("identity", in_dim=encoder.dim)
        head.fit_input_stats(feats["final"][present])
        branches[m] = Branch(m, "text", "e5", encoder.config(), "final", head.eval())
    training = {"method": "identity", "holdout": {"fraction": args.holdout, "seed": args.seed},
                "manifest": str(args.data.resolve()), "n_rows": len(train)}
    AlignedModel(branches=branches, dim=encoder.dim, method="raw-e5", training=training).save(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

"""``modalign demo``: prepare emoji, fit auto, InfoNCE-linear and Procrustes on 80% of concepts, evaluate on the rest.

A rerun reuses each saved model whose fingerprint (the manifest's bytes, the method, the seed, the
held-out share and the modalign version) matches, so a second ``make demo`` only evaluates; ``--refit``
fits again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import typer

from modalign import __version__
from modalign.align.model import AlignedModel
from modalign.cli._ui import console, metrics_table, progress_bars
from modalign.errors import ModalignError

HOLDOUT = 0.2


def demo_fingerprint(manifest: Path, method: str, seed: int) -> str:
    """What a saved demo model was fitted from; a model with another fingerprint is fitted again."""
    digest = hashlib.sha256(manifest.read_bytes())
    digest.update(json.dumps({"method": method, "seed": seed, "holdout": HOLDOUT, "version": __version__},
                             sort_keys=True).encode())
    return digest.hexdigest()


def reusable_model(folder: Path, fingerprint: str) -> AlignedModel | None:
    """The model saved in ``folder`` when it loads and was fitted from ``fingerprint``; else None."""
    if not (folder / "config.json").exists():
        return None
    try:
        model = AlignedModel.load(folder)
    except (ModalignError, OSError, ValueError):
        return None  # a damaged or foreign folder is fitted again, not trusted
    return model if model.training.get("demo_fingerprint") == fingerprint else None


def demo_command(
    out: Path = typer.Option(Path("demo-output"), "--out", help="where data, models and results go"),
    limit: int | None = typer.Option(None, "--limit", help="only the first N emoji concepts (faster)"),
    styles: str = typer.Option("noto,openmoji", "--styles", help="emoji styles: noto, openmoji, fluent-3d, google"),
    seed: int = typer.Option(0, "--seed", help="seed of the split, the folds and the training"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache directory"),
    refit: bool = typer.Option(False, "--refit", help="fit every model again, even when a saved one matches"),
) -> None:
    """End to end on the built-in emoji dataset: text↔image retrieval on held-out concepts."""
    from modalign.align import TrainerSettings, fit
    from modalign.cli._common import parse_list
    from modalign.cli.datasets_cmd import prepare_recipe
    from modalign.data import PairedDataset
    from modalign.data.recipes.emoji import EmojiRecipe
    from modalign.evaluation import evaluate
    from modalign.features import FeatureCache

    started = time.perf_counter()
    data_dir = out / "data" / "emoji"
    console.rule("[bold]1/3 prepare the emoji dataset")
    # base concepts only (skin-tone variants share their base's name): one image per concept and style
    recipe = EmojiRecipe(styles=parse_list(styles), include_variants=False)
    prepared = prepare_recipe(recipe, data_dir, limit)
    console.print(f"{prepared.rows} image–name pairs, {prepared.groups} concepts ({prepared.counts})")
    ds = PairedDataset.from_manifest(prepared.manifest)
    train, test = ds.split(HOLDOUT, seed=seed)
    console.print(f"train: {len(train)} rows / {len(set(train.groups))} concepts; "
                  f"held-out test: {len(test)} rows / {len(set(test.groups))} concepts")
    feature_cache = FeatureCache(cache)
    results: dict[str, dict] = {}
    # the default (auto) beside the two classic baselines it chooses among
    methods = {"auto (default)": "auto", "InfoNCE-linear": "infonce", "Procrustes": "procrustes"}
    console.rule("[bold]2/3 align image and text (frozen EfficientNet-Lite0 + MiniLM)")
    with progress_bars() as update:
        models = {}
        for label, method in methods.items():
            folder = out / "models" / method
            fingerprint = demo_fingerprint(prepared.manifest, method, seed)
            model = None if refit else reusable_model(folder, fingerprint)
            if model is not None:
                console.print(f"{label}: reusing {folder} (same data, method, seed and version; --refit fits again)")
            else:
                model = fit(train, ["image", "text"], method=method, cache=feature_cache,
                            settings=TrainerSettings(seed=seed), progress=update)
                model.training["holdout"] = {"fraction": HOLDOUT, "seed": seed}
                model.training["demo_fingerprint"] = fingerprint
                model.save(folder)
            models[label] = model
    console.rule("[bold]3/3 evaluate on held-out concepts")
    with progress_bars() as update:
        for label, model in models.items():
            results[label] = evaluate(model, test, feature_cache, progress=update)
    picked = models["auto (default)"].metrics["fit"]["auto"]["picked"]
    table = metrics_table(f"emoji, held-out concepts (n={results['InfoNCE-linear']['n']} pairs); "
                          f"auto picked {picked}",
                          {label: r["directions"] for label, r in results.items()}, keys=("R@1", "R@5", "R@10"))
    console.print(table)
    for label, r in results.items():
        console.print(f"{label}: modality gap {r['modality_gap']:.3f}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    console.print(f"[green]done in {time.perf_counter() - started:.0f} s[/]; results in {out / 'results.json'}")

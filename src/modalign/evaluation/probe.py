"""Layer probe: score every layer pair of two (or more) frozen encoders with several alignment measures.

The rows are those ``fit --layers auto`` scores (``sample_rows`` draws them with the same generator as
``align.layer_selection.select_layers``), the mutual-kNN table and the recommendation come from
``select_layers`` itself, so ``probe`` and ``fit --layers auto`` cannot disagree. The other measures
are computed on the same rows; each layer is prepared once (``PairMetric.prepare``) and then compared
with every layer of the partner modality.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modalign.metrics.base import PairMetric
from modalign.metrics.registry import get_metric

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
DEFAULT_PROBE_METRICS = ("mutual_knn", "cka", "cka_unbiased", "rsa", "svcca")
#: the measure ``fit --layers auto`` maximises; its table always comes from select_layers
SELECTION_METRIC = "mutual_knn"
#: verdict bands, as multiples of chance mutual-kNN; a shuffled pairing scores about 1x (tests/test_probe.py)
CHANCE_LIKE = 2.0
CLEARLY_ALIGNED = 5.0
#: what each band went with on the built-in datasets: the default fit's held-out R@1 as a multiple of its
#: chance (min, median, max) over 84 fits of make bench-align (7 datasets × 4 sizes × 3 seeds; the probe's
#: rank correlation with held-out R@1 is 0.84; benchmarks/probe_calibration.py, docs/measure.md)
HELDOUT_X_CHANCE = {"not": (1.0, 3.0, 5.5), "weak": (4.5, 41.1, 83.2), "clear": (5.3, 57.3, 299.5)}


@dataclass
class PairScores:
    """Scores of every layer pair of two modalities: ``tables[metric][i, j]`` for layers_a[i], layers_b[j]."""

    a: str
    b: str
    layers_a: list[str]
    layers_b: list[str]
    n: int
    tables: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.a}|{self.b}"

    def best(self, metric: str) -> tuple[str, str, float]:
        t = self.tables[metric]
        i, j = np.unravel_index(int(np.nanargmax(t)), t.shape)
        return self.layers_a[i], self.layers_b[j], float(t[i, j])

    def at(self, metric: str, la: str, lb: str) -> float:
        return float(self.tables[metric][self.layers_a.index(la), self.layers_b.index(lb)])

    def chance(self, k: int | None) -> float | None:
        """Mutual-kNN of unrelated spaces: a random k-set of the other n−1 rows shares k/(n−1) of its members."""
        if k is None or self.n < 2:
            return None
        return k / (self.n - 1)

    def verdict(self, k: int | None, groups: int | None = None) -> str:
        """One plain sentence on the best mutual-kNN pair against chance, and the held-out R@1 that level
        went with on the built-in datasets (as a multiple of chance; as R@1 for a held-out fifth of
        ``groups`` concepts when that is given)."""
        chance = self.chance(k)
        la, lb, score = self.best(SELECTION_METRIC)
        if chance is None or not np.isfinite(score):
            return "no verdict: mutual-kNN could not be scored on these rows"
        ratio = score / chance
        where = (f"{self.a} {la} and {self.b} {lb} share {score:.3f} of their {k} nearest neighbours "
                 f"({ratio:.1f}x chance {chance:.3f})")
        band = "not" if ratio < CHANCE_LIKE else "weak" if ratio < CLEARLY_ALIGNED else "clear"
        lo, mid, hi = HELDOUT_X_CHANCE[band]
        expect = f"on the built-in datasets this level went with held-out R@1 {lo:g}-{hi:g}x chance (median {mid:g}x)"
        if groups is not None and groups >= 10:
            gallery = max(groups // 5, 2)
            r1 = [min(x / gallery, 1.0) for x in (lo, mid, hi)]
            expect += (f"; for a held-out fifth of these {groups} concepts (chance {1 / gallery:.3f}): R@1 about "
                       f"{r1[0]:.2f}-{r1[2]:.2f}, typically {r1[1]:.2f}")
        if band == "not":
            return f"not alignable from these pairs: {where}; the two encoders see different neighbourhoods; {expect}"
        if band == "weak":
            return f"alignable: {where}; more pairs or other layers raise it; {expect}"
        return f"clearly alignable: {where}; {expect}"


@dataclass
class ProbeResult:
    modalities: list[str]
    encoders: dict[str, str]
    pairs: dict[str, PairScores]
    recommendation: dict[str, str]
    default_layers: dict[str, str]
    k: int | None
    metrics: list[str]
    #: concepts among the probed rows (probe_dataset knows them): the verdict's R@1 range needs a gallery size
    groups: int | None = None

    def to_json(self) -> dict[str, Any]:
        pairs: dict[str, Any] = {}
        for key, p in self.pairs.items():
            pairs[key] = {
                "layers": {p.a: p.layers_a, p.b: p.layers_b}, "n": p.n,
                "scores": {m: np.round(t, 6).tolist() for m, t in p.tables.items()},
                "best": {m: dict(zip((p.a, p.b, "score"), p.best(m), strict=True)) for m in p.tables},
                "default": {m: p.at(m, self.default_layers[p.a], self.default_layers[p.b]) for m in p.tables},
                "chance": {SELECTION_METRIC: p.chance(self.k)}, "verdict": p.verdict(self.k, self.groups),
            }
        return {"modalities": self.modalities, "encoders": self.encoders, "metrics": self.metrics,
                "k": self.k, "pairs": pairs, "recommendation": self.recommendation,
                "default_layers": self.default_layers, "selection_metric": SELECTION_METRIC}


def sample_rows(present: dict[str, np.ndarray], modalities: Sequence[str], seed: int = 0,
                max_pairs: int = 5000) -> np.ndarray:
    """Rows the layer selection will score, drawn before encoding so only they are encoded.

    Two modalities: exactly ``select_layers``' draw (same generator, same order). More: an even draw of
    rows holding at least two of them (select_layers then scores each pair on its share of those rows).
    """
    rng = np.random.default_rng(seed)
    mods = list(modalities)
    if len(mods) == 2:
        rows = np.flatnonzero(present[mods[0]] & present[mods[1]])
    else:
        rows = np.flatnonzero(np.sum([present[m] for m in mods], axis=0) >= 2)
    if len(rows) > max_pairs:
        rows = np.sort(rng.choice(rows, max_pairs, replace=False))
    return rows


def probe_layers(
    features: dict[str, dict[str, np.ndarray]],
    present: dict[str, np.ndarray],
    modalities: Sequence[str],
    *,
    encoders: dict[str, str] | None = None,
    default_layers: dict[str, str] | None = None,
    metrics: Sequence[str] = DEFAULT_PROBE_METRICS,
    seed: int = 0,
    max_pairs: int = 5000,
    progress: Progress | None = None,
) -> ProbeResult:
    """Score all layer pairs. ``features[m][layer]`` are (n_rows, d) arrays, ``present[m]`` their row mask."""
    from modalign.align.layer_selection import select_layers

    mods = list(modalities)
    metrics = list(dict.fromkeys([SELECTION_METRIC, *metrics]))
    measures: dict[str, PairMetric] = {}
    for name in metrics:
        if name == SELECTION_METRIC:
            continue
        metric = get_metric(name)
        if not isinstance(metric, PairMetric) or metric.same_space:
            raise ValueError(f"metric {name!r} does not compare representations of different widths; "
                             f"use one of {list(DEFAULT_PROBE_METRICS)}")
        measures[name] = metric

    chosen, report = select_layers(features, present, mods, seed=seed, max_pairs=max_pairs)
    rng = np.random.default_rng(seed)  # the same draws select_layers made, pair by pair
    pairs: dict[str, PairScores] = {}
    combos = [(a, b) for a, b in itertools.combinations(mods, 2)]
    total = sum(len(features[a]) + len(features[b]) + len(features[a]) * len(features[b]) * len(measures)
                for a, b in combos)
    done = 0
    for a, b in combos:
        rows = np.flatnonzero(present[a] & present[b])
        if len(rows) < 3:
            log.warning("probe: %s and %s share only %d rows; skipped", a, b, len(rows))
            continue
        if len(rows) > max_pairs:
            rows = np.sort(rng.choice(rows, max_pairs, replace=False))
        la, lb = list(features[a]), list(features[b])
        scores = PairScores(a, b, la, lb, len(rows))
        table = report["scores"][f"{a}|{b}"]
        scores.tables[SELECTION_METRIC] = np.array([[table[f"{x}|{y}"] for y in lb] for x in la])
        for name, metric in measures.items():
            if len(rows) < metric.min_rows:
                scores.tables[name] = np.full((len(la), len(lb)), np.nan)
                continue
            prepared_b = {y: metric.prepare(features[b][y][rows]) for y in lb}
            out = np.zeros((len(la), len(lb)))
            for i, x in enumerate(la):
                pa = metric.prepare(features[a][x][rows])
                for j, y in enumerate(lb):
                    out[i, j] = metric.compare(pa, prepared_b[y])
                    done += 1
                    if progress is not None:
                        progress("probe metrics", done, total)
            scores.tables[name] = out
        done += len(la) + len(lb)
        if progress is not None:
            progress("probe metrics", done, total)
        pairs[scores.key] = scores
    if not pairs:
        raise ValueError(f"no two of {mods} share at least 3 rows with items that encoded")
    defaults = default_layers or {m: list(features[m])[-1] for m in mods}
    return ProbeResult(modalities=mods, encoders=dict(encoders or {}), pairs=pairs, recommendation=chosen,
                       default_layers=defaults, k=report.get("k"), metrics=metrics)


def probe_dataset(
    dataset: Any,
    modalities: Sequence[str],
    *,
    encoders: dict[str, str] | None = None,
    cache: Any = None,
    metrics: Sequence[str] = DEFAULT_PROBE_METRICS,
    seed: int = 0,
    max_pairs: int = 5000,
    on_error: str = "skip",
    progress: Progress | None = None,
) -> tuple[ProbeResult, list[Any]]:
    """Encode every layer of the sampled rows (one pass per encoder, through the feature cache) and probe."""
    from modalign.align.fit import encode_column, resolve_encoder
    from modalign.encoders import get_encoder

    mods = list(modalities)
    for m in mods:
        if m not in dataset.columns:
            raise ValueError(f"modality {m!r} is not in the data; it has {dataset.modalities}")
    if len(mods) < 2:
        raise ValueError(f"need at least two modalities to probe, got {mods}")
    rows = sample_rows({m: dataset.present(m) for m in mods}, mods, seed, max_pairs)
    part = dataset.subset(rows)
    specs = {m: resolve_encoder(part, m, (encoders or {}).get(m)) for m in mods}
    features: dict[str, dict[str, np.ndarray]] = {}
    present: dict[str, np.ndarray] = {}
    errors: list[Any] = []
    defaults: dict[str, str] = {}
    for m in mods:
        enc = get_encoder(specs[m][0], **specs[m][1])
        if enc.kind != part.kind(m):
            raise ValueError(f"encoder {enc.name!r} reads {enc.kind}, but modality {m!r} is {part.kind(m)}")
        features[m], present[m], errs = encode_column(part, m, enc, cache, None, progress, on_error)  # type: ignore[arg-type]
        defaults[m] = enc.default_layer
        errors.extend(errs)
    result = probe_layers(features, present, mods, encoders={m: s[0] for m, s in specs.items()},
                          default_layers=defaults, metrics=metrics, seed=seed, max_pairs=max_pairs,
                          progress=progress)
    result.groups = len(set(part.groups))
    return result, errors

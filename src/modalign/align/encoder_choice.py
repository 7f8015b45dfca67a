"""``encoders={MODALITY: "auto"}``: choose a modality's encoder set the way auto chooses a method.

Every candidate set encodes the same seeded sample of whole groups (a few hundred rows), auto's group
cross-validation scores each on the same folds, and the best mean held-out R@1 (ties: the steadier) wins.
Only the winner then encodes every row. Modalities set to ``auto`` are chosen one after the other, each with
the others at their default (or already chosen) encoder, so the cost grows with the sum of the candidate
lists, not their product.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modalign.align.auto import best_first
from modalign.data.dataset import PairedDataset
from modalign.encoders import DEFAULT_ENCODER_FOR_KIND, Encoder, EncoderChoice, get_encoder, split_choice
from modalign.encoders.combined import CombinedEncoder, unit_rows
from modalign.errors import ModalignError
from modalign.features import FeatureCache, extract

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
#: fits ``features`` of a sample (as ``fit_arrays`` takes them) and returns auto's info for it
SampleFit = Callable[[dict[str, dict[str, Any]], dict[str, np.ndarray], list[str], dict[str, str]], dict[str, Any]]

#: a sample column: features by layer, the rows that have them, the encoder's default layer
Encoded = tuple[dict[str, np.ndarray], np.ndarray, str]

AUTO = "auto"
#: encoder sets ``auto`` tries per kind: built-ins whose weights come inside packages
CANDIDATES_FOR_KIND: dict[str, tuple[str, ...]] = {
    "image": ("effnet-lite0", "effnet-lite2", "dinov2-s", "effnet-lite0+dinov2-s"),
    "text": ("minilm", "e5"),
    "audio": ("whisper-base", "whisper-tiny"),
}
#: rows of the sample every candidate encodes (whole groups, so the folds stay concept-disjoint)
SAMPLE_ROWS = 400
#: the options ``auto`` itself takes (the rest would be an encoder's)
AUTO_OPTIONS = ("candidates", "sample_rows")


@dataclass
class EncoderTrial:
    """One candidate set on the sample: auto's CV score, and what encoding the sample cost."""

    modality: str
    encoder: str
    cv_r1: float | None = None
    cv_std: float | None = None
    method: str | None = None
    encode_seconds: float = 0.0
    seconds_per_item: float | None = None  # None: every sample item came from the cache
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


@dataclass
class EncoderSelection:
    """What ``choose_encoders`` tried and kept (``metrics.json`` → ``encoders``)."""

    chosen: dict[str, str]
    trials: list[EncoderTrial]
    sample_rows: int
    sample_groups: int
    seconds: float
    remaining_rows: dict[str, int] = field(default_factory=dict)  # rows outside the sample, per modality

    def estimated_encode_seconds(self, modality: str) -> float | None:
        """Encoding the rows outside the sample with the winner, at the speed it showed on the sample, model
        loading included (None: the sample came from the cache, which shows no speed)."""
        trial = next(t for t in self.trials if t.modality == modality and t.encoder == self.chosen[modality])
        if trial.seconds_per_item is None:
            return None
        return trial.seconds_per_item * self.remaining_rows.get(modality, 0)

    def to_json(self) -> dict[str, Any]:
        return {"chosen": dict(self.chosen), "sample_rows": self.sample_rows, "sample_groups": self.sample_groups,
                "seconds": round(self.seconds, 2),
                "estimated_encode_seconds": {m: None if (s := self.estimated_encode_seconds(m)) is None
                                             else round(s, 1) for m in self.chosen},
                "trials": [t.to_json() for t in self.trials]}


def auto_modalities(encoders: Mapping[str, EncoderChoice]) -> list[str]:
    """The modalities whose encoder is ``auto`` (a spec, or ``("auto", {options})``)."""
    return [m for m, e in encoders.items() if not isinstance(e, Encoder) and split_choice(e)[0] == AUTO]


def candidate_sets(kind: str, options: Mapping[str, Any]) -> list[EncoderChoice]:
    """The candidate sets of one ``auto`` modality: its ``candidates`` option (specs, or encoder objects from
    Python), else the kind's list."""
    unknown = sorted(set(options) - set(AUTO_OPTIONS))
    if unknown:
        raise ValueError(f"encoder auto takes the options {', '.join(AUTO_OPTIONS)}, not {', '.join(unknown)}")
    given = options.get("candidates")
    if given is None:
        if kind not in CANDIDATES_FOR_KIND:
            raise ValueError(f"encoder auto has no candidates for {kind} columns; give them with the option "
                             "candidates (for example --encoder-option MODALITY.candidates='[\"a\",\"b\"]')")
        return list(CANDIDATES_FOR_KIND[kind])
    choices = [given] if isinstance(given, (str, Encoder)) else list(given)
    if not choices or not all(isinstance(c, Encoder) or (isinstance(c, str) and c.strip()) for c in choices):
        raise ValueError(f"encoder auto: candidates must be a list of encoder specs, got {given!r}")
    if any(isinstance(c, str) and c.strip() == AUTO for c in choices):
        raise ValueError("encoder auto: a candidate cannot itself be auto")
    by_label = {label_of(c): c.strip() if isinstance(c, str) else c for c in choices}
    return list(by_label.values())


def label_of(choice: EncoderChoice) -> str:
    """How a candidate is named in the trials: its spec, or an encoder object's name and config."""
    if isinstance(choice, Encoder):
        config = choice.config()
        return choice.name + (f"({', '.join(f'{k}={v}' for k, v in sorted(config.items()))})" if config else "")
    return split_choice(choice)[0] if isinstance(choice, str) else repr(choice)


def sample_rows(groups: Sequence[str], max_rows: int, seed: int) -> np.ndarray:
    """Rows of whole groups, taken in a seeded order of the groups until ``max_rows`` are reached (sorted)."""
    unique = list(dict.fromkeys(groups))
    rows_of: dict[str, list[int]] = {g: [] for g in unique}
    for i, g in enumerate(groups):
        rows_of[g].append(i)
    picked: list[int] = []
    for gi in np.random.default_rng(seed).permutation(len(unique)):
        if len(picked) >= max_rows:
            break
        picked.extend(rows_of[unique[gi]])
    return np.sort(np.asarray(picked, dtype=np.int64))


def encode_sample(sample: PairedDataset, modality: str, encoder: Encoder,
                  cache: FeatureCache | None) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """The default layer of every sample row (zeros where absent or failed), its mask, and how many items
    the encoder ran on (0: all from the cache).

    A combined set (``effnet-lite0+dinov2-s``) is assembled from its parts' cached features, as the
    combined encoder computes it (each part's rows at unit norm, side by side): the parts were usually
    candidates of their own, so the combination costs no second pass."""
    rows = np.flatnonzero(sample.present(modality))
    items = sample.items(modality, rows)
    if isinstance(encoder, CombinedEncoder):
        parts = [extract(p, items, cache, layers=[layer], on_error="skip")
                 for p, layer in zip(encoder.parts, encoder.part_layers, strict=True)]
        ok = np.logical_and.reduce([r.ok for r in parts])
        chunks = [unit_rows(r.full(layer)[ok]) for r, layer in zip(parts, encoder.part_layers, strict=True)]
        features, encoded = np.concatenate(chunks, axis=1), max(r.n_encoded for r in parts)
    else:
        res = extract(encoder, items, cache, layers=[encoder.default_layer], on_error="skip")
        ok, features, encoded = res.ok, res.features[encoder.default_layer], res.n_encoded
    present = np.zeros(len(sample), dtype=bool)
    present[rows[ok]] = True
    x = np.zeros((len(sample), encoder.layer_dims[encoder.default_layer]), np.float32)
    x[present] = features
    return {encoder.default_layer: x}, present, encoded


def choose_encoders(dataset: PairedDataset, modalities: Sequence[str], encoders: Mapping[str, EncoderChoice],
                    cache: FeatureCache | None, fit_sample: SampleFit, *, seed: int = 0,
                    progress: Progress | None = None) -> tuple[dict[str, EncoderChoice], EncoderSelection | None]:
    """``encoders`` with every ``auto`` entry replaced by the candidate set auto's CV scores best on a sample.

    ``fit_sample(features, present, groups, default_layers)`` fits the sample's features with auto and
    returns its info (``fit_arrays`` lives above this module).
    Returns the encoders to use and what was tried (None when no modality is ``auto``).
    """
    asked = auto_modalities(encoders)
    if not asked:
        return dict(encoders), None
    t0 = time.perf_counter()
    options = {m: split_choice(encoders[m])[1] for m in asked}
    lists = {m: candidate_sets(dataset.kind(m), options[m]) for m in asked}
    size = max(int(options[m].get("sample_rows", SAMPLE_ROWS)) for m in asked)
    if size < 20:
        raise ValueError(f"encoder auto: sample_rows must be at least 20, got {size}")
    rows = sample_rows(dataset.groups, size, seed)
    sample = dataset.subset(rows)
    current: dict[str, EncoderChoice] = {m: e for m, e in encoders.items() if m not in asked}
    for m in modalities:
        current.setdefault(m, DEFAULT_ENCODER_FOR_KIND[dataset.kind(m)])
    cached: dict[tuple[str, str], Encoded] = {}

    def features_of(m: str, choice: EncoderChoice, trial: EncoderTrial | None) -> Encoded:
        key = (m, label_of(choice))
        if key not in cached:
            if isinstance(choice, Encoder):
                enc = choice
            else:
                spec, opts = split_choice(choice)
                enc = get_encoder(spec, **opts)
            if enc.kind != dataset.kind(m):
                raise ValueError(f"encoder {enc.name!r} reads {enc.kind}, but modality {m!r} is {dataset.kind(m)}")
            start = time.perf_counter()
            feats, present, encoded = encode_sample(sample, m, enc, cache)
            took = time.perf_counter() - start
            if trial is not None:
                trial.encode_seconds = took
                trial.seconds_per_item = took / encoded if encoded else None  # a cached sample shows no speed
            cached[key] = (feats, present, enc.default_layer)
        return cached[key]

    trials: list[EncoderTrial] = []
    picked: dict[str, str] = {}
    total = sum(len(v) for v in lists.values())
    for m in asked:
        scored: list[dict[str, Any]] = []
        labels = {label_of(c): c for c in lists[m]}
        for name, choice in labels.items():
            if progress is not None:
                progress(f"choose {m} encoder", len(trials), total)
            trial = EncoderTrial(m, name)
            trials.append(trial)
            try:
                parts = {o: features_of(o, choice if o == m else current[o], trial if o == m else None)
                         for o in modalities}
                info = fit_sample({o: p[0] for o, p in parts.items()}, {o: p[1] for o, p in parts.items()},
                                  list(sample.groups), {o: p[2] for o, p in parts.items()})
            except (ModalignError, ValueError, RuntimeError, OSError) as exc:  # one bad candidate is not the end
                trial.error = str(exc).strip("'\"")
                log.warning("encoder auto: %s for %s failed: %s", name, m, trial.error)
                continue
            summary = info["auto"]
            trial.cv_r1, trial.cv_std, trial.method = summary["cv_R@1"], summary["cv_std"], summary["picked"]
            scored.append({"candidate": name, "mean": trial.cv_r1, "std": trial.cv_std})
        if not scored:
            raise ValueError(f"encoder auto: no candidate for {m!r} could be scored "
                             f"({'; '.join(f'{t.encoder}: {t.error}' for t in trials if t.modality == m)})")
        winner = best_first(scored)[0]["candidate"]
        current[m] = labels[winner]
        picked[m] = winner
        log.info("encoder auto: %s → %s", m, winner)
    if progress is not None:
        progress("choose encoders", total, total)
    selection = EncoderSelection(chosen=picked, trials=trials, sample_rows=len(rows),
                                 sample_groups=len(set(sample.groups)), seconds=time.perf_counter() - t0,
                                 remaining_rows={m: int(dataset.present(m).sum() - sample.present(m).sum())
                                                 for m in asked})
    return {**encoders, **{m: current[m] for m in asked}}, selection

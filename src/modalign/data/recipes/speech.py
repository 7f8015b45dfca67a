"""The ``speech`` recipe: espeak-ng speaks the emoji CLDR names in several voices and speeds.

The texts are the English CLDR names of the emoji concepts, and each row's ``group`` is the emoji
concept's slug — the same groups as the ``emoji`` image set, so speech, text and images share concepts
(image → text → speech retrieval, progressive addition of audio to an image-text space).

The helpers at the bottom (clip validation, atomic manifest writing) are shared with ``instruments``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.audio_levels import SILENCE_RMS
from modalign.data.recipes.base import DATASETS, DatasetRecipe, PrepareResult, Progress
from modalign.data.recipes.files import write_jsonl_atomic, write_text_atomic
from modalign.data.recipes.install import InstallError, apt_command, install_commands, pip_missing

log = logging.getLogger(__name__)

APT_PACKAGES = ("espeak-ng", "unicode-cldr-core")
#: US male, Scottish male, British female (espeak-ng's ``+f3`` variant): accents and pitch both vary
DEFAULT_VOICES = ("en-us", "en-gb-scotland", "en-gb+f3")
#: words per minute: slow and espeak-ng's default
DEFAULT_SPEEDS = (130, 175)
PROGRESS_EVERY = 25
SYNTH_TIMEOUT_S = 60


@dataclass(frozen=True)
class ClipCheck:
    """What validation found in one rendered clip."""

    status: str  # "ok", "missing", "unreadable", "empty", "silent"
    seconds: float = 0.0
    clipped: float = 0.0  # share of samples at full scale


def check_clip(path: Path) -> ClipCheck:
    """Read a rendered clip back and classify it (silence threshold as the audio encoders use)."""
    import soundfile as sf

    if not path.is_file() or path.stat().st_size == 0:
        return ClipCheck("missing")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        return ClipCheck("unreadable")
    if data.size == 0:
        return ClipCheck("empty")
    wave = data.mean(axis=1)
    seconds = len(wave) / sr
    if float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) < SILENCE_RMS:
        return ClipCheck("silent", seconds)
    return ClipCheck("ok", seconds, float(np.mean(np.abs(data) >= 0.999)))


def check_unique_ids(rows: Sequence[dict[str, Any]]) -> None:
    dupes = [i for i, n in Counter(r["id"] for r in rows).items() if n > 1]
    if dupes:  # ids are built from unique slugs, so this is a bug, not bad input
        raise RuntimeError(f"duplicate row ids: {dupes[:10]}")


def run_tasks(
    tasks: Sequence[Any], work: Callable[[Any], Any], workers: int, stage: str, progress: Progress | None
) -> list[Any]:
    """``work`` over ``tasks`` in a thread pool (the work is a subprocess), reporting progress."""
    total = len(tasks)
    results: list[Any] = []
    if progress and total:  # nothing to do (a re-run): no empty bar
        progress(stage, 0, total)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for done, result in enumerate(pool.map(work, tasks), start=1):
            results.append(result)
            if progress and (done % PROGRESS_EVERY == 0 or done == total):
                progress(stage, done, total)
    return results


def voice_slug(voice: str) -> str:
    return voice.replace("+", "-")


def synthesize(task: tuple[str, int, str, str]) -> str | None:
    """espeak-ng ``text`` with ``voice`` at ``speed`` wpm into ``dest`` (atomically); the error or None."""
    voice, speed, text, dest = task
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # text goes through stdin: a name that starts with '-' must not read as an option
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-b", "1", "-w", str(tmp), "--stdin"]
    try:
        res = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=SYNTH_TIMEOUT_S,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        tmp.unlink(missing_ok=True)
        return str(exc)
    if res.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        return res.stderr.decode("utf-8", "replace").strip()[-300:] or f"espeak-ng exited {res.returncode}"
    os.replace(tmp, path)
    return None


def espeak_voices() -> set[str]:
    """Voice names espeak-ng knows (``en-us``, ``en-gb-scotland`` ...), for a clear error on a typo."""
    res = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=False)
    return {line.split()[1] for line in res.stdout.splitlines()[1:] if len(line.split()) > 1}


@DATASETS.register("speech")
class SpeechRecipe(DatasetRecipe):
    name = "speech"
    description = (
        "Synthetic speech (espeak-ng, several voices and speeds) of the emoji CLDR English names, paired "
        "with the written names; groups are the emoji concepts, shared with the emoji image set."
    )
    modalities: tuple[str, ...] = ("audio", "text")
    licence = "audio generated with espeak-ng (GPL-3.0-or-later program); names: CLDR Unicode-DFS-2016"
    source = "apt: espeak-ng, unicode-cldr-core; pip: emoji"
    approx_size = "~1.85k concepts x 3 voices x 2 speeds = ~11k clips of 1-4 s (~700 MB wav)"

    def __init__(
        self, voices: Sequence[str] = DEFAULT_VOICES, speeds: Sequence[int] = DEFAULT_SPEEDS,
        workers: int | None = None,
    ) -> None:
        if not voices or not speeds:
            raise ValueError("speech needs at least one voice and one speed")
        bad = [s for s in speeds if not 80 <= int(s) <= 450]
        if bad:
            raise ValueError(f"speeds are words per minute in 80..450 (espeak-ng's range), got {bad}")
        self.voices = tuple(voices)
        self.speeds = tuple(int(s) for s in speeds)
        self.workers = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))

    def missing_requirements(self) -> list[str]:
        return install_commands(apt=list(APT_PACKAGES), pip=pip_missing({"emoji": "emoji"}))

    def prepare(self, out: Path, limit: int | None = None, progress: Progress | None = None) -> PrepareResult:
        from modalign.data.recipes.cldr import CldrAnnotations, build_catalogue

        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        out = Path(out)
        annotations = CldrAnnotations()
        if shutil.which("espeak-ng") is None or not annotations.available():
            raise InstallError(
                f"speech needs espeak-ng and unicode-cldr-core; run:\n  {apt_command(list(APT_PACKAGES))}"
            )
        if importlib.util.find_spec("emoji") is None:
            raise InstallError("speech needs the PyPI package 'emoji'; run:\n  pip install emoji")
        unknown = [v for v in self.voices if v.split("+")[0] not in espeak_voices()]
        if unknown:
            raise ValueError(f"espeak-ng has no voice(s) {unknown}; see `espeak-ng --voices=en`")
        concepts = build_catalogue(annotations).concepts
        concepts = concepts[:limit] if limit is not None else concepts

        planned: list[dict[str, Any]] = []
        tasks: list[tuple[str, int, str, str]] = []
        for concept in concepts:
            for voice in self.voices:
                for speed in self.speeds:
                    rel = f"audio/{concept.slug}/{voice_slug(voice)}_s{speed}.wav"
                    planned.append({
                        "id": f"{concept.slug}__{voice_slug(voice)}__s{speed}", "audio": rel, "text": concept.name,
                        "group": concept.slug, "meta_voice": voice, "meta_speed": speed, "meta_emoji": concept.emoji,
                    })
                    dest = out / rel
                    if not (dest.is_file() and dest.stat().st_size > 0):  # incremental: keep what exists
                        tasks.append((voice, speed, concept.name, str(dest)))
        failures = [e for e in run_tasks(tasks, synthesize, self.workers, "synthesize", progress) if e]
        checks = run_tasks([out / r["audio"] for r in planned], check_clip, self.workers, "validate", progress)

        rows, dropped = [], Counter[str]()
        for row, check in zip(planned, checks, strict=True):
            if check.status == "ok":
                rows.append({**row, "meta_seconds": round(check.seconds, 3)})
            else:
                dropped[check.status] += 1
        check_unique_ids(rows)
        write_jsonl_atomic(out / "manifest.jsonl", rows)
        notes = [f"dropped {n} clip(s): {status}" for status, n in sorted(dropped.items())]
        if failures:
            notes.append(f"espeak-ng failed on {len(failures)} clip(s), e.g.: {failures[0]}")
        seconds = np.array([r["meta_seconds"] for r in rows]) if rows else np.zeros(1)
        counts = {"clips": len(rows), "synthesized_now": len(tasks) - len(failures),
                  **{f"voice {v}": sum(r["meta_voice"] == v for r in rows) for v in self.voices},
                  **{f"dropped_{k}": v for k, v in dropped.items()}}
        groups = len({r["group"] for r in rows})
        write_text_atomic(out / "CARD.md", self._card(counts, len(rows), groups, len(concepts), seconds, notes))
        log.info("speech: %d rows, %d groups in %s", len(rows), groups, out)
        return PrepareResult(out / "manifest.jsonl", len(rows), groups, counts, notes)

    def _card(
        self, counts: dict[str, int], rows: int, groups: int, concepts: int, seconds: np.ndarray, notes: list[str]
    ) -> str:
        version = _dpkg_version("espeak-ng") or "unknown"
        lines = [
            "# speech", "", self.description, "",
            "## Source and licence", "",
            f"- Audio: synthesized here by espeak-ng {version} (Debian `espeak-ng`, GPL-3.0-or-later). The "
            "clips are the program's output, not part of its source; no recorded human speech is used.",
            "- Texts: English emoji names (`type=\"tts\"`) from Unicode CLDR (Debian `unicode-cldr-core`), "
            "Unicode-DFS-2016 licence; the emoji list comes from the PyPI package `emoji`.",
            "",
            "## Counts", "",
            f"- {rows} clips, {groups} groups (of {concepts} concepts asked for)",
            f"- voices: {', '.join(self.voices)}; speeds (words/min): {', '.join(map(str, self.speeds))}",
            f"- clip length: median {np.median(seconds):.2f} s, max {seconds.max():.2f} s (mono 22.05 kHz wav)",
            *(f"- {k}: {v}" for k, v in counts.items()),
            "",
            "## Rows and groups", "",
            "- `id` = `<concept slug>__<voice>__s<speed>`; `audio` = `audio/<slug>/<voice>_s<speed>.wav`.",
            "- `group` = the emoji concept slug (as in the `emoji` dataset): every voice and speed of one name "
            "shares a group, so concept-disjoint splits hold out whole names.",
            "- `meta_voice`, `meta_speed` (words per minute), `meta_emoji` (the emoji), `meta_seconds`.",
            "- Concepts follow CLDR's emoji order; `--limit N` keeps the first N concepts.",
            "",
            "## Known noise", "",
            "- Formant synthesis: robotic, clean (no noise, no reverb), far from natural speech.",
            "- espeak-ng guesses the pronunciation of rare words and reads punctuation its own way "
            "(\"flag: Åland Islands\", \"keycap: #\"); a few names are near-homophones of others.",
            "- Some names differ only at the end (\"grinning face\" / \"grinning face with big eyes\").",
            "- Clips that come out silent or unreadable are dropped (see the notes).",
            "", "## Notes from the last prepare", "",
            *(f"- {note}" for note in notes or ["none"]),
        ]
        return "\n".join(lines) + "\n"


def _dpkg_version(package: str) -> str | None:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False)
    return res.stdout.strip() or None

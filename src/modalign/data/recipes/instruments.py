"""The ``instruments`` recipe: FluidSynth renders every General MIDI instrument at several pitches and
velocities, paired with the instrument's name and family ("acoustic grand piano, a piano").

Per instrument we write one small MIDI file (our own SMF writer: format 0, one track) that plays each
(pitch, velocity) note in its own 2 s slot, render it once with ``fluidsynth`` (reverb and chorus off, so
nothing rings across slots; an All-Sound-Off controller starts every slot), and cut the render into one
mono 16 kHz wav per note. One FluidSynth run per instrument keeps the 140 MB SoundFont loads to 128.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.recipes.base import DATASETS, DatasetRecipe, PrepareResult, Progress
from modalign.data.recipes.files import write_jsonl_atomic, write_text_atomic
from modalign.data.recipes.install import InstallError, apt_command, install_commands
from modalign.data.recipes.speech import (
    check_clip,
    check_unique_ids,
    run_tasks,
)

log = logging.getLogger(__name__)

APT_PACKAGES = ("fluidsynth", "fluid-soundfont-gm")
SOUNDFONT = Path(os.environ.get("MODALIGN_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))
SAMPLE_RATE = 16_000
SLOT_S = 2.0  # one note per slot: NOTE_S held, then the release rings out
NOTE_S = 1.2
TICKS_PER_QUARTER = 480
TICKS_PER_S = TICKS_PER_QUARTER * 2  # the default tempo, 120 bpm
DEFAULT_PITCHES = (48, 55, 60, 67, 72)  # C3 G3 C4 G4 C5
DEFAULT_VELOCITIES = (70, 110)
GAIN = 0.5  # FluidSynth's default 0.2 renders most notes around -45 dBFS
RENDER_TIMEOUT_S = 120

#: General MIDI Level 1 sound set: program numbers 0..127 in groups of 8, one family each
GM_FAMILIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("piano", "a piano", ("acoustic grand piano", "bright acoustic piano", "electric grand piano",
                          "honky-tonk piano", "electric piano 1", "electric piano 2", "harpsichord", "clavi")),
    ("chromatic percussion", "a chromatic percussion instrument",
     ("celesta", "glockenspiel", "music box", "vibraphone", "marimba", "xylophone", "tubular bells", "dulcimer")),
    ("organ", "an organ", ("drawbar organ", "percussive organ", "rock organ", "church organ", "reed organ",
                           "accordion", "harmonica", "tango accordion")),
    ("guitar", "a guitar", ("acoustic guitar (nylon)", "acoustic guitar (steel)", "electric guitar (jazz)",
                            "electric guitar (clean)", "electric guitar (muted)", "overdriven guitar",
                            "distortion guitar", "guitar harmonics")),
    ("bass", "a bass", ("acoustic bass", "electric bass (finger)", "electric bass (pick)", "fretless bass",
                        "slap bass 1", "slap bass 2", "synth bass 1", "synth bass 2")),
    ("strings", "a string instrument", ("violin", "viola", "cello", "contrabass", "tremolo strings",
                                        "pizzicato strings", "orchestral harp", "timpani")),
    ("ensemble", "an ensemble", ("string ensemble 1", "string ensemble 2", "synth strings 1", "synth strings 2",
                                 "choir aahs", "voice oohs", "synth voice", "orchestra hit")),
    ("brass", "a brass instrument", ("trumpet", "trombone", "tuba", "muted trumpet", "french horn",
                                     "brass section", "synth brass 1", "synth brass 2")),
    ("reed", "a reed instrument", ("soprano sax", "alto sax", "tenor sax", "baritone sax", "oboe",
                                   "english horn", "bassoon", "clarinet")),
    ("pipe", "a pipe instrument", ("piccolo", "flute", "recorder", "pan flute", "blown bottle", "shakuhachi",
                                   "whistle", "ocarina")),
    ("synth lead", "a synth lead", ("lead 1 (square)", "lead 2 (sawtooth)", "lead 3 (calliope)",
                                    "lead 4 (chiff)", "lead 5 (charang)", "lead 6 (voice)", "lead 7 (fifths)",
                                    "lead 8 (bass and lead)")),
    ("synth pad", "a synth pad", ("pad 1 (new age)", "pad 2 (warm)", "pad 3 (polysynth)", "pad 4 (choir)",
                                  "pad 5 (bowed)", "pad 6 (metallic)", "pad 7 (halo)", "pad 8 (sweep)")),
    ("synth effects", "a synth effect", ("fx 1 (rain)", "fx 2 (soundtrack)", "fx 3 (crystal)",
                                         "fx 4 (atmosphere)", "fx 5 (brightness)", "fx 6 (goblins)",
                                         "fx 7 (echoes)", "fx 8 (sci-fi)")),
    ("ethnic", "an ethnic instrument", ("sitar", "banjo", "shamisen", "koto", "kalimba", "bagpipe", "fiddle",
                                        "shanai")),
    ("percussive", "a percussion instrument", ("tinkle bell", "agogo", "steel drums", "woodblock", "taiko drum",
                                               "melodic tom", "synth drum", "reverse cymbal")),
    ("sound effects", "a sound effect", ("guitar fret noise", "breath noise", "seashore", "bird tweet",
                                         "telephone ring", "helicopter", "applause", "gunshot")),
)
#: basses sound an octave lower than written; play them in their own register
OCTAVE_SHIFT = {"bass": -12}


@dataclass(frozen=True)
class Instrument:
    program: int  # 0..127
    name: str
    family: str
    family_phrase: str

    @property
    def slug(self) -> str:
        from modalign.data.recipes.cldr import slugify

        return f"{self.program:03d}-{slugify(self.name)}"

    @property
    def text(self) -> str:
        return f"{self.name}, {self.family_phrase}"


def gm_instruments() -> list[Instrument]:
    return [
        Instrument(8 * f + i, name, family, phrase)
        for f, (family, phrase, names) in enumerate(GM_FAMILIES)
        for i, name in enumerate(names)
    ]


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def midi_file(program: int, notes: Sequence[tuple[int, int]]) -> bytes:
    """Standard MIDI File (format 0) playing ``notes`` [(pitch, velocity)] on ``program``, one per slot."""
    slot, held = round(SLOT_S * TICKS_PER_S), round(NOTE_S * TICKS_PER_S)
    track = _vlq(0) + bytes([0xC0, program])
    for k, (pitch, velocity) in enumerate(notes):
        # All Sound Off at each slot start: a long release never leaks into the next note's clip
        track += _vlq(0 if k == 0 else slot - held) + bytes([0xB0, 120, 0])
        track += _vlq(0) + bytes([0x90, pitch, velocity])
        track += _vlq(held) + bytes([0x80, pitch, 0])
    track += _vlq(slot - held) + b"\xff\x2f\x00"  # end of track after the last slot
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
    return header + b"MTrk" + struct.pack(">I", len(track)) + track


def render(task: tuple[int, list[tuple[int, int]], list[str]]) -> str | None:
    """Render one instrument's notes and write one wav per note (atomically); the error or None."""
    import soundfile as sf

    program, notes, dests = task
    with tempfile.TemporaryDirectory(prefix="modalign-fluid-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi_file(program, notes))
        cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", str(GAIN), "-r", str(SAMPLE_RATE),
               "-F", str(wav), str(SOUNDFONT), str(mid)]
        try:
            res = subprocess.run(cmd, capture_output=True, timeout=RENDER_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if res.returncode != 0 or not wav.is_file():
            return res.stderr.decode("utf-8", "replace").strip()[-300:] or f"fluidsynth exited {res.returncode}"
        data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    slot = round(SLOT_S * sr)
    for k, dest in enumerate(dests):
        clip = np.zeros(slot, np.float32)
        part = mono[k * slot : (k + 1) * slot]
        clip[: len(part)] = part
        path = Path(dest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
        sf.write(str(tmp_path), clip, sr, subtype="PCM_16")
        os.replace(tmp_path, path)
    return None


@DATASETS.register("instruments")
class InstrumentsRecipe(DatasetRecipe):
    name = "instruments"
    description = (
        "Notes of the 128 General MIDI instruments rendered by FluidSynth with the FluidR3 GM SoundFont "
        "(several pitches and velocities), paired with the instrument's name and family; label = GM family."
    )
    modalities: tuple[str, ...] = ("audio", "text")
    licence = "FluidR3_GM SoundFont MIT (audio rendered with FluidSynth, LGPL-2.1+); GM names: MIDI standard"
    source = "apt: fluidsynth, fluid-soundfont-gm"
    approx_size = "128 instruments x 5 pitches x 2 velocities = 1280 clips of 2 s (~80 MB wav)"

    def __init__(
        self, pitches: Sequence[int] = DEFAULT_PITCHES, velocities: Sequence[int] = DEFAULT_VELOCITIES,
        workers: int | None = None,
    ) -> None:
        bad = [p for p in pitches if not 24 <= int(p) <= 127]  # 24: basses still sound an octave down
        bad += [v for v in velocities if not 1 <= int(v) <= 127]
        if not pitches or not velocities or bad:
            raise ValueError(f"pitches must be MIDI notes 24..127 and velocities 1..127; bad: {bad}")
        self.pitches = tuple(int(p) for p in pitches)
        self.velocities = tuple(int(v) for v in velocities)
        self.workers = workers if workers is not None else max(1, min(2, os.cpu_count() or 1))

    def missing_requirements(self) -> list[str]:
        return install_commands(apt=list(APT_PACKAGES))

    def prepare(self, out: Path, limit: int | None = None, progress: Progress | None = None) -> PrepareResult:
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
            raise InstallError(f"instruments needs fluidsynth and {SOUNDFONT}; run:\n  "
                               f"{apt_command(list(APT_PACKAGES))}")
        out = Path(out)
        instruments = gm_instruments()[:limit] if limit is not None else gm_instruments()
        planned: list[dict[str, Any]] = []
        tasks: list[tuple[int, list[tuple[int, int]], list[str]]] = []
        for inst in instruments:
            notes, dests = [], []
            for pitch in self.pitches:
                played = pitch + OCTAVE_SHIFT.get(inst.family, 0)
                for velocity in self.velocities:
                    rel = f"audio/{inst.slug}/p{played}_v{velocity}.wav"
                    planned.append({
                        "id": f"{inst.slug}__p{played}_v{velocity}", "audio": rel, "text": inst.text,
                        "group": inst.slug, "label": inst.family, "meta_instrument": inst.name,
                        "meta_program": inst.program, "meta_pitch": played, "meta_velocity": velocity,
                    })
                    notes.append((played, velocity))
                    dests.append(str(out / rel))
            # incremental per instrument: its notes come from one render
            if not all(Path(d).is_file() and Path(d).stat().st_size > 0 for d in dests):
                tasks.append((inst.program, notes, dests))
        failures = [e for e in run_tasks(tasks, render, self.workers, "render", progress) if e]
        checks = run_tasks([out / r["audio"] for r in planned], check_clip, self.workers, "validate", progress)

        rows, dropped, clipped = [], Counter[str](), 0
        for row, check in zip(planned, checks, strict=True):
            if check.status == "ok":
                rows.append(row)
                clipped += check.clipped > 0.001
            else:
                dropped[check.status] += 1
        check_unique_ids(rows)
        write_jsonl_atomic(out / "manifest.jsonl", rows)
        notes = [f"dropped {n} clip(s): {status}" for status, n in sorted(dropped.items())]
        if failures:
            notes.append(f"fluidsynth failed on {len(failures)} instrument(s), e.g.: {failures[0]}")
        if clipped:
            notes.append(f"{clipped} clip(s) have more than 0.1% of samples at full scale (clipping)")
        counts = {"clips": len(rows), "instruments_rendered_now": len(tasks) - len(failures),
                  **{f"family {f}": n for f, n in Counter(r["label"] for r in rows).items()},
                  **{f"dropped_{k}": v for k, v in dropped.items()}}
        groups = len({r["group"] for r in rows})
        write_text_atomic(out / "CARD.md", self._card(counts, len(rows), groups, len(instruments), notes))
        log.info("instruments: %d rows, %d groups in %s", len(rows), groups, out)
        return PrepareResult(out / "manifest.jsonl", len(rows), groups, counts, notes)

    def _card(self, counts: dict[str, int], rows: int, groups: int, asked: int, notes: list[str]) -> str:
        lines = [
            "# instruments", "", self.description, "",
            "## Source and licence", "",
            f"- Sounds: the FluidR3_GM SoundFont (Debian `fluid-soundfont-gm`, {SOUNDFONT}), © Frank Wen, "
            "released under the MIT licence (see /usr/share/doc/fluid-soundfont-gm/copyright).",
            "- Rendered here by FluidSynth (Debian `fluidsynth`, LGPL-2.1-or-later) from MIDI files this recipe "
            "writes; reverb and chorus off; mono 16 kHz, 16-bit.",
            "- Texts: the General MIDI Level 1 instrument names (lower-cased) and their GM family.",
            "",
            "## Counts", "",
            f"- {rows} clips, {groups} instruments (of {asked} asked for)",
            f"- pitches (MIDI notes, basses an octave lower): {', '.join(map(str, self.pitches))}; "
            f"velocities: {', '.join(map(str, self.velocities))}; each note held {NOTE_S:g} s in a "
            f"{SLOT_S:g} s clip",
            *(f"- {k}: {v}" for k, v in counts.items()),
            "",
            "## Rows and groups", "",
            "- `id` = `<program>-<name>__p<pitch>_v<velocity>`; `group` = the instrument: all its notes share "
            "a group, so concept-disjoint splits hold out whole instruments (zero-shot by name).",
            "- `text` = \"<GM name>, <family phrase>\" (e.g. \"acoustic grand piano, a piano\"); `label` = the "
            "GM family (16 families of 8), for zero-shot classification by family.",
            "- `meta_instrument`, `meta_program` (0-127), `meta_pitch`, `meta_velocity`.",
            "- Instruments in GM program order; `--limit N` keeps the first N.",
            "",
            "## Known noise", "",
            "- One SoundFont: every instrument is one sampled (or synthesized) voice; several GM programs "
            "share samples in FluidR3 (e.g. the two string ensembles), so some names are acoustically "
            "near-identical.",
            "- Sound-effect programs (seashore, helicopter, applause, gunshot) ignore pitch; percussive ones "
            "decay within the clip; the held note is cut at the clip end for slow-attack pads.",
            "- FluidR3's contrabass has no samples above G3: its higher notes render silent and are dropped.",
            "- Names of held-out instruments are unseen text: retrieval on them is zero-shot and hard.",
            "", "## Notes from the last prepare", "",
            *(f"- {note}" for note in notes or ["none"]),
        ]
        return "\n".join(lines) + "\n"

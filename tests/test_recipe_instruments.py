"""The ``instruments`` recipe on real FluidSynth renders of the FluidR3 GM SoundFont.

Needs the Debian packages fluidsynth and fluid-soundfont-gm (scripts/install_system_deps.sh).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from helpers.recipes import ready_recipe
from modalign.data import PairedDataset
from modalign.data.recipes.instruments import GM_FAMILIES, InstrumentsRecipe, gm_instruments, midi_file
from modalign.data.recipes.speech import check_clip

LIMIT = 2
PITCHES = (48, 60, 72)
VELOCITIES = (50, 120)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fundamental_hz(wave: np.ndarray, sr: int) -> float:
    """Lowest strong spectral peak in the first second (the held part of the note)."""
    seg = wave[:sr] * np.hanning(sr)
    spectrum = np.abs(np.fft.rfft(seg, n=8 * sr))
    freqs = np.fft.rfftfreq(8 * sr, 1 / sr)
    spectrum *= freqs > 50
    i = int(np.flatnonzero(spectrum >= 0.3 * spectrum.max())[0])
    while spectrum[i + 1] > spectrum[i]:  # climb to the top of that peak
        i += 1
    return float(freqs[i])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    recipe = ready_recipe("instruments", pitches=PITCHES, velocities=VELOCITIES)
    out = tmp_path_factory.mktemp("instruments")
    calls: list[tuple[str, int, int]] = []
    result = recipe.prepare(out, limit=LIMIT, progress=lambda stage, done, total: calls.append((stage, done, total)))
    return out, result, calls


def test_general_midi_catalogue() -> None:
    insts = gm_instruments()
    assert [i.program for i in insts] == list(range(128))
    assert len(GM_FAMILIES) == 16 and all(len(names) == 8 for _, _, names in GM_FAMILIES)
    assert len({i.name for i in insts}) == 128 and len({i.slug for i in insts}) == 128
    assert insts[0].text == "acoustic grand piano, a piano"
    assert insts[40].name == "violin" and insts[40].family == "strings"
    assert insts[127].name == "gunshot" and insts[127].family == "sound effects"


def test_midi_file_is_well_formed() -> None:
    data = midi_file(19, [(60, 100), (67, 90)])
    assert data[:4] == b"MThd" and int.from_bytes(data[8:10], "big") == 0  # format 0
    assert data[14:18] == b"MTrk" and int.from_bytes(data[18:22], "big") == len(data) - 22
    body = data[22:]
    assert bytes([0xC0, 19]) in body and bytes([0x90, 60, 100]) in body and bytes([0x90, 67, 90]) in body
    assert body.endswith(b"\xff\x2f\x00")


def test_manifest_rows_and_rendered_notes(prepared) -> None:
    out, result, calls = prepared
    rows = read_manifest(out / "manifest.jsonl")
    n_clips = LIMIT * len(PITCHES) * len(VELOCITIES)
    assert result.rows == len(rows) == n_clips and result.groups == LIMIT
    assert len({r["id"] for r in rows}) == n_clips
    assert {r["text"] for r in rows} == {"acoustic grand piano, a piano", "bright acoustic piano, a piano"}
    assert {r["label"] for r in rows} == {"piano"}
    for row in rows:
        assert row["id"] == f"{row['group']}__p{row['meta_pitch']}_v{row['meta_velocity']}"
        assert check_clip(out / row["audio"]).status == "ok"
        wave, sr = sf.read(str(out / row["audio"]))
        assert sr == 16000 and wave.ndim == 1 and len(wave) == 2 * sr
        # the note starts at the clip start (slots cut in the right places) and decays by the end
        envelope = np.abs(wave)
        assert np.argmax(envelope > 0.1 * envelope.max()) < 0.1 * sr
        assert envelope[-sr // 10 :].max() < envelope.max()
    first = {(r["group"], r["meta_pitch"], r["meta_velocity"]): out / r["audio"] for r in rows}
    g = rows[0]["group"]
    # pitch: the piano sounds the MIDI note asked for; velocity: harder is louder
    for pitch in PITCHES:
        expected = 440.0 * 2 ** ((pitch - 69) / 12)
        assert fundamental_hz(sf.read(str(first[(g, pitch, 120)]))[0], 16000) == pytest.approx(expected, rel=0.02)
    soft, hard = (np.sqrt(np.mean(sf.read(str(first[(g, 60, v)]))[0] ** 2)) for v in VELOCITIES)
    assert hard > 1.5 * soft
    assert {stage for stage, _, _ in calls} == {"render", "validate"} and ("render", LIMIT, LIMIT) in calls
    card = (out / "CARD.md").read_text()
    assert "MIT" in card and f"{n_clips} clips" in card
    ds = PairedDataset.from_manifest(out / "manifest.jsonl", on_error="fail")
    assert ds.kinds["audio"] == "audio" and len(ds) == n_clips


def test_rerun_is_incremental_and_validation_drops_silence(prepared) -> None:
    out, first, _ = prepared
    rows = read_manifest(out / "manifest.jsonl")
    recipe = InstrumentsRecipe(pitches=PITCHES, velocities=VELOCITIES)
    assert recipe.prepare(out, limit=LIMIT).counts["instruments_rendered_now"] == 0
    sf.write(str(out / rows[0]["audio"]), np.zeros(32000, np.float32), 16000)
    again = recipe.prepare(out, limit=LIMIT)
    assert again.counts["dropped_silent"] == 1 and again.rows == first.rows - 1
    (out / rows[0]["audio"]).unlink()  # a missing note re-renders its instrument
    third = recipe.prepare(out, limit=LIMIT)
    assert third.counts["instruments_rendered_now"] == 1 and third.rows == first.rows
    with pytest.raises(ValueError, match="velocities"):
        InstrumentsRecipe(velocities=(0,))

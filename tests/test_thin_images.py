"""Thin images (1 x N pixels) are decided from the header: bounded memory, a per-item error, no MemoryError.

A 163-byte PNG of 1x20,000 pixels passes the 50 MP pixel cap, but resizing its short side to 224 asks
for 224 x 4,480,000 pixels (3 GB). The loader runs here in a child process under an address-space cap
(RLIMIT_AS 3 GB; importing numpy + Pillow needs under 400 MB of it), so a regression fails with a
MemoryError or a peak RSS over 1 GB instead of swapping the test machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modalign.encoders.image_io import MAX_ASPECT, load_batch, open_image
from modalign.errors import ItemError

AS_CAP_BYTES = 3 * 1024**3

CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from modalign.encoders.image_io import load_batch
from modalign.errors import ItemError
out = {{}}
for path in sys.argv[1:]:
    try:
        load_batch([path], size=224)
        out[path] = "ok"
    except ItemError as exc:
        out[path] = "ItemError: " + str(exc)
    except MemoryError:
        out[path] = "MemoryError"
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child forked from a large pytest process would report
# the parent's size (3.4 GB in a full run); VmHWM belongs to this process's own address space
out["peak_rss_kb"] = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps(out))
"""


def _thin(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), (10, 200, 30)).save(path)
    return path


def test_thin_images_use_bounded_memory_and_are_item_errors(tmp_path: Path) -> None:
    paths = [_thin(tmp_path / "tall.png", 1, 20_000), _thin(tmp_path / "taller.png", 1, 100_000),
             _thin(tmp_path / "wide.png", 20_000, 1)]
    assert (tmp_path / "tall.png").stat().st_size < 1000
    proc = subprocess.run([sys.executable, "-c", CHILD.format(cap=AS_CAP_BYTES), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    for path in paths:
        assert result[str(path)].startswith("ItemError"), result
        assert "aspect ratio" in result[str(path)], result
    assert result["peak_rss_kb"] < 1024 * 1024, result  # < 1 GB (VmHWM is in KiB)


def test_thin_image_error_names_the_item_and_the_limit(tmp_path: Path) -> None:
    path = _thin(tmp_path / "tall.png", 1, 20_000)
    with pytest.raises(ItemError) as info:
        load_batch([path], size=32)
    assert "tall.png" in str(info.value) and "1x20000" in str(info.value) and f"{MAX_ASPECT}:1" in str(info.value)
    with pytest.raises(ItemError):  # bytes (server uploads) and PIL images take the same check
        open_image(path.read_bytes())
    with pytest.raises(ItemError):
        open_image(Image.new("RGB", (1, 20_000)))


@pytest.mark.parametrize("size", [(1, 20), (600, 20), (20, 1000), (4000, 3000)])
def test_ordinary_and_panoramic_images_still_load(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _thin(tmp_path / "ok.png", *size)
    out = load_batch([path], size=224)
    assert out.shape == (1, 3, 224, 224) and np.isfinite(out).all()


def test_concurrent_decodes_share_one_pixel_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Threads decoding large images at once never hold more than the budget's pixels decoded together."""
    import threading

    from modalign.encoders import image_io

    path = tmp_path / "big.png"
    Image.new("RGB", (1500, 1000), "teal").save(path)
    budget = image_io._PixelBudget(2 * 1500 * 1000)
    monkeypatch.setattr(image_io, "_DECODE_BUDGET", budget)
    peak = [0]
    acquire = budget.acquire

    def watched(pixels: int) -> int:
        taken = acquire(pixels)
        peak[0] = max(peak[0], budget.in_use)
        return taken

    monkeypatch.setattr(budget, "acquire", watched)
    # each decode waits inside its turn for a partner: two overlap by construction, and a third could
    # only join if the budget let it in
    pair = threading.Barrier(2)
    to_rgb = image_io.to_rgb
    monkeypatch.setattr(image_io, "to_rgb", lambda img: (pair.wait(timeout=30), to_rgb(img))[1])
    threads = [threading.Thread(target=load_batch, args=([path, path.read_bytes()],)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 * 1500 * 1000  # two at a time, never three
    assert budget.in_use == 0  # every decode gave its pixels back
    with pytest.raises(ItemError):
        load_batch([b"not an image"])
    assert budget.in_use == 0  # a failed decode too

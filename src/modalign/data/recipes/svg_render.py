"""SVG → PNG tiles for the image recipes (icons, kanji), plus the atomic writes and checks they share.

Tiles keep the SVG's own viewBox framing (no crop): icon sets draw on a fixed grid, and the position and
size of a mark inside it carry meaning (a dot is small, a frame is big).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from modalign.data.recipes.base import Progress
from modalign.data.recipes.files import write_text_atomic

log = logging.getLogger(__name__)

TILE = 96
#: a pixel counts as ink when a channel differs this much from white
INK_DELTA = 24
#: below this share of ink pixels a tile counts as blank
MIN_INK_FRACTION = 0.003
PROGRESS_EVERY = 50
#: below this many images a process pool costs more than it saves
POOL_MIN_TASKS = 64

Status = Literal["ok", "cached", "blank", "error"]
Preprocess = Callable[[bytes], bytes]
#: (source svg path, destination png path, optional module-level svg rewrite — picklable for the pool)
RenderTask = tuple[str, str, Preprocess | None]


def render_svg(svg: bytes, size: int = TILE) -> Image.Image:
    """Render SVG bytes to a size² RGB image on white; ``currentColor`` (stroke icon sets) draws black."""
    import cairosvg

    svg = svg.replace(b"currentColor", b"#000000")
    # unsafe=False (the default) keeps cairosvg from resolving external entities or files
    png = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size, background_color="white")
    img = Image.open(io.BytesIO(png))
    img.load()
    return img.convert("RGB")


def ink_fraction(img: Image.Image) -> float:
    """Share of pixels that visibly differ from white."""
    arr = np.asarray(img.convert("RGB"))
    return float((arr < 255 - INK_DELTA).any(axis=2).mean())


def is_done(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def render_task(task: RenderTask) -> tuple[str, Status, str]:
    """Render one SVG into ``dest`` (atomic write); keeps an existing file (incremental re-runs)."""
    source, dest, preprocess = task
    out = Path(dest)
    if is_done(out):
        return dest, "cached", ""
    try:
        svg = Path(source).read_bytes()
        if preprocess is not None:
            svg = preprocess(svg)
        img = render_svg(svg)
    except Exception as exc:  # a broken source file drops one image, not the dataset
        return dest, "error", f"{type(exc).__name__}: {exc}"
    if ink_fraction(img) < MIN_INK_FRACTION:
        return dest, "blank", "nothing visible after rendering"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, out)
    return dest, "ok", ""


def render_all(tasks: Sequence[RenderTask], workers: int, progress: Progress | None,
               name: str = "render") -> dict[str, tuple[Status, str]]:
    """Run ``render_task`` over ``tasks`` (in a process pool when worth it) → {dest: (status, message)}."""
    total = len(tasks)
    results: dict[str, tuple[Status, str]] = {}
    if progress:
        progress(name, 0, total)
    pool = None
    done_iter: Iterable[tuple[str, Status, str]]
    if workers > 1 and total >= POOL_MIN_TASKS:
        # fork: workers inherit the imported modules and need nothing else (cairo/PIL only)
        ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
        pool = ProcessPoolExecutor(workers, mp_context=ctx)
        done_iter = pool.map(render_task, tasks, chunksize=16)
    else:
        done_iter = map(render_task, tasks)
    try:
        for done, (dest, status, message) in enumerate(done_iter, start=1):
            results[dest] = (status, message)
            if status not in ("ok", "cached"):
                log.debug("%s: %s %s: %s", name, dest, status, message)
            if progress and (done % PROGRESS_EVERY == 0 or done == total):
                progress(name, done, total)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# ---------------------------------------------------------------------------------------- stamps
STAMP_FILE = ".render-stamp.json"


def reconcile_stamp(out: Path, stamp: dict[str, Any], image_dirs: dict[str, Path]) -> list[str]:
    """Drop cached images whose source version or render settings changed since they were made.

    ``stamp`` maps a part (e.g. an icon set) to what its images depend on; parts whose entry differs
    from the stored one get their image folder cleared. Returns the parts cleared.
    """
    path = out / STAMP_FILE
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    cleared = []
    for part, folder in image_dirs.items():
        if old.get(part) != stamp.get(part) and folder.is_dir() and any(folder.iterdir()):
            for png in folder.glob("*.png"):
                png.unlink()
            cleared.append(part)
    return cleared


def save_stamp(out: Path, stamp: dict[str, Any]) -> None:
    write_text_atomic(out / STAMP_FILE, json.dumps(stamp, indent=1, sort_keys=True))


# ---------------------------------------------------------------------------------------- output
def check_unique_ids(rows: Sequence[dict[str, Any]], dataset: str) -> None:
    seen = Counter(r["id"] for r in rows)
    dupes = [i for i, n in seen.items() if n > 1]
    if dupes:  # ids are built from unique source keys, so this is a bug, not bad input
        raise RuntimeError(f"{dataset}: duplicate row ids: {dupes[:10]}")


def identical_image_groups(out: Path, rows: Sequence[dict[str, Any]]) -> int:
    """How many groups have an image byte-identical to another group's image (one picture, two names)."""
    by_hash: dict[str, set[str]] = {}
    for row in rows:
        digest = hashlib.sha1((out / row["image"]).read_bytes()).hexdigest()
        by_hash.setdefault(digest, set()).add(row["group"])
    return sum(len(groups) for groups in by_hash.values() if len(groups) > 1)


def package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def dpkg_version(package: str) -> str | None:
    import subprocess

    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                         check=False)
    return (res.stdout.strip() or None) if res.returncode == 0 else None

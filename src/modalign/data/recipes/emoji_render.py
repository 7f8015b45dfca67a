"""Emoji image sources (one per style) and rendering to 96x96 RGB tiles on white.

Each style maps FE0F-free code-point keys (``1f44d-1f3fd``) to a source: the emoji text for the Noto
font, a file path for the npm packages. ``render_task`` runs in worker processes.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from modalign.data.recipes.cldr import codepoints_key
from modalign.data.recipes.install import npm_package_dir

TILE = 96
#: content is fitted into TILE - 2*MARGIN so every style has the same framing
MARGIN = 4
#: the ppem of NotoColorEmoji's only bitmap strike (CBDT fonts render at this size, then get resized)
NOTO_PPEM = 109
NOTO_FONT = Path(os.environ.get("MODALIGN_NOTO_EMOJI_FONT", "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"))
#: a pixel counts as ink when a channel differs this much from white
INK_DELTA = 24
#: below this share of ink pixels a tile counts as blank
MIN_INK_FRACTION = 0.005

Status = Literal["ok", "cached", "blank", "tofu", "error"]


@dataclass(frozen=True)
class Style:
    name: str
    kind: Literal["apt", "npm"]
    package: str  # Debian or npm package name
    install_spec: str  # what to install (npm: pinned to the version whose file layout this code reads)
    licence: str
    subdir: str = ""  # image folder inside the npm package
    suffix: str = ""

    def root(self) -> Path:
        return NOTO_FONT if self.kind == "apt" else npm_package_dir(self.package) / self.subdir

    def available(self) -> bool:
        return self.root().is_file() if self.kind == "apt" else self.root().is_dir()

    def version(self) -> str | None:
        if self.kind == "apt":
            return dpkg_version(self.package)
        try:
            meta = json.loads((npm_package_dir(self.package) / "package.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return str(meta.get("version")) if meta.get("version") else None

    def index(self) -> dict[str, str]:
        """Code-point key → file path of every image the package ships (npm styles only)."""
        out: dict[str, str] = {}
        for path in sorted(self.root().glob(f"*{self.suffix}")):
            # fluent-emoji-3d writes tag sequences with "_" (1f3f4-e0067_e0062_...); openmoji pads to 4 digits
            parts = path.name[: -len(self.suffix)].replace("_", "-").split("-")
            try:
                key = "-".join(f"{int(p, 16):x}" for p in parts if p.lower() != "fe0f")
            except ValueError:  # not a code-point file name (e.g. an extra, non-Unicode image)
                continue
            out.setdefault(key, str(path))
        return out


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("noto", "apt", "fonts-noto-color-emoji", "fonts-noto-color-emoji",
              "OFL-1.1 (font); Noto emoji images Apache-2.0"),
        Style("openmoji", "npm", "openmoji", "openmoji@17.0.0", "CC-BY-SA-4.0", "color/svg", ".svg"),
        Style("fluent-3d", "npm", "@lobehub/fluent-emoji-3d", "@lobehub/fluent-emoji-3d@1.1.0",
              "MIT (Microsoft Fluent Emoji, packaged by LobeHub)", "assets", ".webp"),
        Style("google", "npm", "emoji-datasource-google", "emoji-datasource-google@16.0.0",
              "Apache-2.0 (Noto emoji images); MIT (emoji-datasource)", "img/google/64", ".png"),
    )
}


def dpkg_version(package: str) -> str | None:
    import subprocess

    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                         check=False)
    return res.stdout.strip() or None if res.returncode == 0 else None


# ---------------------------------------------------------------------------------------- rendering
@lru_cache(maxsize=1)
def _noto_font() -> ImageFont.FreeTypeFont:
    # raqm (HarfBuzz) shaping is what turns ZWJ sequences, flags and keycaps into one glyph
    layout = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
    return ImageFont.truetype(str(NOTO_FONT), NOTO_PPEM, layout_engine=layout)


def _noto_draw(text: str) -> Image.Image:
    font = _noto_font()
    width = max(1, round(font.getlength(text)))
    canvas = Image.new("RGBA", (width, NOTO_PPEM * 5 // 4), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), text, font=font, embedded_color=True)
    return canvas


@lru_cache(maxsize=1)
def _noto_fallbacks() -> tuple[bytes, bytes]:
    """What the font draws for an unknown flag (a '?' flag) and for a bare black flag (tag fallback)."""
    return _noto_draw("\U0001f1fd\U0001f1fd").tobytes(), _noto_draw("\U0001f3f4").tobytes()


def render_noto(text: str) -> tuple[Image.Image | None, Status]:
    font = _noto_font()
    # an unsupported ZWJ sequence falls apart into several glyphs side by side
    if font.getlength(text) > 1.5 * NOTO_PPEM * 1.25:
        return None, "tofu"
    img = _noto_draw(text)
    unknown_flag, black_flag = _noto_fallbacks()
    raw = img.tobytes()
    is_region_flag = len(text) == 2 and all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in text)
    if (is_region_flag and raw == unknown_flag) or (text.startswith("\U0001f3f4") and len(text) > 2
                                                    and raw == black_flag):
        return None, "tofu"
    return img, "ok"


def svg_renderer_available() -> bool:
    try:
        import cairosvg  # noqa: F401  (raises OSError when the cairo C library is missing)
    except (ImportError, OSError):
        return False
    return True


def load_file(path: str) -> Image.Image:
    if path.endswith(".svg"):
        import cairosvg

        # 2x the tile is enough for a sharp downscale; cairosvg's time grows with the pixel count
        png = cairosvg.svg2png(url=path, output_width=2 * TILE, output_height=2 * TILE)
        img = Image.open(io.BytesIO(png))
    else:
        img = Image.open(path)
    img.load()
    return img.convert("RGBA")


def to_tile(img: Image.Image) -> Image.Image | None:
    """Crop to the drawn content, fit it centered into a TILE² white RGB square; None when blank."""
    rgba = img.convert("RGBA")
    bbox = rgba.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if bbox is None:
        return None
    content = rgba.crop(bbox)
    inner = TILE - 2 * MARGIN
    scale = inner / max(content.size)
    size = (max(1, round(content.width * scale)), max(1, round(content.height * scale)))
    content = content.resize(size, Image.Resampling.LANCZOS)
    tile = Image.new("RGBA", (TILE, TILE), (255, 255, 255, 255))
    tile.alpha_composite(content, ((TILE - size[0]) // 2, (TILE - size[1]) // 2))
    rgb = tile.convert("RGB")
    return rgb if ink_fraction(rgb) >= MIN_INK_FRACTION else None


def ink_fraction(img: Image.Image) -> float:
    """Share of pixels that visibly differ from white."""
    arr = np.asarray(img.convert("RGB"))
    return float((arr < 255 - INK_DELTA).any(axis=2).mean())


def render_task(task: tuple[str, str, str]) -> tuple[str, Status, str]:
    """(style, source, dest) → (dest, status, message). Writes ``dest`` atomically; skips it if present."""
    style, source, dest = task
    out = Path(dest)
    if out.is_file() and out.stat().st_size > 0:
        return dest, "cached", ""
    try:
        if style == "noto":
            img, status = render_noto(source)
            if img is None:
                return dest, status, "the font has no glyph for this sequence"
        else:
            img = load_file(source)
        tile = to_tile(img)
    except Exception as exc:  # a broken source file drops one image, not the dataset
        return dest, "error", f"{type(exc).__name__}: {exc}"
    if tile is None:
        return dest, "blank", "nothing visible after rendering"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tile.save(tmp, format="PNG", optimize=False)
    os.replace(tmp, out)
    return dest, "ok", ""


def source_for(style: Style, seq: str, index: dict[str, str] | None) -> str | None:
    """The source to render ``seq`` in ``style`` (None when the style lacks it)."""
    if style.kind == "apt":
        return seq
    if index is None:
        raise ValueError(f"style {style.name!r} needs its file index")
    return index.get(codepoints_key(seq))

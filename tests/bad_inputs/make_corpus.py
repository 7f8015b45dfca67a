"""Write the hand-made bad-input corpus into a folder (deterministic; run it or import ``build``).

Each file is one way real data goes wrong; ``expected.json`` maps the file to the path it is fed
through (``image`` / ``audio`` / ``vector`` encoders or the ``manifest`` reader) and the substring
the documented error must contain. The files are generated rather than committed because one of
them is 1 MB and the binary ones are easier to review as code.

    python tests/bad_inputs/make_corpus.py OUT_DIR
"""

from __future__ import annotations

import io
import json
import struct
import sys
import wave
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat
from PIL import Image

HERE = Path(__file__).resolve().parent


def _png_bytes(size: tuple[int, int] = (16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(side: int) -> bytes:
    # a valid header claiming side x side pixels with a few bytes of data: the guard must refuse it
    # from the header alone, before any pixel buffer is allocated
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def _wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> None:
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(samples.astype("<i2").tobytes())


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def build(out: Path) -> Path:
    """Write every corpus file into ``out`` (created) and return it."""
    out.mkdir(parents=True, exist_ok=True)
    png, jpg = _png_bytes(), _jpeg_bytes()
    (out / "good.png").write_bytes(png)

    # images
    (out / "zero_byte.png").write_bytes(b"")
    (out / "truncated.png").write_bytes(png[: len(png) // 2])
    (out / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (out / "corrupt.jpg").write_bytes(jpg[:20] + bytes(range(256)) * 4)
    (out / "not_an_image.png").write_text("this is a text file wearing a .png extension\n")
    # 64 MP: over modalign's 50 MP limit, under Pillow's own bomb limit (so our guard is what stops it)
    (out / "bomb.png").write_bytes(_bomb_png(8_000))
    # 10 GP: Pillow's header check fires first; it must still come out as an ItemError
    (out / "bomb_huge.png").write_bytes(_bomb_png(100_000))

    # audio
    rng = np.random.default_rng(1)
    (out / "undecodable.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + rng.bytes(200))
    (out / "zero_byte.wav").write_bytes(b"")
    _wav(out / "zero_length.wav", np.zeros(0))
    _wav(out / "silent.wav", np.zeros(16_000))
    # a header whose sample-rate field was corrupted to ~450 MHz (once made resampling allocate 34 GB)
    tone = (np.sin(np.arange(4_000) * 0.1) * 5000).astype("<i2")
    _wav(out / "corrupt_rate.wav", tone)
    raw = bytearray((out / "corrupt_rate.wav").read_bytes())
    raw[27] = 27
    (out / "corrupt_rate.wav").write_bytes(bytes(raw))

    # vectors (.npy, dim 4)
    np.save(out / "nan.npy", np.array([1.0, np.nan, 0.0, 2.0], np.float32))
    np.save(out / "inf.npy", np.array([1.0, np.inf, 0.0, 2.0], np.float32))
    np.save(out / "wrong_dim.npy", np.ones(5, np.float32))
    np.save(out / "matrix.npy", np.ones((2, 4), np.float32))
    np.save(out / "pickle.npy", np.array([{"payload": "os.system"}, 1], dtype=object), allow_pickle=True)
    (out / "not_npy.npy").write_text("1.0 2.0 3.0 4.0\n")
    np.save(out / "strings.npy", np.array(["a", "b", "c", "d"]))
    (out / "zero_byte.npy").write_bytes(b"")
    np.save(out / "overflow.npy", np.array([1e39, 0.0, 0.0, 1.0]))  # float64 that float32 cannot hold
    # a 4-TB array claimed by a header on a 100-byte file: must be refused before any allocation
    with (out / "huge_shape.npy").open("wb") as fh:
        npformat.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
        fh.write(b"\x00" * 16)

    # manifests (each references files next to it)
    _jsonl(out / "empty_text.jsonl", [{"id": "a", "text": "   "}])
    _jsonl(out / "huge_text.jsonl", [{"id": "a", "text": "word " * 210_000}])  # ~1 MB of text
    (out / "nan_inline.jsonl").write_text('{"id": "a", "vector": [1.0, NaN, 2.0]}\n')
    (out / "inf_inline.jsonl").write_text('{"id": "a", "vector": [1.0, Infinity, 2.0]}\n')
    _jsonl(out / "wrong_dim_inline.jsonl", [{"id": "a", "vector": [1, 2, 3]}, {"id": "b", "vector": [1, 2]}])
    (out / "overflow_inline.jsonl").write_text('{"id": "a", "vector": [1e39, 1.0, 2.0]}\n')
    (out / "huge_int_inline.jsonl").write_text('{"id": "a", "vector": [1' + "0" * 400 + ', 1, 2]}\n')
    # one short first row must not decide the column's dimension for the rows after it
    _jsonl(out / "short_first_row.jsonl", [{"id": "a", "vector": [1, 2]}, {"id": "b", "vector": [1, 2, 3]},
                                           {"id": "c", "vector": [4, 5, 6]}])
    (out / "invalid_utf8.csv").write_bytes(b"id,text\r\na,fine\r\nb,caf\xe9 latin-1\r\nc,also fine\r\n")
    (out / "semicolon.csv").write_text("id;text\na;fine\n")
    _jsonl(out / "mixed_types.jsonl", [{"id": "a", "text": "fine"}, {"id": "b", "text": 42}])
    _jsonl(out / "unknown_field.jsonl", [{"id": "a", "text": "fine", "colour": "red"}])
    _jsonl(out / "duplicate_ids.jsonl", [{"id": "a", "text": "one"}, {"id": "a", "text": "two"}])
    _jsonl(out / "missing_id.jsonl", [{"text": "who am I"}])
    _jsonl(out / "missing_file.jsonl", [{"id": "a", "image": "no_such_file.png"}])
    _jsonl(out / "path_escape.jsonl", [{"id": "a", "image": "../../../../etc/hostname"}])
    (out / "invalid_json.jsonl").write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": \n')
    (out / "not_object.jsonl").write_text('["id", "a"]\n')
    (out / "extra_cells.csv").write_text("id,text\na,fine\nb,too,many,cells\n")
    (out / "corrupt.parquet").write_bytes(b"PAR1" + b"\x00" * 32)
    (out / "unsupported.txt").write_text("id,text\n")
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "out"))

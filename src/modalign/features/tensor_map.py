"""One tensor of a safetensors file as a read-only memory map: the header is parsed, the data is not read.

Below both ``cache`` (which maps the shards it verified) and ``reader`` (which builds lazy matrices
over them), so neither imports the other.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np


def map_tensor(path: str | Path, name: str) -> np.memmap:
    """One float32 tensor of a safetensors file as a read-only memory map (header parsed, data not read)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    spec = header.get(name)
    if spec is None or spec.get("dtype") != "F32":
        raise ValueError(f"{path}: no float32 tensor {name!r}")
    begin, end = spec["data_offsets"]
    shape = tuple(int(s) for s in spec["shape"])
    if end - begin != 4 * int(np.prod(shape)):
        raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {shape}")
    return np.memmap(path, dtype="<f4", mode="r", offset=8 + size + begin, shape=shape)

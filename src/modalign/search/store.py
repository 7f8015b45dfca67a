"""On-disk index folder: append-only segments, optional faiss files, one JSON commit point.

Layout::

    INDEX_DIR/index.json              format, dim, model fingerprint, backend, segments, ann files
    INDEX_DIR/model/                  copy of the aligned model (config.json + heads.safetensors)
    INDEX_DIR/seg-000001.safetensors  "vectors" float32 (n, dim) of the entries the segment adds
    INDEX_DIR/seg-000001.json         the segment's log: entries, row upserts, deletions
    INDEX_DIR/ann-000003-image.faiss  faiss index of one modality (``--ann hnsw|ivf`` only)
    INDEX_DIR/stats-000003.safetensors per-modality vector sums (lancedb / milvus stores, see stores/)

With a ``lancedb`` or ``milvus`` store the segments carry no vectors (the database holds them) and the
calibration statistics are kept as running sums in the stats file, so no vector is read at load.

Every file is written to a temp file, fsynced and renamed; ``index.json`` is replaced last, so it
only ever lists complete files. A crash leaves unlisted files, which the next writer deletes. File
names in ``index.json`` must match the patterns above: nothing outside the folder is ever read.
No pickle anywhere: JSON, safetensors and faiss's own binary format.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.numpy import load_file, save

from modalign._io import atomic_write_bytes, file_lock, fsync_dir, read_regular, sha256_file
from modalign.align.model import AlignedModel, foreign_files
from modalign.errors import ConfigError, StorageError
from modalign.search.catalog import Segment

FORMAT = "modalign.index"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
#: index.json lists segments and checksums: megabytes at most, even for millions of items
MAX_INDEX_FILE_BYTES = 256 << 20
MODEL_DIR = "model"
SEGMENT_RE = re.compile(r"^seg-(\d{6})$")
ANN_RE = re.compile(r"^ann-(\d{6})-[A-Za-z0-9_.-]+\.faiss$")
STATS_RE = re.compile(r"^stats-(\d{6})\.safetensors$")
_OWN_FILE_RE = re.compile(r"^(seg-\d{6}\.(safetensors|json)|ann-\d{6}-[A-Za-z0-9_.-]+\.faiss"
                          r"|stats-\d{6}\.safetensors)$")


class SegmentRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=SEGMENT_RE.pattern)
    entries: int = Field(ge=0)
    sha256: dict[str, str]


class AnnRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str = Field(pattern=ANN_RE.pattern)
    sha256: str


class StatsRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str = Field(pattern=STATS_RE.pattern)
    sha256: str


class IndexManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = Field(pattern=r"^modalign\.index$")
    format_version: int = Field(ge=1, le=FORMAT_VERSION)
    dim: int = Field(gt=0, le=65536)
    model_fingerprint: str
    backend: str
    backend_params: dict[str, Any] = {}
    generation: int = Field(ge=0)
    segments: list[SegmentRecord] = []
    ann: dict[str, AnnRecord] = {}
    #: where the vectors live (stores/__init__.py: kind, uri, prefix, params); absent: the folder itself
    store: dict[str, Any] = {"kind": "local"}
    stats: StatsRecord | None = None


def model_fingerprint(model: Any) -> str:
    """Hash of everything that decides embeddings: encoders, layers, heads and their weights."""
    h = hashlib.sha256()
    cfg = model.config()
    h.update(json.dumps({"dim": cfg["dim"], "modalities": cfg["modalities"]}, sort_keys=True).encode())
    for m, branch in sorted(model.branches.items()):
        for name, tensor in sorted(branch.head.state_dict().items()):
            h.update(f"{m}.{name}".encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _slug(modality: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", modality)[:64]


class IndexStore:
    """Reads and writes one index folder; writers hold an exclusive lock while they work."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.reload()

    def reload(self) -> None:
        path = self.folder / INDEX_FILE
        if not path.is_file():
            raise ConfigError(f"{self.folder}: not a modalign index ({INDEX_FILE} is missing)")
        try:
            raw = json.loads(read_regular(path, MAX_INDEX_FILE_BYTES).decode("utf-8"))
            self.manifest = IndexManifest.model_validate(raw)
        except StorageError as exc:
            raise ConfigError(str(exc)) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
            raise ConfigError(f"{path}: invalid index file: {problems}") from None
        except (ValueError, RecursionError) as exc:  # not UTF-8, an integer of thousands of digits
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / INDEX_FILE).is_file()

    @classmethod
    def create(cls, folder: str | Path, model: Any, backend: str, backend_params: dict[str, Any],
               store: dict[str, Any] | None = None) -> IndexStore:
        out = Path(folder)
        if cls.exists(out):
            raise ConfigError(f"{out}: an index already exists here")
        # never delete what modalign did not write: a new index goes into a new or empty folder (or one left
        # by a creation that crashed before index.json: only its model folder and lock)
        leftovers = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        foreign = [n for n in leftovers if n not in (MODEL_DIR, ".lock") and not n.startswith(f".{MODEL_DIR}.")]
        if MODEL_DIR in leftovers and not _is_model_folder(out / MODEL_DIR):
            foreign.append(MODEL_DIR)
        if foreign:
            raise ConfigError(f"{out}: not empty and not a modalign index (it holds {', '.join(foreign[:5])}); "
                              "give --out a new or empty folder")
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / MODEL_DIR)  # whole-folder write: it replaces a model folder a crashed creation left
        manifest = IndexManifest(format=FORMAT, format_version=FORMAT_VERSION, dim=model.dim,
                                 model_fingerprint=model_fingerprint(model), backend=backend,
                                 backend_params=backend_params, generation=0, store=store or {"kind": "local"})
        atomic_write_bytes(out / INDEX_FILE, manifest.model_dump_json(indent=1).encode())
        return cls(out)

    # ---------------------------------------------------------------- reading
    def load_model(self, trust_code: bool = False) -> Any:
        model = AlignedModel.load(self.folder / MODEL_DIR, trust_code=trust_code)
        if model_fingerprint(model) != self.manifest.model_fingerprint:
            raise ConfigError(f"{self.folder / MODEL_DIR}: model does not match the one the index was built with")
        return model

    def _checked(self, record: SegmentRecord, suffix: str) -> Path:
        name = f"{record.name}.{suffix}"
        path = self.folder / name
        if not path.is_file():
            raise ConfigError(f"{self.folder}: index file {name} is missing")
        if sha256_file(path) != record.sha256.get(name):
            raise ConfigError(f"{self.folder}: index file {name} is corrupt (checksum mismatch)")
        return path

    def segments(self, with_vectors: bool = True) -> Iterator[Segment]:
        """Each segment in order; ``with_vectors=False`` reads (and checks) only its log."""
        for record in self.manifest.segments:
            log = json.loads(self._checked(record, "json").read_text())
            vectors = None
            if with_vectors and record.entries and f"{record.name}.safetensors" in record.sha256:  # else: in the store
                vectors = load_file(str(self._checked(record, "safetensors")))["vectors"]
                if vectors.shape != (record.entries, self.manifest.dim) or len(log["entries"]) != record.entries:
                    raise ConfigError(f"{self.folder}: segment {record.name} has inconsistent sizes")
            yield Segment(entries=log["entries"], vectors=vectors, rows=log["rows"],
                          deleted_rows=log["deleted_rows"], deleted_entries=log["deleted_entries"])

    def load_stats(self) -> dict[str, np.ndarray]:
        """The stats file's arrays (``<modality>.n|sum|gram``), checked against index.json; {} when none."""
        record = self.manifest.stats
        if record is None:
            return {}
        path = self.folder / record.file
        if not path.is_file() or sha256_file(path) != record.sha256:
            raise ConfigError(f"{self.folder}: index file {record.file} is missing or corrupt")
        return load_file(str(path))

    def write_stats(self, arrays: dict[str, np.ndarray], generation: int) -> StatsRecord:
        path = self.folder / f"stats-{generation:06d}.safetensors"
        data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
        atomic_write_bytes(path, data)
        return StatsRecord(file=path.name, sha256=hashlib.sha256(data).hexdigest())

    def ann_path(self, modality: str) -> Path | None:
        """The verified faiss file of ``modality``, or None when absent or corrupt (then it is rebuilt)."""
        record = self.manifest.ann.get(modality)
        if record is None:
            return None
        path = self.folder / record.file
        if not path.is_file() or sha256_file(path) != record.sha256:
            return None
        return path

    # ---------------------------------------------------------------- writing
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive writer lock; also removes what an interrupted writer left behind."""
        try:
            lock = file_lock(self.folder / ".lock", wait=False)
            lock.__enter__()
        except Timeout:
            raise ConfigError(f"{self.folder}: another process is writing this index") from None
        try:
            self.reload()  # another writer may have committed since this store was opened
            self._remove_unlisted()
            yield
        finally:
            lock.__exit__(None, None, None)

    def _listed(self) -> set[str]:
        names = {f"{s.name}.{ext}" for s in self.manifest.segments for ext in ("json", "safetensors")}
        stats = {self.manifest.stats.file} if self.manifest.stats is not None else set()
        return names | {a.file for a in self.manifest.ann.values()} | stats

    def _remove_unlisted(self) -> None:
        listed = self._listed()
        for path in self.folder.iterdir():
            own = bool(_OWN_FILE_RE.match(path.name)) or (path.name.startswith(".") and path.name.endswith(".tmp"))
            if own and path.name not in listed:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def next_segment_name(self) -> str:
        used = [int(m.group(1)) for s in self.manifest.segments if (m := SEGMENT_RE.match(s.name))]
        return f"seg-{(max(used) + 1 if used else 1):06d}"

    def write_segment(self, segment: Segment, name: str | None = None, with_vectors: bool = True) -> SegmentRecord:
        """Write the segment's files (not yet listed: ``commit`` does that); vectors only when the folder keeps them."""
        name = name or self.next_segment_name()
        hashes = {}
        if segment.entries and with_vectors:
            vectors = np.ascontiguousarray(segment.vectors, dtype=np.float32)
            path = self.folder / f"{name}.safetensors"
            data = save({"vectors": vectors})
            atomic_write_bytes(path, data)
            hashes[path.name] = hashlib.sha256(data).hexdigest()
        log_path = self.folder / f"{name}.json"
        atomic_write_bytes(log_path, json.dumps(segment.log(), ensure_ascii=False).encode())
        hashes[log_path.name] = sha256_file(log_path)
        return SegmentRecord(name=name, entries=len(segment.entries), sha256=hashes)

    def write_ann(self, modality: str, backend: Any, generation: int) -> AnnRecord:
        path = self.folder / f"ann-{generation:06d}-{_slug(modality)}.faiss"
        backend.save(path)  # atomic itself (faiss_base.save)
        return AnnRecord(file=path.name, sha256=sha256_file(path))

    def commit(self, segments: list[SegmentRecord], ann: dict[str, AnnRecord], generation: int,
               stats: StatsRecord | None = None) -> None:
        """Replace index.json (the commit point), then delete the files it no longer lists."""
        update: dict[str, Any] = {"segments": segments, "ann": ann, "generation": generation}
        if stats is not None:
            update["stats"] = stats
        manifest = self.manifest.model_copy(update=update)
        atomic_write_bytes(self.folder / INDEX_FILE, manifest.model_dump_json(indent=1).encode())
        self.manifest = manifest
        self._remove_unlisted()
        fsync_dir(self.folder)


def _is_model_folder(folder: Path) -> bool:
    """A folder holding only what a modalign model folder holds (so replacing it deletes nothing else)."""
    return folder.is_dir() and not folder.is_symlink() and not foreign_files(folder)

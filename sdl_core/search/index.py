"""The search index: which model made it (identity), its entries, its file format.

The index is one ``.safetensors`` file: ``vectors`` (N, K, D) float16 (float32 when a
model's values do not fit float16), ``sizes``/``mtimes``/``ids`` (N) int64 (``ids``: each
photo's id, kept across updates), ``paths`` (the relative paths, UTF-8/filesystem bytes
joined by NUL), the model's vocabulary (``vocab.vectors``/``vocab.seen``), and a JSON
manifest in the metadata: format, model identity (name, config, weight fingerprint), word
space, folder, and, for a large index, which approximate sidecar (``<file>.ann``, see
:mod:`.ann`) belongs to it. Searching reads only these and the word space: the image
backbone is never loaded. Format version 1 (no ids, no sidecar) is still read.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from safetensors.torch import save as serialize

from ..checkpoint import hash_tensors, read_tagged_safetensors
from ..config import ModelConfig, WordSpaceInfo
from ..errors import SDLError, SearchIndexError, StorageError
from ..files import write_bytes
from ..vocab import Vocabulary
from .ann import ApproxIndex, sidecar_path

if TYPE_CHECKING:  # the Tagger pulls in timm: only index building needs it
    from ..tagger import Tagger

INDEX_FORMAT = "sdl-search-index"
INDEX_VERSION = "2"
#: Versions this version of sdl_core reads (1: before photo ids and the approximate sidecar).
READABLE_VERSIONS = ("1", "2")
#: The index file ``index FOLDER`` writes (and ``search FOLDER`` reads) when no path is given.
DEFAULT_INDEX_NAME = "sdl-index.safetensors"
#: Unreadable files remembered in the manifest (the CLI lists them all when they happen).
MAX_FAILED_KEPT = 1000
_F16_MAX = 60_000.0
_CHUNK = 32_768  # photos converted to float32 at a time

log = logging.getLogger(__name__)


# --- identity of the model that made the vectors ------------------------------------

@dataclass(frozen=True)
class ModelIdentity:
    """What makes two indexes comparable: same config and same weights.

    ``source`` is how the model was named when the index was built (a registered name
    or a checkpoint path), so re-running ``index`` can reload the same model.
    """

    name: str
    config_json: str
    fingerprint: str
    source: str | None = None
    data_dir: str | None = None

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_json(self.config_json)

    @property
    def word_space(self) -> WordSpaceInfo:
        return self.config.word_space

    def describe(self) -> str:
        space = self.word_space
        return f"model {self.name!r} (K={self.config.k}, word space {space.name}, {space.dim}-d)"

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "config": json.loads(self.config_json), "fingerprint": self.fingerprint,
                           "source": self.source, "data_dir": self.data_dir}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelIdentity":
        data = json.loads(text)
        config = ModelConfig.from_dict(data["config"])  # validates
        return cls(str(data["name"]), config.to_json(), str(data["fingerprint"]), data.get("source"),
                   data.get("data_dir"))


_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def weights_fingerprint(config: ModelConfig, state: dict[str, torch.Tensor]) -> str:
    """Hash of config + every tensor (name, dtype, shape, bytes): equal iff same vectors come out."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(config.to_json().encode())
    hash_tensors(digest, state)
    return digest.hexdigest()


def model_identity(tagger: "Tagger", source: str | None = None, data_dir: str | None = None) -> ModelIdentity:
    """Identity of a loaded tagger's model (the weight hash is cached per model object)."""
    model = tagger.model
    fingerprint = _FINGERPRINTS.get(model)
    if fingerprint is None:
        fingerprint = weights_fingerprint(tagger.config, model.state_dict())
        _FINGERPRINTS[model] = fingerprint
    return ModelIdentity(tagger.name, tagger.config.to_json(), fingerprint, source, data_dir)


# --- the index --------------------------------------------------------------------

class FileEntry(NamedTuple):
    """A photo as seen on disk: path relative to the index root (``/``-separated).
    A tuple: 100,000 of them are made in milliseconds when an index loads."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class SearchIndex:
    """Principal vectors of the photos under ``root``; ``vectors[i]`` belongs to ``entries[i]``
    and to photo id ``ids[i]``. ``ann``: the approximate part of a large index (or None)."""

    root: Path
    identity: ModelIdentity
    entries: list[FileEntry]
    vectors: torch.Tensor  # (N, K, D): see in_memory()
    vocabulary: Vocabulary
    word_space_source: str | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)
    ids: np.ndarray | None = None  # (N,) int64, unique; default 0..N-1
    next_id: int = 0  # the id the next new photo gets (ids are never reused)
    ann: ApproxIndex | None = None
    _mean: torch.Tensor | None = field(default=None, repr=False)
    _id_order: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        cfg = self.identity.config
        if self.vectors.dim() != 3 or tuple(self.vectors.shape[1:]) != (cfg.k, cfg.d):
            raise SearchIndexError(f"index vectors have shape {tuple(self.vectors.shape)}, "
                                   f"expected (N, {cfg.k}, {cfg.d}) for {self.identity.describe()}")
        if self.vectors.shape[0] != len(self.entries):
            raise SearchIndexError(f"index has {self.vectors.shape[0]} vector sets for {len(self.entries)} files")
        if self.vocabulary.dim != cfg.d:
            raise SearchIndexError(f"index vocabulary is {self.vocabulary.dim}-d, the model's space {cfg.d}-d")
        if self.ids is None:
            self.ids = np.arange(len(self.entries), dtype=np.int64)
        if self.ids.shape != (len(self.entries),):
            raise SearchIndexError(f"index has {self.ids.shape[0]} photo ids for {len(self.entries)} files")
        self.next_id = max(self.next_id, int(self.ids.max()) + 1 if len(self.ids) else 0)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def reduction(self) -> str:
        return self.identity.config.reduction

    def full_path(self, entry: FileEntry) -> Path:
        return self.root / Path(*entry.path.split("/"))

    def mean_vectors(self) -> torch.Tensor:
        """(N, D) float32 mean principal vector: with ``mean`` reduction, <mean_k A_k, w> is the exact score."""
        if self._mean is None:
            blocks = [self.vectors[s:s + _CHUNK].float().mean(dim=1) for s in range(0, len(self), _CHUNK)]
            self._mean = torch.cat(blocks) if blocks else torch.zeros(0, self.vectors.shape[2])
        return self._mean

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the photos with these ids (ids not in the index are left out)."""
        assert self.ids is not None
        if self._id_order is None:
            self._id_order = np.argsort(self.ids, kind="stable")
        if not len(self.ids):
            return np.zeros(0, dtype=np.int64)
        at = np.clip(np.searchsorted(self.ids, ids, sorter=self._id_order), 0, len(self.ids) - 1)
        rows = self._id_order[at]
        return rows[self.ids[rows] == ids]

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file + rename): a crash or a full disk never leaves half an
        index, and the index already there stays whole."""
        path = Path(path)
        tensors = {
            "vectors": as_stored(self.vectors),
            "sizes": torch.tensor([e.size for e in self.entries], dtype=torch.int64),
            "mtimes": torch.tensor([e.mtime_ns for e in self.entries], dtype=torch.int64),
            "paths": _pack_paths([e.path for e in self.entries]),
            "ids": torch.from_numpy(np.ascontiguousarray(self.ids, dtype=np.int64)),
            "vocab.vectors": torch.from_numpy(self.vocabulary.vectors.copy()),
            "vocab.seen": torch.from_numpy(self.vocabulary.seen.astype(np.uint8)),
        }
        root = self.root.resolve()
        try:
            relative = os.path.relpath(root, path.parent.resolve())
        except ValueError:  # another drive on Windows
            relative = ""
        metadata = {
            "format": INDEX_FORMAT, "format_version": INDEX_VERSION, "model": self.identity.to_json(),
            "root_relative": relative, "root_absolute": str(root),
            "word_space_source": self.word_space_source or "",
            "vocab_tags": json.dumps(self.vocabulary.tags, ensure_ascii=False),
            "failed": json.dumps(self.failed[:MAX_FAILED_KEPT], ensure_ascii=False),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "next_id": str(self.next_id),
        }
        try:
            if self.ann is not None:  # first: the index file then names a whole sidecar
                metadata["ann"] = json.dumps(self.ann.save(sidecar_path(path)))
            written = write_bytes(path, serialize(tensors, metadata=metadata), "search index")
        except StorageError as exc:
            raise SearchIndexError(f"{exc}; give another file with --out") from None
        if self.ann is None:
            sidecar_path(path).unlink(missing_ok=True)  # one left from when the index was larger
        return written


def in_memory(vectors: torch.Tensor, approximate: bool) -> torch.Tensor:
    """How an index holds its vectors: float32 for exact search (a scan reads float32 fastest:
    converting float16 on the way made it 1.4x slower), as stored (float16: half the memory)
    when an approximate part names the few rows a search reads. Same values either way."""
    return as_stored(vectors) if approximate else vectors.float()


def as_stored(vectors: torch.Tensor) -> torch.Tensor:
    """float16 halves the file; values outside its range keep float32."""
    if vectors.dtype == torch.float16:
        return vectors.detach().cpu().contiguous()
    vectors = vectors.detach().cpu().float().contiguous()
    if vectors.numel() and float(vectors.abs().max()) > _F16_MAX:
        return vectors
    return vectors.half()


def _pack_paths(paths: Sequence[str]) -> torch.Tensor:
    blob = b"\0".join(os.fsencode(p) for p in paths)
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.zeros(0, dtype=torch.uint8)


def _unpack_paths(blob: torch.Tensor, n: int) -> list[str]:
    if n == 0:
        return []
    return os.fsdecode(blob.numpy().tobytes()).split("\0")


def resolve_index_path(path: str | Path) -> Path:
    """An index file, or a folder holding :data:`DEFAULT_INDEX_NAME`."""
    path = Path(path)
    return path / DEFAULT_INDEX_NAME if path.is_dir() else path


def load_index(path: str | Path) -> SearchIndex:
    """Read an index written by :meth:`SearchIndex.save`; anything else is a clear error."""
    path = resolve_index_path(path)
    if not path.is_file():
        raise SearchIndexError(f"{path}: no such index file (build one with `python -m sdl_core index FOLDER`)")
    meta, tensors = read_tagged_safetensors(path, INDEX_FORMAT, SearchIndexError, what="a photo search index",
                                            noun="index", hint=". Delete it and run `index` again.")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise SearchIndexError(f"{path.name}: index format version {meta.get('format_version')!r}; this version "
                               f"of sdl_core reads {', '.join(map(repr, READABLE_VERSIONS))}: rebuild it with "
                               "`index --rebuild`")
    try:
        identity = ModelIdentity.from_json(meta["model"])
        if tensors["vectors"].dtype not in (torch.float16, torch.float32):
            raise ValueError(f"vectors are {tensors['vectors'].dtype}")
        vectors = in_memory(tensors.pop("vectors"), bool(meta.get("ann")))
        n = int(vectors.shape[0])
        sizes, mtimes = tensors["sizes"].tolist(), tensors["mtimes"].tolist()
        paths = _unpack_paths(tensors["paths"], n)
        if not len(paths) == len(sizes) == len(mtimes) == n:
            raise ValueError(f"{n} vector sets but {len(paths)} paths, {len(sizes)} sizes, {len(mtimes)} mtimes")
        vocab = Vocabulary(json.loads(meta["vocab_tags"]), tensors["vocab.vectors"].numpy(),
                           tensors["vocab.seen"].numpy().astype(bool))
        failed = [(str(p), str(m)) for p, m in json.loads(meta.get("failed", "[]"))]
        root = _stored_root(path, meta)
        with _gc_paused():
            entries = list(map(FileEntry, paths, sizes, mtimes))
        ids = _unique_ids(tensors["ids"].numpy()) if "ids" in tensors else None
        index = SearchIndex(root, identity, entries, vectors, vocab, meta.get("word_space_source") or None, failed,
                            ids, int(meta.get("next_id", 0)))
    except SDLError as exc:
        raise SearchIndexError(f"{path.name}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, RecursionError, UnicodeError) as exc:
        raise SearchIndexError(f"{path.name}: index is incomplete or invalid ({type(exc).__name__}: {exc}). "
                               "Delete it and run `index` again.") from None
    if not _all_finite(index.vectors):
        raise SearchIndexError(f"{path.name}: index holds non-finite vectors (corrupt): rebuild it")
    if meta.get("ann"):
        index.ann = _load_ann(path, meta["ann"], index)
    return index


def _unique_ids(ids: np.ndarray) -> np.ndarray:
    if ids.dtype != np.int64 or ids.ndim != 1 or (len(ids) and ids.min() < 0):
        raise ValueError("photo ids must be non-negative int64")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("photo ids repeat")
    return ids


def _load_ann(path: Path, reference_json: str, index: SearchIndex) -> ApproxIndex | None:
    """The index's approximate part, or None (with a warning) when it cannot be used: the
    search then reads every vector, and the next ``index`` run rebuilds the sidecar."""
    sidecar = sidecar_path(path)
    try:
        ann = ApproxIndex.load(sidecar, json.loads(reference_json))
        if not ann.matches(len(index)) or (ann.k, ann.dim, ann.reduction) != (*index.vectors.shape[1:],
                                                                                index.reduction):
            raise ValueError(f"{sidecar.name} does not match the index (stale)")
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
        log.warning("%s: approximate index not used (%s); searches read every photo's vectors until "
                    "`python -m sdl_core index` rebuilds it", path.name, exc)
        return None
    return ann


def _all_finite(vectors: torch.Tensor) -> bool:
    """No NaN/inf: a float32 sum is one fast pass; only an overflowing sum needs the full check."""
    return math.isfinite(float(vectors.sum(dtype=torch.float32))) or bool(torch.isfinite(vectors).all())


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Making 100,000 small tuples triggers the cyclic GC over and over (6x slower)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _stored_root(path: Path, meta: dict[str, str]) -> Path:
    """The photo folder: relative to the index file if that still exists (both moved together)."""
    relative = meta.get("root_relative", "")
    if relative:
        candidate = (path.parent / relative).resolve()
        if candidate.is_dir():
            return candidate
    return Path(meta["root_absolute"])



"""The approximate part of a large index: an inverted-file index (FAISS IVF) over the vectors.

An exact search reads every principal vector per query (100,000 photos with K=7, D=300:
840 MB). From :func:`min_photos` photos on, an index also carries an :class:`ApproxIndex`;
a search asks it for candidate photos and re-scores only those, exactly, with all K vectors
(:func:`sdl_core.scoring.score_tags`): every score shown is exact, only the choice of
candidates is approximate.

- max over K: every principal vector is an entry (id = photo id * K + k), so a tag's best
  vectors name its candidate photos.
- mean over K: a photo's mean vector is its entry (id = photo id); <mean_k A_k, w> is the score.
- ``all`` with several tags: a photo in the answer fits every tag, so it is among the photos
  each tag likes best, but deep among them. Each tag reads every entry of the lists it
  scans (an inverted file gives them at no extra cost: the time goes into the scan), their
  8-bit scores estimate every photo's weakest tag, and the :data:`FOR_ALL` best estimates
  are re-scored. Mean models ask with the sum of the tags instead, which is exact in the first
  stage: a photo's sum of scores is at least T times its weakest score.

The entries are grouped into ~2 sqrt(n) lists around k-means centroids; a query scans the
lists whose centroids fit the tag best: :data:`NPROBE` of them, or as many as hold
``scan`` entries (:data:`MIN_SCAN`, raised by :mod:`.calibrate` where the vectors need it; a
small index is scanned whole). Entries are stored as 8-bit
scalars (one byte a coordinate, each dimension's range learnt at build time), padded with
zeros to a multiple of 16 dimensions (FAISS's SIMD code needs that: D=300 scanned 8x slower
unpadded). Each tag is its own FAISS query: FAISS runs a batch on OpenMP threads, which
gains nothing for a few tags and took the CPU from torch's threads (FAISS's OpenMP calls
reach torch's runtime, so setting FAISS's thread count would change torch's too).

Photo ids stay the same across updates (the index file stores them), so an update removes
the entries of removed or changed photos and adds those of new ones; the lists are learnt
again once the collection has doubled or lost a quarter since they were. On disk the index
is a sidecar, ``<index file>.ann``: a header line, a JSON manifest with its own format
version, then FAISS's own serialisation. The index file records the sidecar's token, so a
sidecar left by another index or by an interrupted write is never used (search then reads
every vector, and the next ``index`` run rebuilds it).
"""
from __future__ import annotations

import json
import logging
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import SearchIndexError
from ..files import atomic_write

if TYPE_CHECKING:  # faiss is imported when an approximate index is made or read
    import faiss

log = logging.getLogger(__name__)

ANN_FORMAT = "sdl-search-ann"
ANN_VERSION = "1"
#: Environment variable: the photo count from which indexes get the approximate part.
MIN_PHOTOS_ENV = "SDL_TAGGER_ANN_MIN_PHOTOS"
DEFAULT_MIN_PHOTOS = 50_000
#: Lists scanned per tag (at least), entries scanned per tag (at least), candidates per tag (at
#: least; 4 per photo asked for), and for ``all`` the candidates by estimated weakest tag.
NPROBE = 16
MIN_SCAN = 20_000
PER_TAG = 80
FOR_ALL = 400
#: Training points per list (FAISS wants at least 39) and k-means rounds.
TRAIN_PER_LIST = 40
TRAIN_ROUNDS = 10
#: The lists are learnt again when the entries grew past this factor or removals passed this share.
REBUILD_GROWTH = 2.0
REBUILD_SHARE = 0.25
_ADD_CHUNK = 8192  # photos handed to FAISS at a time (bounds the float32 copy)
_SIMD_WIDTH = 16
_MAGIC = b"SDL-ANN\n"


def _faiss() -> Any:
    """FAISS, its OpenMP threads told to sleep when idle: spinning (the default), they took the
    CPU from torch's threads between two searches and made a search up to 20x slower. Only
    FAISS's runtime reads the setting now (torch's read the environment when torch loaded);
    an explicit OMP_WAIT_POLICY is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss
    return faiss


def min_photos() -> int:
    """Photos from which an index gets its approximate part (``$SDL_TAGGER_ANN_MIN_PHOTOS``)."""
    raw = os.environ.get(MIN_PHOTOS_ENV, "").strip()
    if not raw:
        return DEFAULT_MIN_PHOTOS
    value = int(raw) if raw.isdigit() else 0
    if value < 1:
        raise SearchIndexError(f"{MIN_PHOTOS_ENV} must be a whole number of photos (1 or more), got {raw!r}")
    return value


def sidecar_path(index_path: Path) -> Path:
    """Where the approximate part of the index file ``index_path`` lives."""
    return index_path.with_name(index_path.name + ".ann")


def list_count(entries: int) -> int:
    """~2 sqrt(entries) lists, but never fewer than TRAIN_PER_LIST training points per list."""
    return max(1, min(int(2 * math.sqrt(entries)), entries // TRAIN_PER_LIST))


def _padded(rows: np.ndarray | torch.Tensor) -> np.ndarray:
    """float32 rows with zeros appended up to a multiple of 16 dimensions (inner products unchanged)."""
    rows = np.asarray(rows, dtype=np.float32)
    extra = -rows.shape[1] % _SIMD_WIDTH
    return np.ascontiguousarray(np.pad(rows, ((0, 0), (0, extra))) if extra else rows)


def _entries(block: torch.Tensor, reduction: str) -> np.ndarray:
    """(n, K, D) principal vectors -> the float32 rows they are entered as."""
    block = block.float()
    return _padded((block.reshape(-1, block.shape[2]) if reduction == "max" else block.mean(dim=1)).numpy())


def _entry_ids(ids: np.ndarray, k: int, reduction: str) -> np.ndarray:
    ids = ids.astype(np.int64)
    return (ids[:, None] * k + np.arange(k)).reshape(-1) if reduction == "max" else ids


def _training_rows(vectors: torch.Tensor, reduction: str, count: int) -> np.ndarray:
    """``count`` entries spread evenly over the collection (deterministic: same index, same lists)."""
    per_photo = vectors.shape[1] if reduction == "max" else 1
    photos = np.unique(np.linspace(0, len(vectors) - 1, num=max(1, -(-count // per_photo))).astype(np.int64))
    return _entries(vectors[torch.from_numpy(photos)], reduction)


def _new_index(vectors: torch.Tensor, reduction: str) -> "faiss.Index":
    faiss = _faiss()
    n, k, dim = vectors.shape
    entries = n * (k if reduction == "max" else 1)
    lists = list_count(entries)
    width = dim + -dim % _SIMD_WIDTH
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(width), width, lists, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = TRAIN_ROUNDS
    index.cp.seed = 1
    index.cp.min_points_per_centroid = 1  # a tiny index has few points a list: no warning on stderr
    index.train(_training_rows(vectors, reduction, lists * TRAIN_PER_LIST))
    return index


@dataclass
class ApproxIndex:
    """The inverted file of one index, and how it was made."""

    k: int
    dim: int
    reduction: str
    index: "faiss.Index"
    trained_on: int  # entries when the lists were learnt
    removed: int = 0  # entries removed since
    token: str | None = None  # the sidecar it was read from, until it changes
    scan: int = MIN_SCAN  # entries a query scans per tag (at least)

    @classmethod
    def build(cls, vectors: torch.Tensor, ids: np.ndarray, reduction: str) -> "ApproxIndex":
        """The inverted file over (N, K, D) principal vectors of photos ``ids``."""
        _, k, dim = vectors.shape
        log.info("building the approximate index: %d photos", len(ids))
        ann = cls(k, dim, reduction, _new_index(vectors, reduction), 0)
        ann.add(vectors, ids)
        ann.trained_on = ann.entries
        return ann

    @property
    def per_photo(self) -> int:
        return self.k if self.reduction == "max" else 1

    @property
    def entries(self) -> int:
        return int(self.index.ntotal)

    @property
    def photos(self) -> int:
        return self.entries // self.per_photo

    def add(self, vectors: torch.Tensor, ids: np.ndarray) -> None:
        """Entries for photos ``ids`` with (n, K, D) principal vectors."""
        self.token = None
        for start in range(0, len(ids), _ADD_CHUNK):
            self.index.add_with_ids(_entries(vectors[start:start + _ADD_CHUNK], self.reduction),
                                    _entry_ids(ids[start:start + _ADD_CHUNK], self.k, self.reduction))

    def remove(self, ids: np.ndarray) -> None:
        """Drop the entries of photos ``ids``."""
        if not len(ids):
            return
        faiss = _faiss()
        self.token = None
        keys = _entry_ids(ids, self.k, self.reduction)
        self.removed += int(self.index.remove_ids(faiss.IDSelectorBatch(len(keys), faiss.swig_ptr(keys))))

    def candidates(self, tag_vectors: np.ndarray, top_n: int, mode: str) -> np.ndarray:
        """Ids of the photos worth re-scoring for (T, D) tag vectors: each tag's best photos,
        and for ``all`` with several tags those whose weakest tag scores best (estimated)."""
        ivf = _faiss().extract_index_ivf(self.index)
        ivf.nprobe = min(ivf.nlist, max(NPROBE, math.ceil(self.scan * ivf.nlist / max(1, self.entries))))
        queries = _padded(tag_vectors)
        per_tag, keep = max(PER_TAG, 4 * top_n), max(FOR_ALL, 10 * top_n)
        if mode != "all" or len(queries) == 1:
            picked = [self._search(queries, per_tag)]
        elif self.reduction == "mean":  # <m, sum_t w_t> = sum_t <m, w_t> >= T * min_t <m, w_t>
            picked = [self._search(queries, per_tag), self._search(queries.sum(axis=0, keepdims=True), keep)]
        else:  # every entry of the lists scanned, as (photo, estimated score) per tag
            lists = []
            for query in queries:
                _, scores, found = self.index.range_search(query[None], float(np.finfo(np.float32).min))
                lists.append((found // self.per_photo, scores))
            return _weakest_best(lists, per_tag, keep)
        ids = np.concatenate([p.reshape(-1) for p in picked])
        return np.unique(ids[ids >= 0] // self.per_photo)

    def _search(self, queries: np.ndarray, count: int) -> np.ndarray:
        """Entry ids, (Q, count), best first; -1 pads missing entries. One query per call: FAISS
        runs a batch on OpenMP threads, and those took the CPU from torch's between searches."""
        return np.stack([self.index.search(query[None], min(count, self.entries))[1][0] for query in queries])

    def matches(self, photos: int) -> bool:
        """Whether it holds exactly ``photos`` photos (an index and its sidecar agree)."""
        return self.entries == photos * self.per_photo

    def updated(self, vectors: torch.Tensor, ids: np.ndarray, reduction: str, gone: np.ndarray,
                added: np.ndarray) -> "ApproxIndex":
        """This index after an update that dropped photos ``gone`` and added rows ``added``
        of the new (N, K, D) ``vectors`` (photo ids ``ids``); built afresh when the lists no
        longer fit (another shape, the collection doubled or lost a quarter)."""
        entries = len(ids) * self.per_photo
        if ((self.k, self.dim, self.reduction) != (*vectors.shape[1:], reduction)
                or entries > REBUILD_GROWTH * self.trained_on
                or (self.removed + len(gone) * self.per_photo) > REBUILD_SHARE * self.trained_on):
            return ApproxIndex.build(vectors, ids, reduction)
        self.remove(gone)
        self.add(vectors[torch.from_numpy(added)], ids[added])
        return self

    # --- the sidecar file ---------------------------------------------------------------

    def save(self, path: Path) -> dict:
        """Write the sidecar whole or not at all (unless it is already there, unchanged);
        returns what the index file records about it."""
        if self.token is not None and _header_or_none(path).get("token") == self.token:
            return self._reference()
        faiss = _faiss()
        token = secrets.token_hex(16)
        header = json.dumps({"format": ANN_FORMAT, "format_version": ANN_VERSION, "token": token, "k": self.k,
                             "dim": self.dim, "reduction": self.reduction, "trained_on": self.trained_on,
                             "removed": self.removed, "scan": self.scan,
                             "library": f"faiss {faiss.__version__}"}).encode()
        with atomic_write(path, "approximate search index") as tmp:
            with open(tmp, "wb") as out:
                out.write(_MAGIC + len(header).to_bytes(8, "little") + header)
                faiss.write_index(self.index, faiss.PyCallbackIOWriter(out.write))
                out.flush()
                os.fsync(out.fileno())
        self.token = token
        return self._reference()

    def _reference(self) -> dict:
        return {"format_version": ANN_VERSION, "token": self.token, "photos": self.photos}

    @classmethod
    def load(cls, path: Path, reference: dict[str, Any]) -> "ApproxIndex":
        """The index in the sidecar ``path`` that the index file's ``reference`` names;
        ValueError says why it cannot be used (missing, stale, corrupt, another version)."""
        header = _header_or_none(path)
        if not header:
            raise ValueError(f"{path.name} is missing or not an approximate index")
        if header.get("format_version") != ANN_VERSION or reference.get("format_version") != ANN_VERSION:
            raise ValueError(f"{path.name} has format version {header.get('format_version')!r}, "
                             f"this version of sdl_core reads {ANN_VERSION!r}")
        if header.get("token") != reference.get("token"):
            raise ValueError(f"{path.name} belongs to another version of the index (stale)")
        faiss = _faiss()
        with open(path, "rb") as fh:
            fh.seek(len(_MAGIC) + 8 + int(header["_length"]))
            index = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
        if int(index.d) != int(header["dim"]) + -int(header["dim"]) % _SIMD_WIDTH:
            raise ValueError(f"{path.name}: entries are {index.d}-d, the manifest says {header['dim']}")
        return cls(int(header["k"]), int(header["dim"]), str(header["reduction"]), index, int(header["trained_on"]),
                   int(header.get("removed", 0)), header["token"], int(header.get("scan", MIN_SCAN)))


def _weakest_best(lists: list[tuple[np.ndarray, np.ndarray]], per_tag: int, count: int) -> np.ndarray:
    """Photos worth re-scoring for ``all``, from each tag's (photo, estimated score) entries:
    each tag's ``per_tag`` best photos and the ``count`` photos whose weakest tag scores best.
    A photo missing from a tag's entries counts with that tag's lowest score there."""
    photos, inverse = np.unique(np.concatenate([p for p, _ in lists]), return_inverse=True)
    table = np.empty((len(photos), len(lists)), np.float32)
    for t, (_, scores) in enumerate(lists):
        table[:, t] = scores.min() if len(scores) else -np.inf
    tag_of = np.repeat(np.arange(len(lists)), [len(p) for p, _ in lists])
    np.maximum.at(table, (inverse, tag_of), np.concatenate([s for _, s in lists]))  # a photo's best entry
    picked = [_best_rows(table.min(axis=1), count)] + [_best_rows(table[:, t], per_tag) for t in range(len(lists))]
    return np.unique(photos[np.concatenate(picked)])


def _best_rows(values: np.ndarray, count: int) -> np.ndarray:
    """Rows of the ``count`` largest values (in no order)."""
    if count >= len(values):
        return np.arange(len(values))
    return np.argpartition(-values, count)[:count]


def _header_or_none(path: Path) -> dict[str, Any]:
    """The sidecar's manifest (with ``_length``, its size in bytes), or {} if it is not one."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(_MAGIC)) != _MAGIC:
                return {}
            length = int.from_bytes(fh.read(8), "little")
            if not 0 < length < 1 << 20:
                return {}
            header = json.loads(fh.read(length))
    except (OSError, ValueError):
        return {}
    if not isinstance(header, dict) or header.get("format") != ANN_FORMAT:
        return {}
    return {**header, "_length": length}

"""The approximate part of a large index: inverted-file indexes (FAISS IVF) over the vectors.

An exact search reads every principal vector per query (100,000 photos with K=7, D=300:
840 MB). From :func:`min_photos` photos on, an index also carries an :class:`ApproxIndex`;
a search asks it for candidate photos and re-scores only those, exactly, with all K vectors
(:func:`sdl_core.scoring.score_tags`): every score shown is exact, only the choice of
candidates is approximate.

- Every principal vector is an entry (id = photo id * K + k): a tag's vectors cluster
  around its word vector, so the lists near the tag hold the photos that fit it.
- max over K, one tag or ``any``: each tag's best entries name its candidate photos.
- otherwise (``all``; every query of a mean model) each tag reads every entry of the lists
  it scans (an inverted file gives them at no extra cost: the time goes into the scan), the
  8-bit scores estimate each photo's score per tag (:mod:`.estimate`), and the best estimates
  are re-scored. A photo in an ``all`` answer fits every tag, but is deep among the photos
  each tag likes best: this is why ``all`` needs the whole scan.
- mean models also keep each photo's mean vector as an entry of a second, K times smaller
  index (id = photo id), asked by ``all`` with the sum of the tags: <mean_k A_k, sum_t w_t>
  is a photo's sum of scores, at least T times its weakest. (The mean vectors alone name
  a rare tag's photos badly: they mix all of a photo's tags, so they sit in lists that fit
  other tags; at 1,000,000 photos 3 rare tags in 30 lost a quarter to a third of their best photos.)

The entries are grouped into ~2 sqrt(n) lists around k-means centroids; a query scans the
lists whose centroids fit the tag best: :data:`NPROBE` of them, or as many as hold
``scan`` entries (:data:`MIN_SCAN`, raised by :mod:`.calibrate` where the vectors need it; a
small index is scanned whole). Entries are stored as 8-bit scalars (one byte a coordinate,
each dimension's range learnt at build time), padded with zeros to a multiple of 16
dimensions (FAISS's SIMD code needs that: D=300 scanned 8x slower unpadded). Each tag is its
own FAISS query: FAISS runs a batch on OpenMP threads, which gains nothing for a few tags and
took the CPU from torch's threads (FAISS's OpenMP calls reach torch's runtime, so setting
FAISS's thread count would change torch's too).

Photo ids stay the same across updates (the index file stores them), so an update removes
the entries of removed or changed photos and adds those of new ones; the lists are learnt
again once the collection has doubled or lost a quarter since they were. On disk the index
is a sidecar, ``<index file>.ann``: a header line, a JSON manifest with its own format
version, then FAISS's own serialisation of each index. The index file records the sidecar's
token, so a sidecar left by another index or by an interrupted write is never used (search
then reads every vector, and the next ``index`` run rebuilds it).
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
from .estimate import chosen, estimates

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
_HEADER_ROOM = 4096  # bytes kept for the JSON manifest (written last, when the parts' sizes are known)


def _faiss() -> Any:
    """FAISS, its OpenMP threads told to sleep when idle: spinning (the default), they took the
    CPU from torch's threads between two searches and made a search up to 10x slower. Only
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


def _rows(block: torch.Tensor, means: bool) -> np.ndarray:
    """(n, K, D) principal vectors -> the float32 rows entered: every vector, or each mean."""
    block = block.float()
    return _padded((block.mean(dim=1) if means else block.reshape(-1, block.shape[2])).numpy())


def _vector_ids(ids: np.ndarray, k: int) -> np.ndarray:
    return (ids.astype(np.int64)[:, None] * k + np.arange(k)).reshape(-1)


def _new_index(vectors: torch.Tensor, means: bool) -> "faiss.Index":
    """An empty inverted file, its lists learnt from entries spread evenly over the collection
    (deterministic: the same vectors give the same lists)."""
    faiss = _faiss()
    n, k, dim = vectors.shape
    per_photo = 1 if means else k
    lists = list_count(n * per_photo)
    width = dim + -dim % _SIMD_WIDTH
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(width), width, lists, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = TRAIN_ROUNDS
    index.cp.seed = 1
    index.cp.min_points_per_centroid = 1  # a tiny index has few points a list: no warning on stderr
    photos = np.linspace(0, n - 1, num=max(1, -(-lists * TRAIN_PER_LIST // per_photo))).astype(np.int64)
    index.train(_rows(vectors[torch.from_numpy(np.unique(photos))], means))
    return index


def _probed(index: "faiss.Index", scan: int) -> "faiss.Index":
    """``index`` set to scan NPROBE lists, or as many as hold ``scan`` entries."""
    ivf = _faiss().extract_index_ivf(index)
    ivf.nprobe = min(ivf.nlist, max(NPROBE, math.ceil(scan * ivf.nlist / max(1, index.ntotal))))
    return index


def _nearest(index: "faiss.Index", queries: np.ndarray, count: int) -> np.ndarray:
    """Entry ids, (Q, count), best first, -1 padding. One query per call: FAISS runs a batch on
    OpenMP threads, and those took the CPU from torch's between searches."""
    return np.stack([index.search(q[None], max(1, min(count, index.ntotal)))[1][0] for q in queries])


@dataclass
class ApproxIndex:
    """The inverted files of one index (``means``: mean models only), and how they were made."""

    k: int
    dim: int
    reduction: str
    index: "faiss.Index"
    means: "faiss.Index | None"
    trained_on: int  # entries of ``index`` when the lists were learnt
    removed: int = 0  # entries removed since
    token: str | None = None  # the sidecar it was read from, until it changes
    scan: int = MIN_SCAN  # entries a query scans per tag (at least)

    @classmethod
    def build(cls, vectors: torch.Tensor, ids: np.ndarray, reduction: str) -> "ApproxIndex":
        """The inverted files over (N, K, D) principal vectors of photos ``ids``."""
        _, k, dim = vectors.shape
        log.info("building the approximate index: %d photos", len(ids))
        means = _new_index(vectors, means=True) if reduction == "mean" else None
        ann = cls(k, dim, reduction, _new_index(vectors, means=False), means, 0)
        ann.add(vectors, ids)
        ann.trained_on = ann.entries
        return ann

    @property
    def entries(self) -> int:
        return int(self.index.ntotal)

    @property
    def photos(self) -> int:
        return self.entries // self.k

    def add(self, vectors: torch.Tensor, ids: np.ndarray) -> None:
        """Entries for photos ``ids`` with (n, K, D) principal vectors."""
        self.token = None
        for start in range(0, len(ids), _ADD_CHUNK):
            block, keys = vectors[start:start + _ADD_CHUNK], ids[start:start + _ADD_CHUNK].astype(np.int64)
            self.index.add_with_ids(_rows(block, means=False), _vector_ids(keys, self.k))
            if self.means is not None:
                self.means.add_with_ids(_rows(block, means=True), keys)

    def remove(self, ids: np.ndarray) -> None:
        """Drop the entries of photos ``ids``."""
        if not len(ids):
            return
        faiss = _faiss()
        self.token = None
        for index, keys in ((self.index, _vector_ids(ids, self.k)), (self.means, ids.astype(np.int64))):
            if index is not None:
                index.remove_ids(faiss.IDSelectorBatch(len(keys), faiss.swig_ptr(keys)))
        self.removed += len(ids) * self.k

    def candidates(self, tag_vectors: np.ndarray, top_n: int, mode: str) -> np.ndarray:
        """Ids of the photos worth re-scoring for (T, D) tag vectors (see the module's notes)."""
        queries = _padded(tag_vectors)
        per_tag, keep = max(PER_TAG, 4 * top_n), max(FOR_ALL, 10 * top_n)
        several = mode == "all" and len(queries) > 1
        index = _probed(self.index, self.scan)
        if self.reduction == "max" and not several:
            found = _nearest(index, queries, per_tag)
            return np.unique(found[found >= 0] // self.k)
        lists = []
        for query in queries:  # every entry of the lists scanned, as (photo, estimated score)
            _, scores, found = index.range_search(query[None], float(np.finfo(np.float32).min))
            lists.append((found // self.k, scores))
        picked = [chosen(*estimates(lists, self.k, self.reduction), mode, per_tag, keep)]
        if several and self.means is not None:
            found = _nearest(_probed(self.means, self.scan), queries.sum(axis=0, keepdims=True), keep)
            picked.append(found[found >= 0])
        return np.unique(np.concatenate(picked))

    def pays(self) -> bool:
        """False when calibration had to raise the scan past half the entries (vectors that do
        not cluster: :mod:`.calibrate`): reading every vector is then as quick, and search does."""
        return self.scan <= MIN_SCAN or 2 * self.scan <= self.entries

    def matches(self, photos: int) -> bool:
        """Whether it holds exactly ``photos`` photos (an index and its sidecar agree)."""
        return self.entries == photos * self.k and (self.means is None or int(self.means.ntotal) == photos)

    def updated(self, vectors: torch.Tensor, ids: np.ndarray, reduction: str, gone: np.ndarray,
                added: np.ndarray) -> "ApproxIndex":
        """This index after an update that dropped photos ``gone`` and added rows ``added``
        of the new (N, K, D) ``vectors`` (photo ids ``ids``); built afresh when the lists no
        longer fit (another shape, the collection doubled or lost a quarter)."""
        if ((self.k, self.dim, self.reduction) != (*vectors.shape[1:], reduction)
                or len(ids) * self.k > REBUILD_GROWTH * self.trained_on
                or self.removed + len(gone) * self.k > REBUILD_SHARE * self.trained_on):
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
        token, lengths = secrets.token_hex(16), []
        with atomic_write(path, "approximate search index") as tmp:
            with open(tmp, "wb") as out:
                out.write(_MAGIC + _HEADER_ROOM.to_bytes(8, "little") + b" " * _HEADER_ROOM)
                for index in (self.index, self.means):  # streamed: never a second copy in memory
                    if index is not None:
                        start = out.tell()
                        faiss.write_index(index, faiss.PyCallbackIOWriter(out.write))
                        lengths.append(out.tell() - start)
                header = json.dumps({"format": ANN_FORMAT, "format_version": ANN_VERSION, "token": token,
                                     "k": self.k, "dim": self.dim, "reduction": self.reduction,
                                     "trained_on": self.trained_on, "removed": self.removed, "scan": self.scan,
                                     "parts": lengths, "library": f"faiss {faiss.__version__}"}).encode()
                out.seek(len(_MAGIC) + 8)
                out.write(header.ljust(_HEADER_ROOM))  # JSON allows the trailing spaces
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
        offset, indexes = len(_MAGIC) + 8 + int(header["_length"]), []
        for length in header["parts"]:
            part = np.memmap(path, np.uint8, mode="r", offset=offset, shape=(int(length),))
            indexes.append(faiss.deserialize_index(part))
            offset += int(length)
        if not 1 <= len(indexes) <= 2 or any(int(i.d) != int(header["dim"]) + -int(header["dim"]) % _SIMD_WIDTH
                                             for i in indexes):
            raise ValueError(f"{path.name}: its indexes do not match its manifest")
        return cls(int(header["k"]), int(header["dim"]), str(header["reduction"]), indexes[0],
                   indexes[1] if len(indexes) > 1 else None, int(header["trained_on"]),
                   int(header.get("removed", 0)), header["token"], int(header.get("scan", MIN_SCAN)))


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

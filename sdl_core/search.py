"""Tag-based photo search: index a folder's principal vectors once, then rank photos by typed tags.

A photo's score for a tag is the model's own tag score, ``reduce_k <A_k, w_tag>``
(``reduce`` = the model's reduction, ``max`` for SDL). Several tags combine as
``all`` = the *minimum* over tags (a photo ranks high only if every tag fits) or
``any`` = the *maximum* (one fitting tag is enough).

The index is one ``.safetensors`` file: ``vectors`` (N, K, D) float16 (float32 when a
model's values do not fit float16), ``sizes``/``mtimes`` (N) int64, ``paths`` (the
relative paths, UTF-8/filesystem bytes joined by NUL), the model's vocabulary
(``vocab.vectors``/``vocab.seen``), and a JSON manifest in the metadata: format,
model identity (name, config, weight fingerprint), word space, folder. Searching
reads only this file and the word space: the image backbone is never loaded.

An index belongs to one model: updating it with another model (other weights, other
config or word space) is a :class:`SearchIndexError` that says so; ``rebuild=True``
(``index --rebuild``) starts a fresh index instead.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from safetensors.torch import save as serialize

from .checkpoint import hash_tensors, read_tagged_safetensors
from .config import ModelConfig, WordSpaceInfo
from .errors import SDLError, StorageError, TagInputError
from .scoring import score_tags
from .storage import exclusive, write_bytes_atomically
from .tags import clean_tags, parse_tags
from .vocab import Vocabulary
from .wordvec import WORDLLAMA, TableSpace, WordSpace, load_word_space

if TYPE_CHECKING:  # the Tagger pulls in timm: only index building needs it
    from .tagger import Tagger

log = logging.getLogger(__name__)

INDEX_FORMAT = "sdl-search-index"
INDEX_VERSION = "1"
#: The index file ``index FOLDER`` writes (and ``search FOLDER`` reads) when no path is given.
DEFAULT_INDEX_NAME = "sdl-index.safetensors"
#: File name endings treated as photos when a folder is scanned (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
MODES = ("any", "all")
#: Photos scored per block: bounds the temporary memory of one query.
SEARCH_CHUNK = 32_768
#: Unreadable files remembered in the manifest (the CLI lists them all when they happen).
MAX_FAILED_KEPT = 1000
_F16_MAX = 60_000.0


class SearchIndexError(SDLError):
    """An index file is missing, corrupt, or belongs to another model or folder."""


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
    """Principal vectors of the photos under ``root``; ``vectors[i]`` belongs to ``entries[i]``."""

    root: Path
    identity: ModelIdentity
    entries: list[FileEntry]
    vectors: torch.Tensor  # (N, K, D) float32
    vocabulary: Vocabulary
    word_space_source: str | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)
    _mean: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        cfg = self.identity.config
        if self.vectors.dim() != 3 or tuple(self.vectors.shape[1:]) != (cfg.k, cfg.d):
            raise SearchIndexError(f"index vectors have shape {tuple(self.vectors.shape)}, "
                                   f"expected (N, {cfg.k}, {cfg.d}) for {self.identity.describe()}")
        if self.vectors.shape[0] != len(self.entries):
            raise SearchIndexError(f"index has {self.vectors.shape[0]} vector sets for {len(self.entries)} files")
        if self.vocabulary.dim != cfg.d:
            raise SearchIndexError(f"index vocabulary is {self.vocabulary.dim}-d, the model's space {cfg.d}-d")

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def reduction(self) -> str:
        return self.identity.config.reduction

    def full_path(self, entry: FileEntry) -> Path:
        return self.root / Path(*entry.path.split("/"))

    def mean_vectors(self) -> torch.Tensor:
        """(N, D) mean principal vector: with ``mean`` reduction, <mean_k A_k, w> is the exact score."""
        if self._mean is None:
            self._mean = self.vectors.mean(dim=1)
        return self._mean

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file + rename): a crash or a full disk never leaves half an
        index, and the index already there stays whole."""
        path = Path(path)
        tensors = {
            "vectors": _storage(self.vectors),
            "sizes": torch.tensor([e.size for e in self.entries], dtype=torch.int64),
            "mtimes": torch.tensor([e.mtime_ns for e in self.entries], dtype=torch.int64),
            "paths": _pack_paths([e.path for e in self.entries]),
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
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            return write_bytes_atomically(path, serialize(tensors, metadata=metadata), "search index")
        except StorageError as exc:
            raise SearchIndexError(f"{exc}; give another file with --out") from None


def _storage(vectors: torch.Tensor) -> torch.Tensor:
    """float16 halves the file; values outside its range keep float32."""
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
    if meta.get("format_version") != INDEX_VERSION:
        raise SearchIndexError(f"{path.name}: index format version {meta.get('format_version')!r}; this version "
                               f"of sdl_core reads {INDEX_VERSION!r}: rebuild it with `index --rebuild`")
    try:
        identity = ModelIdentity.from_json(meta["model"])
        vectors = tensors["vectors"].float()
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
        index = SearchIndex(root, identity, entries, vectors, vocab, meta.get("word_space_source") or None, failed)
    except SDLError as exc:
        raise SearchIndexError(f"{path.name}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, RecursionError, UnicodeError) as exc:
        raise SearchIndexError(f"{path.name}: index is incomplete or invalid ({type(exc).__name__}: {exc}). "
                               "Delete it and run `index` again.") from None
    if not _all_finite(index.vectors):
        raise SearchIndexError(f"{path.name}: index holds non-finite vectors (corrupt): rebuild it")
    return index


def _all_finite(vectors: torch.Tensor) -> bool:
    """No NaN/inf: a float32 sum is one fast pass; only an overflowing sum needs the full check."""
    return math.isfinite(float(vectors.sum())) or bool(torch.isfinite(vectors).all())


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


# --- building and updating --------------------------------------------------------

@dataclass
class UpdateReport:
    """What one ``index`` run did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def encoded(self) -> int:
        return len(self.added) + len(self.updated)


def scan_folder(folder: str | Path) -> list[FileEntry]:
    """Photos under ``folder`` (recursive, hidden files and folders skipped), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SearchIndexError(f"{folder}: no such folder")
    out: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            full = Path(dirpath) / name
            try:
                st = full.stat()
            except OSError:
                continue  # vanished or a broken link
            rel = full.relative_to(folder).as_posix()
            out.append(FileEntry(rel, int(st.st_size), int(st.st_mtime_ns)))
    return sorted(out, key=lambda e: e.path)


def entries_for_files(paths: Sequence[str | Path]) -> tuple[Path, list[FileEntry]]:
    """Root (their common folder) and entries for an explicit list of files (uploads)."""
    if not paths:
        raise SearchIndexError("no photos given")
    full = [Path(p).resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in full]))
    entries = []
    for p in full:
        try:
            st = p.stat()
        except OSError as exc:
            raise SearchIndexError(f"{p.name}: cannot read ({exc.strerror or exc})") from None
        entries.append(FileEntry(p.relative_to(root).as_posix(), int(st.st_size), int(st.st_mtime_ns)))
    return root, sorted(set(entries), key=lambda e: e.path)


ProgressFn = Callable[[int, int], None]


def update_index(root: str | Path, tagger: "Tagger", index: SearchIndex | None = None, *,
                 files: Sequence[FileEntry] | None = None, batch_size: int = 16, source: str | None = None,
                 data_dir: str | None = None, word_space_source: str | None = None,
                 progress: ProgressFn | None = None) -> tuple[SearchIndex, UpdateReport]:
    """Index ``root`` (or ``files`` under it), reusing every vector of ``index`` whose
    file has the same size and mtime: only new or changed photos go through the model.

    Unreadable files are reported in the result, not raised. Ctrl-C stops early and
    returns what is done (``report.interrupted``), so the caller can save it.
    ``progress(done, total)`` is called after each batch.
    """
    root = Path(root).resolve()
    identity = model_identity(tagger, source, data_dir)
    if index is not None:
        check_compatible(index, identity, root)
    current = scan_folder(root) if files is None else list(files)
    old = {e.path: i for i, e in enumerate(index.entries)} if index is not None else {}
    report = UpdateReport()
    keep_rows: list[int] = []
    keep_entries: list[FileEntry] = []
    todo: list[FileEntry] = []
    for entry in current:
        i = old.get(entry.path)
        if i is not None and index is not None and index.entries[i] == entry:
            keep_rows.append(i)
            keep_entries.append(entry)
        else:
            todo.append(entry)
    seen_now = {e.path for e in current}
    report.removed = [p for p in old if p not in seen_now]
    report.unchanged = len(keep_rows)
    new_entries, new_vectors = _encode_entries(root, todo, tagger, max(1, batch_size), report, progress)
    for entry in new_entries:
        (report.updated if entry.path in old else report.added).append(entry.path)
    cfg = tagger.config
    kept = index.vectors[keep_rows] if index is not None and keep_rows else torch.zeros(0, cfg.k, cfg.d)
    vectors = torch.cat([kept] + new_vectors) if new_vectors else kept
    entries = keep_entries + new_entries
    order = sorted(range(len(entries)), key=lambda j: entries[j].path)
    result = SearchIndex(root, identity, [entries[j] for j in order], vectors[order].contiguous(),
                         tagger.vocabulary, word_space_source or (index.word_space_source if index else None),
                         list(report.failed))
    log.info("indexed %s: %d added, %d updated, %d removed, %d unchanged, %d unreadable", root, len(report.added),
             len(report.updated), len(report.removed), report.unchanged, len(report.failed))
    return result, report


def _encode_entries(root: Path, todo: list[FileEntry], tagger: "Tagger", batch_size: int, report: UpdateReport,
                    progress: ProgressFn | None) -> tuple[list[FileEntry], list[torch.Tensor]]:
    """Load and encode photos in batches; a bad photo is recorded and skipped."""
    done_entries: list[FileEntry] = []
    done_vectors: list[torch.Tensor] = []
    done = 0
    paths = [root / Path(*entry.path.split("/")) for entry in todo]
    try:
        for loaded, encoded in tagger.encode_files(paths, batch_size):
            for entry, (_, error) in zip(todo[done:done + len(loaded)], loaded):
                if error is None:
                    done_entries.append(entry)
                else:
                    report.failed.append((entry.path, str(error)))
            if encoded is not None:
                done_vectors.append(_storage(encoded.vectors).float())  # as saved: in memory == on disk
            done += len(loaded)
            if progress is not None:
                progress(done, len(todo))
    except KeyboardInterrupt:
        report.interrupted = True
        log.warning("interrupted after %d of %d photos", done, len(todo))
    return done_entries, done_vectors


def check_compatible(index: SearchIndex, identity: ModelIdentity, root: Path | None = None) -> None:
    """An index is only updated by the model (weights and config) and folder that built it."""
    if index.identity.fingerprint != identity.fingerprint:
        raise SearchIndexError(f"the index was built with {index.identity.describe()}, not with "
                               f"{identity.describe()} (other weights or config): its vectors cannot be mixed. "
                               "Use --rebuild to replace it, or --out for a separate index.")
    if root is not None and index.root.resolve() != Path(root).resolve():
        raise SearchIndexError(f"the index belongs to folder {index.root}, not {root}. "
                               "Use --rebuild to replace it, or --out for a separate index.")


# --- searching ---------------------------------------------------------------------

@dataclass(frozen=True)
class SearchHit:
    """One matching photo: its combined score, the tag that decided it (the best tag for
    ``any``, the weakest for ``all``) and the principal vector that matched that tag."""

    path: str
    full_path: Path
    score: float
    tag: str
    principal: int
    tag_scores: dict[str, float]

    def to_dict(self) -> dict:
        return {"path": str(self.full_path), "relative_path": self.path, "score": round(self.score, 6),
                "tag": self.tag, "principal": self.principal,
                "tag_scores": {t: round(s, 6) for t, s in self.tag_scores.items()}}


@dataclass
class SearchResult:
    hits: list[SearchHit]
    tags: list[str]
    not_in_vocabulary: list[str]
    mode: str
    searched: int

    def to_dict(self) -> dict:
        return {"tags": self.tags, "mode": self.mode, "not_in_vocabulary": self.not_in_vocabulary,
                "searched": self.searched, "results": [h.to_dict() for h in self.hits]}


def query_space(index: SearchIndex, word_space: str | Path | WordSpace | None = None) -> WordSpace:
    """The word space typed tags are embedded in: the one given (checked against the
    index's model), else WordLlama for WordLlama models, else the fastText file the index
    was built with if it is still there, else the model's vocabulary as a table."""
    info = index.identity.word_space
    if word_space is None:
        if info == WORDLLAMA:
            return load_word_space("wordllama")
        if index.word_space_source and Path(index.word_space_source).is_file():
            word_space = index.word_space_source
        else:
            return TableSpace(info, index.vocabulary.tags, index.vocabulary.vectors)
    space = load_word_space(word_space) if isinstance(word_space, (str, Path)) else word_space
    from .tagger import check_word_space  # only when the user brings a space
    check_word_space(space, info.name, info.dim, index.vocabulary)
    return space


def embed_query(tags: Iterable[str], vocabulary: Vocabulary, space: WordSpace
                ) -> tuple[list[str], np.ndarray, list[str]]:
    """Vectors for typed tags, as the tagger gets them: the vocabulary's own vector when the
    tag is in it, else the word space. Returns (tags found, (T, D) vectors, tags not found)."""
    tags = clean_tags(tags)
    if not tags:
        raise TagInputError("no tags to search for: type at least one tag")
    vectors, found = space.embed(tags)
    for i, tag in enumerate(tags):
        j = vocabulary.index(tag)
        if j is not None:
            vectors[i], found[i] = vocabulary.vectors[j], True
    missing = [t for t, f in zip(tags, found) if not f]
    if not found.any():
        raise TagInputError(f"none of the tags has a word vector in the model's word space "
                            f"({vocabulary.dim}-d): {', '.join(missing[:10])}")
    return [t for t, f in zip(tags, found) if f], vectors[found], missing


def tag_scores(vectors: torch.Tensor, tag_vectors: torch.Tensor, reduction: str) -> torch.Tensor:
    """(N, T) score of every photo for every tag: reduce_k <A_k, w_t>, in blocks."""
    n, k, d = vectors.shape
    out = torch.empty(n, tag_vectors.shape[0])
    w = tag_vectors.contiguous()
    for start in range(0, n, SEARCH_CHUNK):
        block = vectors[start:start + SEARCH_CHUNK]
        # ``linear`` (see scoring.score_tags): 2.5x faster than matmul for 3 tags, equal for 1
        per_k = torch.nn.functional.linear(block.reshape(-1, d), w).view(block.shape[0], k, -1)
        out[start:start + block.shape[0]] = per_k.amax(dim=1) if reduction == "max" else per_k.mean(dim=1)
    return out


def combine(scores: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) per-tag scores -> (N) photo scores and the deciding tag: all = min, any = max."""
    if scores.shape[1] == 1 and mode in MODES:
        return scores[:, 0], torch.zeros(scores.shape[0], dtype=torch.long)
    if mode == "all":
        return scores.min(dim=1)
    if mode == "any":
        return scores.max(dim=1)
    raise TagInputError(f"mode must be one of {MODES}, got {mode!r}")


@torch.inference_mode()
def search(index: SearchIndex, tags: Iterable[str], space: WordSpace, top_n: int = 20, mode: str = "any"
           ) -> SearchResult:
    """The ``top_n`` photos that best fit ``tags`` (best first; ties by path)."""
    if mode not in MODES:
        raise TagInputError(f"mode must be one of {MODES}, got {mode!r}")
    found, vectors, missing = embed_query(tags, index.vocabulary, space)
    if len(index) == 0:
        return SearchResult([], found, missing, mode, 0)
    w = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    if index.reduction == "mean":  # exact shortcut: the mean over k is linear
        per_tag = index.mean_vectors() @ w.t()
    else:
        per_tag = tag_scores(index.vectors, w, index.reduction)
    combined, _ = combine(per_tag, mode)
    hits = _hits(index, top_rows(combined, top_n), w, found, mode)
    hits.sort(key=lambda h: (-h.score, h.path))
    return SearchResult(hits, found, missing, mode, len(index))


def top_rows(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Rows of the n best scores; ties at the cut go to the lower rows (paths are sorted,
    so the result never depends on topk's tie order)."""
    n = min(max(1, n), scores.shape[0])
    values, rows = torch.topk(scores, n)
    cut = values[-1]
    if int((scores == cut).sum()) == int((values == cut).sum()):
        return rows  # no tie straddles the cut (the usual case): topk's rows are the answer
    above = torch.nonzero(scores > cut).flatten()
    tied = torch.nonzero(scores == cut).flatten()[: n - above.numel()]
    return torch.cat([above, tied])


def _hits(index: SearchIndex, rows: torch.Tensor, w: torch.Tensor, tags: list[str], mode: str) -> list[SearchHit]:
    scores, winners = score_tags(index.vectors[rows], w, index.reduction)  # (n, T) each
    combined, decider = combine(scores, mode)
    out = []
    for j, row in enumerate(rows.tolist()):
        entry = index.entries[row]
        t = int(decider[j])
        out.append(SearchHit(entry.path, index.full_path(entry), float(combined[j]), tags[t], int(winners[j, t]),
                             {tag: float(scores[j, i]) for i, tag in enumerate(tags)}))
    return out


# --- command line ------------------------------------------------------------------

def add_commands(sub: argparse._SubParsersAction) -> None:
    """``index`` and ``search`` sub-commands (registered through cli.COMMAND_MODULES)."""
    from .cli import _add_model_args, _positive

    idx = sub.add_parser("index", help="index a folder of photos for tag search",
                         description="Compute every photo's principal vectors once and store them in an index. "
                                     "Re-running updates only new or changed photos; removed photos drop out.")
    idx.add_argument("folder", metavar="FOLDER")
    _add_model_args(idx)
    idx.set_defaults(model=None)
    idx.add_argument("--out", help=f"index file (default: FOLDER/{DEFAULT_INDEX_NAME})")
    idx.add_argument("--batch-size", type=_positive, default=16, help="photos per forward pass (default 16)")
    idx.add_argument("--rebuild", action="store_true",
                     help="start a fresh index even if one exists (e.g. built with another model)")
    idx.add_argument("--no-progress", action="store_true", help="no progress bar")
    idx.set_defaults(func=cmd_index)

    srch = sub.add_parser("search", help="find indexed photos by typed tags",
                          description="Rank indexed photos by the model's tag score reduce_k <A_k, w_tag>. "
                                      "--mode any: a photo's score is its best tag (max over tags); "
                                      "--mode all: its weakest tag (min over tags), so every tag must fit.")
    srch.add_argument("index", metavar="INDEX", help=f"index file, or a folder holding {DEFAULT_INDEX_NAME}")
    srch.add_argument("tags", metavar="TAGS", help='comma-separated tags: "dog, beach"')
    srch.add_argument("--top-n", type=_positive, default=20, help="photos to list (default 20)")
    srch.add_argument("--mode", choices=MODES, default="any", help="combine several tags (default any)")
    srch.add_argument("--json", action="store_true", help="print one JSON object")
    srch.add_argument("--model", help="check that the index was built with this model (registered name or "
                                      "checkpoint path); never loads the image backbone")
    srch.add_argument("--word-space", help="'wordllama', or the fastText .bin/.vec of the model's word space "
                                           "(embeds tags outside the model's vocabulary)")
    srch.set_defaults(func=cmd_search)


def _model_source(name: str) -> tuple[str, bool]:
    """(recorded source, is a path): a checkpoint's absolute path, or a registered name."""
    path = Path(name)
    if path.exists():
        return str(path.resolve()), True
    from .registry import resolve_name
    return resolve_name(name) or name, False


def cmd_index(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise SearchIndexError(f"{folder}: no such folder")
    out = Path(args.out) if args.out else folder / DEFAULT_INDEX_NAME
    with exclusive(out, "search index", SearchIndexError):  # a second `index` run on it fails clearly
        return _index_locked(args, folder, out)


def _index_locked(args: argparse.Namespace, folder: Path, out: Path) -> int:
    from .cli import EXIT_OK, EXIT_SOME_FAILED, load_tagger
    from .registry import DEFAULT_MODEL
    old = None if args.rebuild or not out.exists() else load_index(out)
    if args.model is None:  # re-running: the model that built the index
        args.model = (old.identity.source if old is not None and old.identity.source else DEFAULT_MODEL)
        args.data_dir = args.data_dir or (old.identity.data_dir if old is not None else None)
    tagger = load_tagger(args)
    source, is_path = _model_source(args.model)
    space_source = str(Path(args.word_space).resolve()) if args.word_space and args.word_space != "wordllama" else None
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if args.no_progress:
            return
        if bar is None:  # made on the first batch, when the number of photos to encode is known
            from tqdm import tqdm
            bar = tqdm(total=total, unit="photo", file=sys.stderr, desc="indexing", dynamic_ncols=True)
        bar.n = done
        bar.refresh()

    try:
        index, report = update_index(folder, tagger, old, batch_size=args.batch_size, source=source,
                                     data_dir=str(Path(args.data_dir).resolve()) if args.data_dir and is_path
                                     else None, word_space_source=space_source, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    index.save(out)
    for path, message in report.failed:
        print(f"unreadable: {path}: {message}", file=sys.stderr)
    print(f"{out}: {len(index)} photos ({len(report.added)} added, {len(report.updated)} updated, "
          f"{len(report.removed)} removed, {report.unchanged} unchanged, {len(report.failed)} unreadable)")
    if report.interrupted:
        print("interrupted: the photos done so far are saved; run the same command again to finish",
              file=sys.stderr)
        return 130
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def verify_model(index: SearchIndex, name: str) -> None:
    """Refuse a search that names another model than the index's, without building it."""
    source, is_path = _model_source(name)
    if is_path and Path(source).suffix == ".safetensors":
        from .checkpoint import read_checkpoint
        config, state, _ = read_checkpoint(source)
        fingerprint = weights_fingerprint(config, state)
        if fingerprint != index.identity.fingerprint:
            raise SearchIndexError(f"the index was built with {index.identity.describe()}, not with {name}")
    elif source != index.identity.source:
        raise SearchIndexError(f"the index was built with {index.identity.source or index.identity.name!r}, "
                               f"not with {name!r}")


def cmd_search(args: argparse.Namespace) -> int:
    from .cli import EXIT_OK
    tags = parse_tags(args.tags)
    if not tags:
        raise TagInputError("no tags to search for: type at least one tag, e.g. \"dog, beach\"")
    index = load_index(args.index)
    if args.model:
        verify_model(index, args.model)
    space = query_space(index, args.word_space)
    start = time.perf_counter()
    result = search(index, tags, space, top_n=args.top_n, mode=args.mode)
    log.info("searched %d photos in %.1f ms", result.searched, 1000 * (time.perf_counter() - start))
    if args.json:
        json.dump(result.to_dict(), sys.stdout, ensure_ascii=False, indent=2)
        print()
        return EXIT_OK
    for hit in result.hits:
        print(f"{hit.score:9.4f}  {hit.full_path}")
    if not result.hits:
        print("no photos in the index", file=sys.stderr)
    if result.not_in_vocabulary:
        print(f"not in vocabulary: {', '.join(result.not_in_vocabulary)}")
    return EXIT_OK

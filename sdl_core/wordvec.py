"""Word spaces: any tag string -> a unit vector in the space a model was trained in.

Three sources: a fastText ``.bin`` (subword n-grams, so every typed word gets a
vector), a fixed table (a fastText ``.vec`` file, or the authors' vocabulary
vectors), and WordLlama (a 256-d static token-embedding space that ships inside
its pip wheel; the offline default). All share one cache and one normalisation.
"""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import WordSpaceInfo
from .errors import WordSpaceError
from .tags import normalize_tag

log = logging.getLogger(__name__)

#: The space of the authors' released NUS-WIDE model (fastText English crawl vectors).
AUTHORS_FASTTEXT = WordSpaceInfo("fasttext-en-crawl", 300)
#: The WordLlama space that ships in the ``wordllama`` wheel.
WORDLLAMA = WordSpaceInfo("wordllama-l2-supercat-256", 256)

CACHE_SIZE = 200_000


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows; all-zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


class WordSpace(ABC):
    """Maps tags to unit vectors; remembers what it has embedded."""

    def __init__(self, info: WordSpaceInfo) -> None:
        self.info = info
        self._cache: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.info.dim

    @abstractmethod
    def _embed_new(self, tags: list[str]) -> list[np.ndarray | None]:
        """Vectors (any norm) for normalised tags; None where the space has no vector."""

    def embed(self, tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (N x D unit vectors, N bools "found"). Missing tags get zero rows."""
        keys = [normalize_tag(t) for t in tags]
        with self._lock:
            todo = [k for k in dict.fromkeys(keys) if k not in self._cache]
        if todo:
            fresh = _unit_vectors(self._embed_new(todo), self.dim)
            with self._lock:
                for key, vec in zip(todo, fresh):
                    self._cache[key] = vec
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        with self._lock:
            for i, key in enumerate(keys):
                vec = self._cache.get(key)
                if vec is None and key not in self._cache:
                    vec = _unit_vectors(self._embed_new([key]), self.dim)[0]  # evicted meanwhile: rare
                if vec is not None:
                    out[i], found[i] = vec, True
        return out, found


def _unit_vectors(vectors: list[np.ndarray | None], dim: int) -> list[np.ndarray | None]:
    """Unit-length copies, normalised in one pass; None where a vector is missing, zero
    or not finite (the space has no usable vector for that tag)."""
    out: list[np.ndarray | None] = [None] * len(vectors)
    present = [i for i, v in enumerate(vectors) if v is not None]
    if not present:
        return out
    rows = [np.asarray(vectors[i], dtype=np.float32).reshape(-1) for i in present]
    wrong = next((r.shape[0] for r in rows if r.shape[0] != dim), None)
    if wrong is not None:
        raise WordSpaceError(f"word vector has {wrong} dimensions, expected {dim}")
    matrix = np.stack(rows)
    norms = np.linalg.norm(matrix, axis=1)
    usable = np.isfinite(norms) & (norms > 0)
    matrix /= np.where(usable, norms, 1.0)[:, None]
    for row, i in enumerate(present):
        if usable[row]:
            out[i] = matrix[row]
    return out


class TableSpace(WordSpace):
    """A fixed table of tag -> vector. Phrases fall back to the mean of their words.

    A tag that is neither in the table nor made only of words in the table has no
    vector: it is reported as "not in vocabulary", never scored as zero.
    """

    def __init__(self, info: WordSpaceInfo, tags: Sequence[str], vectors: np.ndarray) -> None:
        super().__init__(info)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(tags), info.dim):
            raise WordSpaceError(f"table has shape {vectors.shape}, expected ({len(tags)}, {info.dim})")
        self._table = {normalize_tag(t): i for i, t in enumerate(tags)}
        self._vectors = vectors

    def __contains__(self, tag: str) -> bool:
        return normalize_tag(tag) in self._table

    def _lookup(self, tag: str) -> np.ndarray | None:
        for key in (tag, tag.replace(" ", "_"), tag.replace(" ", "-"), tag.replace(" ", "")):
            if key in self._table:
                return self._vectors[self._table[key]]
        words = tag.replace("_", " ").replace("-", " ").split()
        if len(words) > 1 and all(w in self._table for w in words):
            return unit_rows(np.stack([self._vectors[self._table[w]] for w in words])).mean(0)
        return None

    def _embed_new(self, tags: list[str]) -> list[np.ndarray | None]:
        return [self._lookup(t) for t in tags]

    @classmethod
    def from_vec_file(cls, path: str | Path, name: str | None = None, max_words: int | None = None) -> "TableSpace":
        """Read a fastText/word2vec text file (first line: count and dimension)."""
        path = Path(path)
        tags: list[str] = []
        rows: list[np.ndarray] = []
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                header = fh.readline().split()
                if len(header) != 2 or not all(h.isdigit() for h in header):
                    raise WordSpaceError(f"{path.name}: first line must be '<count> <dim>'")
                dim = int(header[1])
                for line in fh:
                    parts = line.rstrip("\n").rstrip(" ").split(" ")
                    if len(parts) != dim + 1:
                        continue
                    tags.append(parts[0])
                    rows.append(np.asarray(parts[1:], dtype=np.float32))
                    if max_words and len(tags) >= max_words:
                        break
        except OSError as exc:
            raise WordSpaceError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if not rows:
            raise WordSpaceError(f"{path.name}: no word vectors found")
        info = WordSpaceInfo(name or fasttext_space_name(path), dim)
        return cls(info, tags, np.stack(rows))


class FastTextSpace(WordSpace):
    """A fastText ``.bin`` model: subwords give a vector to any word, even unseen ones.

    A phrase is the normalised mean of its words' unit vectors (what fastText's own
    sentence vectors do).
    """

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        path = Path(path)
        try:
            import fasttext  # the fasttext-numpy2 package
        except ImportError as exc:  # pragma: no cover - dependency is pinned
            raise WordSpaceError("fastText is not installed: pip install fasttext-numpy2") from exc
        if not path.is_file():
            raise WordSpaceError(f"{path}: no such fastText model")
        try:
            fasttext.FastText.eprint = lambda *a, **k: None  # silence its load warning
            self._model = fasttext.load_model(str(path))
        except (ValueError, RuntimeError, MemoryError) as exc:
            raise WordSpaceError(f"{path.name}: not a fastText .bin model ({exc})") from None
        super().__init__(WordSpaceInfo(name or fasttext_space_name(path), self._model.get_dimension()))

    def _embed_new(self, tags: list[str]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for tag in tags:
            words = tag.replace("_", " ").split()
            vecs = unit_rows(np.stack([self._model.get_word_vector(w) for w in words])) if words else None
            if vecs is None or not np.any(vecs):
                out.append(None)
            else:
                out.append(vecs[np.any(vecs, axis=1)].mean(0))
        return out


class WordLlamaSpace(WordSpace):
    """WordLlama's 256-d space, loaded from the weights inside the pip wheel (offline)."""

    def __init__(self) -> None:
        super().__init__(WORDLLAMA)
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError as exc:  # pragma: no cover - dependency is pinned
            raise WordSpaceError("wordllama is not installed: pip install wordllama") from exc
        package_dir = Path(wordllama.__file__).parent
        try:
            self._model = WordLlama.load(dim=256, cache_dir=package_dir, disable_download=True)
        except Exception as exc:  # noqa: BLE001 - third-party loader raises many types
            raise WordSpaceError(f"cannot load the WordLlama weights shipped in {package_dir}: {exc}") from None

    def _embed_new(self, tags: list[str]) -> list[np.ndarray | None]:
        vecs = np.asarray(self._model.embed(tags, norm=True), dtype=np.float32)
        nonzero = vecs.any(axis=1)
        return [v if ok and t else None for t, v, ok in zip(tags, vecs, nonzero)]


_KNOWN_FASTTEXT_STEMS = {"crawl-300d-2m-subword": AUTHORS_FASTTEXT.name}


def fasttext_space_name(path: str | Path) -> str:
    """Name a fastText space after its file, so two different files never pass as one."""
    stem = Path(path).name
    for suffix in (".bin", ".vec", ".gz"):
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    return _KNOWN_FASTTEXT_STEMS.get(stem.lower(), f"fasttext:{stem}")


_SHARED: dict[str, WordSpace] = {}
_SHARED_LOCK = threading.Lock()


def load_word_space(spec: str | Path, name: str | None = None) -> WordSpace:
    """Open a word space: ``"wordllama"``, a fastText ``.bin``, or a ``.vec`` table.

    Spaces are shared per process (one copy of a 1 GB fastText model, one cache).
    """
    key = f"{spec}|{name}"
    with _SHARED_LOCK:
        if key in _SHARED:
            return _SHARED[key]
    text = str(spec)
    if text == "wordllama":
        space: WordSpace = WordLlamaSpace()
    elif text.lower().endswith(".bin"):
        space = FastTextSpace(text, name=name)
    elif text.lower().endswith(".vec"):
        space = TableSpace.from_vec_file(text, name=name)
    else:
        raise WordSpaceError(f"unknown word space {text!r}: use 'wordllama', a fastText .bin or a .vec file")
    with _SHARED_LOCK:
        return _SHARED.setdefault(key, space)

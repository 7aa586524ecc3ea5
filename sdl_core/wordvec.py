"""Word spaces: any tag string -> a unit vector in the space a model was trained in.

Three sources: a fastText ``.bin`` (subword n-grams, so every typed word gets a
vector), a fixed table (a fastText ``.vec`` file, or the authors' vocabulary
vectors), and WordLlama (a 256-d static token-embedding space that ships inside
its pip wheel; the offline default). All share one cache and one normalisation.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from operator import attrgetter
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
    def _embed_new(self, tags: list[str]) -> list[np.ndarray | None] | np.ndarray:
        """Vectors (any norm) for normalised tags: a list with None where the space has no
        vector, or an N x D matrix with zero rows there."""

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

    def approximate(self, tags: Sequence[str]) -> np.ndarray:
        """Which tags get a stand-in vector, not the space's own (none; see sdl_core.bridge)."""
        return np.zeros(len(tags), dtype=bool)


def _unit_vectors(vectors: list[np.ndarray | None] | np.ndarray, dim: int) -> list[np.ndarray | None]:
    """Unit-length copies, normalised in one pass; None where a vector is missing, zero
    or not finite (the space has no usable vector for that tag).

    ``vectors`` is a list (None where missing) or an N x D matrix (zero rows missing).
    """
    if isinstance(vectors, np.ndarray):
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise WordSpaceError(f"word vectors have shape {vectors.shape}, expected (N, {dim})")
        present = list(range(vectors.shape[0]))
        matrix = np.array(vectors, dtype=np.float32)
    else:
        present = [i for i, v in enumerate(vectors) if v is not None]
        if not present:
            return [None] * len(vectors)
        rows = [np.asarray(vectors[i], dtype=np.float32).reshape(-1) for i in present]
        wrong = next((r.shape[0] for r in rows if r.shape[0] != dim), None)
        if wrong is not None:
            raise WordSpaceError(f"word vector has {wrong} dimensions, expected {dim}")
        matrix = np.stack(rows)
    out: list[np.ndarray | None] = [None] * len(vectors)
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


#: Most distinct words whose WordLlama token ids are remembered (~10 MB when full).
WORD_IDS_CACHE_SIZE = 50_000
#: Sentencepiece's word-start mark: the Llama tokenizer turns every space into it.
_WORD_MARK = "\u2581"
_TOKEN_ID = attrgetter("id")


class WordLlamaSpace(WordSpace):
    """WordLlama's 256-d space, loaded from the weights inside the pip wheel (offline).

    A tag's vector is the mean of its tokens' embedding rows, made unit length: what
    ``WordLlama.embed(norm=True)`` gives. We compute it ourselves because the library's
    path (a tokenizer call per 64 tags padded to the longest, a dense masked mean) costs
    more than the tokenizing. Tokenizing a tag word by word gives the same tokens (no
    Llama-2 token joins a letter to the next word's mark), so token ids are remembered
    per word and a new tag made of known words never reaches the tokenizer.
    """

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
        self._table = np.ascontiguousarray(self._model.embedding, dtype=np.float32)
        self._tokenizer = self._model.tokenizer  # shared, only read (a copy costs ~0.1 s at load)
        self._by_words = words_tokenize_alone(tokenizer_facts(self._tokenizer))
        specials = [t.content for t in self._tokenizer.get_added_tokens_decoder().values()]
        # Tags the word split could change: a typed mark, special-token text, a leading or double space.
        self._whole = re.compile("|".join([_WORD_MARK, "  ", "^ ", *map(re.escape, specials)]))
        self._word_ids: dict[str, tuple[int, ...]] = {}

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of texts as written, case kept, uncached (the bridge reads ``Moose`` too)."""
        return unit_rows(self._embed_new(list(texts)))

    def _embed_new(self, tags: list[str]) -> np.ndarray:
        ids, counts = self._token_ids(tags)
        return token_sums(self._table, ids, counts)

    def _plain(self, text: str) -> bool:
        """True when splitting at spaces cannot change the tokens: no typed word mark,
        no special-token text, no leading or double space."""
        return self._by_words and not self._whole.search(text)

    def _token_ids(self, tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(all token ids, tags in order; number of tokens of each tag)."""
        pieces: list[list[str]] = []
        new_words: dict[str, None] = {}
        new_wholes: dict[str, None] = {}
        known = self._word_ids
        ids_of: dict[str, tuple[int, ...]] = {}
        for tag in tags:
            plain = self._plain(tag)
            parts = [tag] if tag else []
            if plain and tag:
                parts = tag.split(" ")
            pieces.append(parts)
            for part in parts:
                if part not in ids_of:
                    ids = known.get(part)
                    if ids is not None:
                        ids_of[part] = ids
                    else:
                        (new_words if plain else new_wholes)[part] = None
        fresh = self._tokenize_words(list(new_words))
        fresh.update(self._tokenize_whole(list(new_wholes)))
        ids_of.update(fresh)
        if len(known) + len(fresh) > WORD_IDS_CACHE_SIZE:
            known.clear()
        if len(fresh) <= WORD_IDS_CACHE_SIZE:
            known.update(fresh)
        flat: list[int] = []
        counts: list[int] = []
        for parts in pieces:
            before = len(flat)
            for part in parts:
                flat.extend(ids_of[part])
            counts.append(len(flat) - before)
        return np.asarray(flat, dtype=np.intp), np.asarray(counts, dtype=np.intp)

    def _tokenize_words(self, words: list[str]) -> dict[str, tuple[int, ...]]:
        """Token ids of plain words: straight to the BPE model with the word mark (all the
        tokenizer's normalizer would do to them); the tokenizer's Encoding objects would
        cost twice the BPE itself."""
        bpe = self._tokenizer.model
        return {word: tuple(map(_TOKEN_ID, bpe.tokenize(_WORD_MARK + word))) for word in words}

    def _tokenize_whole(self, texts: list[str]) -> dict[str, tuple[int, ...]]:
        """Token ids of each text on its own through the whole tokenizer, in one
        pre-tokenized call (each text normalised and tokenized alone, as by ``encode_batch``)."""
        out: dict[str, list[int]] = {text: [] for text in texts}
        if texts:
            encoding = self._tokenizer.encode(texts, is_pretokenized=True, add_special_tokens=False)
            for token, owner in zip(encoding.ids, encoding.word_ids):
                if owner is not None:  # None: padding
                    out[texts[owner]].append(token)
        return {text: tuple(ids) for text, ids in out.items()}


def tokenizer_facts(tokenizer) -> dict:
    """The parts of a ``tokenizers.Tokenizer`` config that decide whether words tokenize
    alone (the shape of its JSON config, without serialising the whole vocabulary)."""
    try:
        normalizer = json.loads(tokenizer.normalizer.__getstate__()) if tokenizer.normalizer else None
        return {"normalizer": normalizer,
                "pre_tokenizer": None if tokenizer.pre_tokenizer is None else type(tokenizer.pre_tokenizer).__name__,
                "model": {"type": type(tokenizer.model).__name__, "dropout": getattr(tokenizer.model, "dropout", None),
                          "vocab": tokenizer.get_vocab()}}
    except (AttributeError, TypeError, ValueError):  # another tokenizers version: no word split, still exact
        return {}


def words_tokenize_alone(config: dict) -> bool:
    """Whether a tokenizer (its JSON config) gives a text the tokens of its space-separated
    words tokenized one by one: the Llama-2 set-up (spaces become the word mark, no
    pre-tokenizer) where no BPE token has the mark after another character."""
    normalizer = config.get("normalizer") or {}
    expected = [{"type": "Prepend", "prepend": _WORD_MARK},
                {"type": "Replace", "pattern": {"String": " "}, "content": _WORD_MARK}]
    model = config.get("model") or {}
    if config.get("pre_tokenizer") is not None or model.get("type") != "BPE" or model.get("dropout"):
        return False
    if normalizer.get("type") != "Sequence" or normalizer.get("normalizers") != expected:
        return False
    return not any(_WORD_MARK in token.lstrip(_WORD_MARK) for token in model.get("vocab") or {})


def token_sums(table: np.ndarray, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of ``table`` rows over consecutive runs of ``ids``: run i is ``counts[i]`` long.

    Rows with no tokens stay zero. The sum points where the mean does and the caller
    normalises, so there is no division by the count. Adds position by position (all
    first tokens, then all second ones...): a few numpy calls, in each run's token order.
    """
    sums = np.zeros((len(counts), table.shape[1]), dtype=np.float32)
    if ids.size == 0:
        return sums
    ids = np.clip(ids, 0, table.shape[0] - 1)
    order = np.argsort(-counts, kind="stable")  # longest runs first: the live ones are a prefix
    starts = (np.cumsum(counts) - counts)[order]
    lengths = counts[order]
    acc = np.zeros_like(sums)
    live = int(np.count_nonzero(lengths))
    for j in range(int(lengths[0])):
        while lengths[live - 1] <= j:
            live -= 1
        acc[:live] += table[ids[starts[:live] + j]]
    sums[order] = acc
    return sums


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
    """Open ``"wordllama"``, a fastText ``.bin`` or a ``.vec`` table; shared per process (one 1 GB copy, one cache)."""
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

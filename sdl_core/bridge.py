"""The bridge: typed words for a model whose word space is a fixed table.

The authors' checkpoint knows its 1006 tags' fastText vectors and nothing else; without
the 7 GB fastText model a typed word outside them had no vector. The bridge maps the
offline WordLlama space into the table's space, fitted on the table itself, so any
word gets a vector with nothing to download. Those vectors are stand-ins: results
flag them ``approximate``. A real word space (``--word-space``) is never bridged.

The map (chosen by measurement, ``tools/bridge_fidelity.py``; README table):

* source: two WordLlama views of a word, as typed (``moose``) and capitalised
  (``Moose``); the Llama tokens of the capitalised form carry what the lower-case
  ones miss (names, places);
* kernel ridge regression onto the table's centred vectors, with a kernel that adds,
  per view, a linear term (extrapolates like ridge) and a cosine RBF term (follows
  the neighbourhood of similar table words);
* output: the table's mean plus the prediction scaled to the table's typical centred
  norm, made unit length. Ridge shrinks predictions towards the mean; unscaled, every
  bridged word would point at the mean and score like every other.

Fitting is one Cholesky solve of an N x N system: ~0.1 s for 1006 tags, done on the first
word that needs it (a model whose users type no new words never pays for it).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import WordSpaceError
from .tags import inflections, normalize_tag
from .vocab import Vocabulary
from .wordvec import WordLlamaSpace, WordSpace, load_word_space, unit_rows

log = logging.getLogger(__name__)

#: Fewest table tags worth a bridge. The map reads 512 source numbers per word; below
#: a few hundred examples it learns noise (README: fidelity by table size), and a
#: typed word is better reported "not in vocabulary" than scored at random.
MIN_BRIDGE_TAGS = 200


@dataclass(frozen=True)
class BridgeConfig:
    """The map's settings; the defaults are the measured choice (see the module doc)."""

    ridge: float = 10.0  # lam of kernel ridge: larger shrinks harder
    linear: float = 1.0  # weight of the linear kernel term, per view
    rbf: float = 1.0  # weight of the cosine RBF term exp((cos - 1) / width), per view
    width: float = 0.5
    capitalised: bool = True  # read the capitalised word as a second view
    match_norm: bool = True  # scale predictions to the table's typical centred norm
    inflection: float = 1.0  # weight of the table's singular/plural of a word, added to its bridged vector

    def __post_init__(self) -> None:
        if not (self.ridge > 0 and self.width > 0 and self.linear >= 0 and self.rbf >= 0):
            raise WordSpaceError(f"bridge settings out of range (need ridge, width > 0; linear, rbf >= 0): {self}")


def capitalise(text: str) -> str:
    """``traffic light`` -> ``Traffic Light`` (only each word's first letter changes)."""
    return " ".join(word[:1].upper() + word[1:] for word in text.split(" "))


def source_views(source: WordLlamaSpace, words: Sequence[str], config: BridgeConfig) -> np.ndarray:
    """(N, views x dim) unit vectors of each view side by side; all-zero where the
    source has no tokens for a word."""
    views = [source.embed_texts(words)]
    if config.capitalised:
        views.append(source.embed_texts([capitalise(w) for w in words]))
    return np.concatenate(views, axis=1)


def bridge_kernel(a: np.ndarray, b: np.ndarray, dim: int, config: BridgeConfig) -> torch.Tensor:
    """(len(a), len(b)) float64: the sum over views of ``linear * cos + rbf * exp((cos - 1)
    / width)`` (rows are unit per view, so dot products are cosines). Both terms are
    positive semi-definite kernels, so the ridge system is positive definite."""
    a32, b32 = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    out = torch.zeros(a32.shape[0], b32.shape[0])
    for start in range(0, a32.shape[1], dim):
        cos = a32[:, start:start + dim] @ b32[:, start:start + dim].T
        out += config.linear * cos
        if config.rbf:
            out += config.rbf * torch.exp((cos - 1.0) / config.width)
    return out.double()


@dataclass
class WordBridge:
    """A fitted map from a source space into a table's space."""

    config: BridgeConfig
    source: WordLlamaSpace
    anchors: np.ndarray  # source views of the table's tags (N, views x dim)
    coef: np.ndarray  # kernel ridge weights (N, D)
    mean: np.ndarray  # the table's mean vector (D,)
    norm: float  # the table's mean centred norm (or 0: predictions unscaled)

    @classmethod
    def fit(cls, tags: Sequence[str], vectors: np.ndarray, source: WordLlamaSpace,
            config: BridgeConfig = BridgeConfig()) -> "WordBridge":
        """Fit on the table's own tags and unit vectors (the first N rows, in order)."""
        vectors = unit_rows(vectors).astype(np.float64)
        if len(tags) != len(vectors) or not len(tags):
            raise WordSpaceError(f"cannot fit a bridge on {len(tags)} tags and {len(vectors)} vectors")
        anchors = source_views(source, list(tags), config)
        mean = vectors.mean(axis=0)
        centred = vectors - mean
        gram = bridge_kernel(anchors, anchors, source.dim, config)
        gram.diagonal().add_(config.ridge)
        # torch's Cholesky: ~0.05 s for 1006 tags on 2 busy cores, where numpy's LU took 0.2-0.7 s
        coef = torch.cholesky_solve(torch.from_numpy(centred), torch.linalg.cholesky(gram)).numpy()
        norm = float(np.linalg.norm(centred, axis=1).mean()) if config.match_norm else 0.0
        return cls(config, source, anchors, coef, mean, norm)

    def predict(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(N x D unit vectors, N bools "found"): a word without source tokens gets a zero row."""
        views = source_views(self.source, list(words), self.config)
        found = np.linalg.norm(views, axis=1) > 0
        centred = bridge_kernel(views, self.anchors, self.source.dim, self.config).numpy() @ self.coef
        if self.norm:
            centred = self.norm * unit_rows(centred)
        out = unit_rows(self.mean + centred)
        out[~found] = 0.0
        return out, found


class BridgedSpace(WordSpace):
    """A table's own vector where it has one; otherwise the bridge's, flagged approximate.

    A phrase is the mean of its words' unit vectors (as in :class:`FastTextSpace`), each
    word the table's where the table has it and bridged otherwise.
    """

    def __init__(self, table: WordSpace, fit: Callable[[], WordBridge]) -> None:
        super().__init__(table.info)
        self.table = table
        self._fit = fit
        self._bridge: WordBridge | None = None
        self._fit_lock = threading.Lock()

    @property
    def bridge(self) -> WordBridge:
        """The fitted map (fitted on first use, once)."""
        with self._fit_lock:
            if self._bridge is None:
                start = time.perf_counter()
                self._bridge = self._fit()
                log.info("bridge from WordLlama into %s fitted on %d tags in %.2f s", self.info.name,
                         len(self._bridge.anchors), time.perf_counter() - start)
            return self._bridge

    def approximate(self, tags: Sequence[str]) -> np.ndarray:
        """True for the tags whose vectors come (in whole or part) through the bridge."""
        _, exact = self.table.embed(tags)
        _, found = self.embed(tags)
        return found & ~exact

    def _embed_new(self, tags: list[str]) -> list[np.ndarray | None]:
        vectors, exact = self.table.embed(tags)
        out: list[np.ndarray | None] = [v if e else None for v, e in zip(vectors, exact)]
        phrases = {i: tags[i].replace("_", " ").split() for i in np.flatnonzero(~exact)}
        by_word = self._word_vectors(list(dict.fromkeys(w for parts in phrases.values() for w in parts)))
        for i, parts in phrases.items():
            rows = [by_word[w] for w in parts if w in by_word]
            if parts and len(rows) == len(parts):
                out[i] = unit_rows(np.stack(rows)).mean(axis=0)
        return out

    def _word_vectors(self, words: list[str]) -> dict[str, np.ndarray]:
        """Each word's vector: the table's, else the bridge's (plus the table's singular
        or plural of the word, where it has one: fastText puts cat and cats at cos ~0.75,
        nearer than the bridge gets)."""
        vectors, in_table = self.table.embed(words) if words else (np.zeros((0, self.dim)), np.zeros(0, bool))
        out = {w: v for w, v, t in zip(words, vectors, in_table) if t}
        todo = [w for w, t in zip(words, in_table) if not t]
        if not todo:
            return out
        bridged, found = self.bridge.predict(todo)
        forms = self._table_forms(todo) if self.bridge.config.inflection else {}
        for word, vector, ok in zip(todo, bridged, found):
            if ok:
                out[word] = vector + self.bridge.config.inflection * forms[word] if word in forms else vector
        return out

    def _table_forms(self, words: list[str]) -> dict[str, np.ndarray]:
        """word -> the table's vector of its first singular/plural form the table has."""
        candidates = {w: inflections(w) for w in words}
        flat = list(dict.fromkeys(f for forms in candidates.values() for f in forms))
        if not flat:
            return {}
        vectors, found = self.table.embed(flat)
        known = {f: v for f, v, ok in zip(flat, vectors, found) if ok}
        out = {}
        for word, forms in candidates.items():
            hit = next((f for f in forms if f in known), None)
            if hit is not None:
                out[word] = known[hit]
        return out


def bridge_table_space(vocab: Vocabulary, table_space: WordSpace, source: WordLlamaSpace | None = None,
                       config: BridgeConfig = BridgeConfig()) -> WordSpace:
    """The word space for a model whose space is a fixed table, when no real space was
    given: ``table_space`` bridged from WordLlama (``source``; default: the shipped one),
    fitted on ``vocab``'s own tags and vectors. A vocabulary under MIN_BRIDGE_TAGS tags
    gets ``table_space`` back unchanged (typed words outside it stay "not in vocabulary").
    """
    if table_space.dim != vocab.dim:
        raise WordSpaceError(f"the table space is {table_space.dim}-d but the vocabulary is {vocab.dim}-d")
    if len(vocab) < MIN_BRIDGE_TAGS:
        log.info("no bridge into %s: %d tags are too few to fit one (need %d)", table_space.info.name,
                 len(vocab), MIN_BRIDGE_TAGS)
        return table_space
    tags, vectors = list(vocab.tags), vocab.vectors.copy()

    def fit() -> WordBridge:
        space = source if source is not None else load_word_space("wordllama")
        if not isinstance(space, WordLlamaSpace):
            raise WordSpaceError(f"the bridge reads from WordLlama, not {space.info.name}")
        return WordBridge.fit([normalize_tag(t) for t in tags], vectors, space, config)

    return BridgedSpace(table_space, fit)

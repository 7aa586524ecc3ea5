"""Ranking indexed photos by typed tags: embed the tags, score, combine, take the top rows.

A photo's score for a tag is the model's own tag score, ``reduce_k <A_k, w_tag>``
(``reduce`` = the model's reduction, ``max`` for SDL; :func:`sdl_core.scoring.score_tags`).
Several tags combine as ``all`` = the *minimum* over tags (a photo ranks high only if
every tag fits) or ``any`` = the *maximum* (one fitting tag is enough). An index with an
approximate part (:mod:`.ann`) scores only the candidates it names, with the same rule.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..errors import TagInputError
from ..scoring import LowPrecision, approximate_products, best_scores, exact_top, score_tags, top_k_indices
from ..tags import clean_tags
from ..vocab import Vocabulary
from ..evidence import packaged_space
from ..wordvec import TableSpace, WordSpace, load_word_space
from .index import SearchIndex

MODES = ("any", "all")
#: Photos scored per block: bounds the temporary memory of one query. float16 vectors (an index
#: with an approximate part) go in blocks small enough that their float32 copy stays in cache.
SEARCH_CHUNK = 32_768
FLOAT16_CHUNK = 1024
#: Indexes with at least this many vector entries (N x K x D) are first scanned in bfloat16
#: (a copy kept beside the index: half its size again), then the candidates exactly.
LOW_PRECISION_FROM = 16_000_000


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
    """``searched``: photos in the index; ``scored``: photos scored exactly (all of them,
    or the approximate index's candidates when ``approximate``)."""

    hits: list[SearchHit]
    tags: list[str]
    not_in_vocabulary: list[str]
    mode: str
    searched: int
    approximate: bool = False
    scored: int = 0

    def to_dict(self) -> dict:
        return {"tags": self.tags, "mode": self.mode, "not_in_vocabulary": self.not_in_vocabulary,
                "searched": self.searched, "approximate": self.approximate, "scored": self.scored,
                "results": [h.to_dict() for h in self.hits]}


def query_space(index: SearchIndex, word_space: str | Path | WordSpace | None = None) -> WordSpace:
    """The word space typed tags are embedded in: the one given (checked against the
    index's model), else WordLlama for WordLlama models, else the fastText file the index
    was built with if it is still there, else the model's vocabulary as a table."""
    info = index.identity.word_space
    if word_space is None:
        packaged = packaged_space(info)
        if packaged is not None:
            return packaged
        if index.word_space_source and Path(index.word_space_source).is_file():
            word_space = index.word_space_source
        else:
            return TableSpace(info, index.vocabulary.tags, index.vocabulary.vectors)
    space = load_word_space(word_space) if isinstance(word_space, (str, Path)) else word_space
    from ..vocab import check_word_space  # only when the user brings a space
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
    """(N, T) score of every photo for every tag: reduce_k <A_k, w_t>, in float32 blocks."""
    out = torch.empty(vectors.shape[0], tag_vectors.shape[0])
    chunk = SEARCH_CHUNK if vectors.dtype == torch.float32 else FLOAT16_CHUNK
    for start in range(0, vectors.shape[0], chunk):
        out[start:start + chunk] = best_scores(vectors[start:start + chunk].float(), tag_vectors, reduction)
    return out


#: id of an index's vectors -> (their version, the bfloat16 copy or None before the 2nd query);
#: an entry goes with its vectors.
_low_copies: dict[int, tuple[int, LowPrecision | None]] = {}


def low_precision_of(vectors: torch.Tensor) -> LowPrecision | None:
    """The bfloat16 copy of a large index's (N, K, D) vectors, made at its second query (making
    it reads the vectors once more, so a one-query command never pays for it) and again if they
    change in place; None before that, for small indexes, or where bfloat16 does not pay."""
    if vectors.numel() < LOW_PRECISION_FROM:
        return None
    key = id(vectors)
    kept = _low_copies.get(key)
    if kept is None:
        weakref.finalize(vectors, _low_copies.pop, key, None)
        _low_copies[key] = (vectors._version, None)
        return None
    if kept[1] is None or kept[0] != vectors._version:
        kept = (vectors._version, LowPrecision.of(vectors.reshape(-1, vectors.shape[-1])))
        _low_copies[key] = kept
    return kept[1]


def best_rows(vectors: torch.Tensor, w: torch.Tensor, reduction: str, mode: str, n: int) -> torch.Tensor:
    """Rows of the n photos with the best combined score (top_rows of the float32 scores):
    large indexes pass over a bfloat16 copy, then score the candidates exactly."""
    low = low_precision_of(vectors)
    if low is None or reduction != "max":
        return top_rows(combine(tag_scores(vectors, w, reduction), mode)[0], n)
    count, k, _ = vectors.shape
    products, bound = approximate_products(w, low)  # (T, N * K)
    approx, _ = combine(products.view(-1, count, k).amax(dim=2).t(), mode)
    exact = (lambda rows: combine(best_scores(vectors[rows].float(), w, reduction), mode)[0])
    return exact_top(approx, bound, min(max(1, n), count), exact)[0]


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
    scored = len(index)
    approximate = index.ann is not None and index.ann.pays()
    if approximate:
        candidates = torch.from_numpy(np.sort(index.rows_of(index.ann.candidates(w.numpy(), top_n, mode))))
        scored = len(candidates)
        per_tag = tag_scores(index.vectors[candidates], w, index.reduction)
        rows = candidates[top_rows(combine(per_tag, mode)[0], top_n)] if scored else candidates
    elif index.reduction == "mean":  # exact shortcut: the mean over k is linear
        per_tag = index.mean_vectors() @ w.t()
        rows = top_rows(combine(per_tag, mode)[0], top_n)
    else:
        rows = best_rows(index.vectors, w, index.reduction, mode, top_n)
    hits = _hits(index, rows, w, found, mode)
    hits.sort(key=lambda h: (-h.score, h.path))
    return SearchResult(hits, found, missing, mode, len(index), approximate, scored)


def top_rows(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Rows of the n best scores, best first; ties go to the lower rows (paths are sorted, so
    the result never depends on topk's tie order): the ranking's own rule, :func:`top_k_indices`."""
    return top_k_indices(scores, min(max(1, n), scores.shape[0]))


def _hits(index: SearchIndex, rows: torch.Tensor, w: torch.Tensor, tags: list[str], mode: str) -> list[SearchHit]:
    scores, winners = score_tags(index.vectors[rows].float(), w, index.reduction)  # (n, T) each
    combined, decider = combine(scores, mode)
    out = []
    for j, row in enumerate(rows.tolist()):
        entry = index.entries[row]
        t = int(decider[j])
        out.append(SearchHit(entry.path, index.full_path(entry), float(combined[j]), tags[t], int(winners[j, t]),
                             {tag: float(scores[j, i]) for i, tag in enumerate(tags)}))
    return out



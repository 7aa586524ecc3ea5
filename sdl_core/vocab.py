"""Vocabularies: tags, their unit word vectors, and which ones the model saw in training."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import VocabularyError, WordSpaceError
from .files import read_bytes
from .safe_pickle import safe_load_pickle
from .tags import inflections, normalize_tag
from .wordvec import TableSpace, WordSpace, unit_rows

log = logging.getLogger(__name__)


@dataclass
class Vocabulary:
    """``tags[i]`` has unit vector ``vectors[i]``; ``seen[i]`` marks training tags.

    ``trained_names``: words the model was trained on beyond the listed tags (the default
    model's ImageNet class names, which its photo vocabulary leaves out): a typed tag among
    them, or whose singular or plural is, is seen too.

    ``evidence_classes``: for seen tags of a classifier-based model, the classifier's classes
    whose probability is evidence for the tag (the Tagger shows a seen tag only with some).
    """

    tags: list[str]
    vectors: np.ndarray
    seen: np.ndarray
    trained_names: frozenset[str] = frozenset()
    evidence_classes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tags = [normalize_tag(t) for t in self.tags]
        self.trained_names = frozenset(normalize_tag(t) for t in self.trained_names)
        self.evidence_classes = {normalize_tag(t): tuple(int(c) for c in classes)
                                 for t, classes in self.evidence_classes.items()}
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.seen = np.asarray(self.seen, dtype=bool).reshape(-1)
        n = len(self.tags)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n or self.seen.shape[0] != n:
            raise VocabularyError(f"vocabulary parts disagree: {n} tags, vectors {self.vectors.shape}, "
                                  f"{self.seen.shape[0]} seen flags")
        if len(set(self.tags)) != n:
            dupes = sorted({t for t in self.tags if self.tags.count(t) > 1})[:5]
            raise VocabularyError(f"vocabulary has duplicate tags: {dupes}")
        self._index = {t: i for i, t in enumerate(self.tags)}

    def __len__(self) -> int:
        return len(self.tags)

    def __contains__(self, tag: str) -> bool:
        return normalize_tag(tag) in self._index

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index(self, tag: str) -> int | None:
        return self._index.get(normalize_tag(tag))

    def is_seen(self, tag: str) -> bool:
        """Whether the model was trained on ``tag``: a seen tag of the list, or one of the
        trained names (the last word of a phrase also in its singular or plural)."""
        tag = normalize_tag(tag)
        row = self._index.get(tag)
        if row is not None:
            return bool(self.seen[row])
        head, _, last = tag.rpartition(" ")
        prefix = f"{head} " if head else ""
        return any(form in self.trained_names for form in [tag, *(prefix + f for f in inflections(last))])

    @property
    def seen_tags(self) -> list[str]:
        return [t for t, s in zip(self.tags, self.seen) if s]

    @property
    def unseen_tags(self) -> list[str]:
        return [t for t, s in zip(self.tags, self.seen) if not s]

    def select(self, tags: Iterable[str]) -> "Vocabulary":
        """The sub-vocabulary of ``tags`` (all must be present)."""
        idx = [self._index[normalize_tag(t)] for t in tags]
        kept = [self.tags[i] for i in idx]
        evidence = {t: self.evidence_classes[t] for t in kept if t in self.evidence_classes}
        return Vocabulary(kept, self.vectors[idx], self.seen[idx], self.trained_names, evidence)

    @classmethod
    def from_tags(cls, tags: Sequence[str], space: WordSpace, seen: Iterable[str] | bool = False) -> "Vocabulary":
        """Embed ``tags`` in ``space``; a tag the space cannot embed is an error here."""
        tags = list(dict.fromkeys(normalize_tag(t) for t in tags if normalize_tag(t)))
        vectors, found = space.embed(tags)
        if not found.all():
            missing = [t for t, f in zip(tags, found) if not f]
            raise VocabularyError(f"{len(missing)} tags have no vector in {space.info.name}: {missing[:10]}")
        if isinstance(seen, bool):
            flags = np.full(len(tags), seen)
        else:
            seen_set = {normalize_tag(t) for t in seen}
            flags = np.array([t in seen_set for t in tags], dtype=bool)
        return cls(tags, vectors, flags)

    @classmethod
    def from_text_file(cls, path: str | Path, space: WordSpace, unseen_path: str | Path | None = None,
                       seen: Iterable[str] | bool = False) -> "Vocabulary":
        """One tag per line (``#`` starts a comment). Tags listed in ``unseen_path`` are
        unseen and all others seen; without it, ``seen`` decides (a set of tags or a flag)."""
        tags = read_tag_file(path)
        if unseen_path is not None:
            unseen = set(read_tag_file(unseen_path))
            unknown = sorted(unseen - set(tags))
            tags += unknown
            seen = [t for t in tags if t not in unseen]
        return cls.from_tags(tags, space, seen)

    @classmethod
    def from_authors_folder(cls, folder: str | Path) -> "Vocabulary":
        """The authors' NUS-WIDE data folder: classes, unseen classes, word vectors."""
        folder = Path(folder)
        needed = ["classes.pickle", "unseen_classes.pickle", "wordvec_array.pickle"]
        missing = [n for n in needed if not (folder / n).is_file()]
        if missing:
            raise VocabularyError(f"{folder}: missing the authors' data files {missing}")
        classes = safe_load_pickle(folder / "classes.pickle")
        unseen = safe_load_pickle(folder / "unseen_classes.pickle")
        wordvecs = safe_load_pickle(folder / "wordvec_array.pickle")
        if not isinstance(classes, dict) or not isinstance(unseen, (list, tuple, set)):
            raise VocabularyError(f"{folder}: classes.pickle must be a dict and unseen_classes.pickle a list")
        n = len(classes)
        vectors = authors_word_vectors(wordvecs, n, str(folder))
        tags = [str(classes[i]) for i in range(n)]
        unseen_set = {normalize_tag(t) for t in unseen}
        seen = np.array([normalize_tag(t) not in unseen_set for t in tags])
        return cls(tags, vectors, seen)


def authors_word_vectors(table: object, count: int, what: str) -> np.ndarray:
    """Unit rows (count, D) of the authors' word-vector table, as their ``wordvec_array.pickle``
    holds it: ``{"wordvec_array": array}`` (or the bare array), stored D x N (COCO: 1 x D x N)."""
    if isinstance(table, dict) and "wordvec_array" in table:
        table = table["wordvec_array"]
    array = np.asarray(table, dtype=np.float32).squeeze()
    if array.ndim != 2 or count not in array.shape:
        raise VocabularyError(f"{what}: word vectors of shape {array.shape} do not fit {count} classes")
    if array.shape[0] != count:  # stored as D x N
        array = array.T
    return unit_rows(array)


def read_tag_file(path: str | Path) -> list[str]:
    """Tags from a text file: one per line, ``#`` comments, blank lines ignored."""
    path = Path(path)
    raw = read_bytes(path, VocabularyError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise VocabularyError(f"{path.name}: not UTF-8 text (byte {raw[exc.start]:#04x} on line {line}); "
                              "save the file as UTF-8") from None
    tags = [normalize_tag(line.split("#", 1)[0]) for line in text.splitlines()]
    tags = list(dict.fromkeys(t for t in tags if t))
    if not tags:
        raise VocabularyError(f"{path.name}: no tags found (one tag per line)")
    return tags


#: A user's own word space must reproduce the model's vocabulary vectors this well
#: (mean cosine) to count as the space the model was trained in.
MIN_SPACE_AGREEMENT = 0.9


def check_word_space(space: WordSpace, expected_name: str, expected_dim: int, vocabulary: Vocabulary) -> float:
    """Refuse a word space that is not the model's. Returns the agreement measured.

    Dimension must match. When the vocabulary has vectors, the space must reproduce
    them (mean cosine >= MIN_SPACE_AGREEMENT): two fastText models of the same size
    are unrelated spaces, and only this check tells them apart. Without vocabulary
    vectors, the space names must match.
    """
    if space.dim != expected_dim:
        raise WordSpaceError(f"word space {space.info.name} is {space.dim}-d, but the model was trained in "
                             f"{expected_name} ({expected_dim}-d)")
    if isinstance(space, TableSpace) or len(vocabulary) == 0:
        if space.info.name != expected_name:
            raise WordSpaceError(f"word space {space.info.name!r} is not the model's ({expected_name!r})")
        return 1.0
    sample = vocabulary.tags[:: max(1, len(vocabulary) // 200)]
    vectors, found = space.embed(sample)
    idx = [vocabulary.index(t) for t in sample]
    cosines = (vectors * vocabulary.vectors[idx]).sum(1)[found]
    agreement = float(cosines.mean()) if cosines.size else 0.0
    if agreement < MIN_SPACE_AGREEMENT:
        raise WordSpaceError(f"word space {space.info.name!r} does not match the model's {expected_name!r}: "
                             f"it reproduces the model's own tag vectors with mean cosine {agreement:.2f} "
                             f"(need {MIN_SPACE_AGREEMENT}). Use the fastText model the checkpoint was trained with.")
    if space.info.name != expected_name:
        log.info("word space %s agrees with %s (mean cosine %.3f)", space.info.name, expected_name, agreement)
    return agreement

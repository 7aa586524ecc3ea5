"""Tag vectors: a unit word vector per tag, and the word space they live in.

They come from a word space (``wordllama``, fastText ``.bin``/``.vec``), the authors'
NUS-WIDE folder (which brings its own split), or a pickled table whose columns follow
the category list (the authors' COCO ``wordvec_array.pickle``); pickles go through the
restricted loader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sdl_core.config import WordSpaceInfo
from sdl_core.errors import SDLError, VocabularyError
from sdl_core.safe_pickle import safe_load_pickle
from sdl_core.vocab import Vocabulary, authors_word_vectors
from sdl_core.wordvec import AUTHORS_FASTTEXT, load_word_space

from .errors import DataError
from .splits import Split


@dataclass
class TagVectors:
    """Unit vectors for tags, the space they live in, and (authors' folder) its own split."""

    vectors: dict[str, np.ndarray]
    info: WordSpaceInfo
    split: Split | None = None
    missing: list[str] = field(default_factory=list)


def tag_vectors(source: str | Path, tags: Sequence[str], space_name: str | None = None,
                extra: Sequence[str] = ()) -> TagVectors:
    """Vectors for ``tags`` (+ ``extra`` tags no image has) from a word space, the authors'
    folder, or a pickled table whose columns follow ``tags`` (the category list, in order)."""
    text = str(source)
    path = Path(text)
    tags_in = list(tags)
    tags = list(dict.fromkeys(tags_in + [t for t in extra if t not in set(tags_in)]))
    if text == "wordllama" or path.suffix.lower() in (".bin", ".vec"):
        space = load_word_space(text, name=space_name)
        vectors, found = space.embed(list(tags))
        return TagVectors({t: v for t, v, f in zip(tags, vectors, found) if f}, space.info,
                          missing=[t for t, f in zip(tags, found) if not f])
    if path.is_dir():
        try:
            vocab = Vocabulary.from_authors_folder(path)
        except SDLError as exc:
            raise DataError(str(exc)) from None
        info = WordSpaceInfo(space_name, vocab.dim) if space_name else AUTHORS_FASTTEXT
        if info.dim != vocab.dim:
            raise DataError(f"{path}: vectors are {vocab.dim}-d, not {info.dim}-d")
        vectors = {t: vocab.vectors[i] for i, t in enumerate(vocab.tags)}
        return TagVectors(vectors, info, Split(tuple(vocab.seen_tags), tuple(vocab.unseen_tags)),
                          missing=[t for t in tags if t not in vectors])
    if path.is_file() and path.suffix.lower() in (".pickle", ".pkl"):
        return _table_vectors(path, tags_in, space_name)  # columns follow the categories; extras have none
    raise DataError(f"tag vectors {text!r}: use 'wordllama', a fastText .bin/.vec, the authors' data folder, "
                    "or a .pickle table of word vectors")


def _table_vectors(path: Path, tags: Sequence[str], space_name: str | None) -> TagVectors:
    """A pickled table whose columns follow ``tags`` (the authors' COCO ``wordvec_array.pickle``)."""
    try:
        table = safe_load_pickle(path)
    except SDLError as exc:
        raise DataError(str(exc)) from None
    try:
        array = authors_word_vectors(table, len(tags), path.name)
    except VocabularyError as exc:
        raise DataError(f"{exc}: the table does not fit the dataset's categories "
                        "(its columns must follow the category order)") from None
    return TagVectors({t: array[j] for j, t in enumerate(tags)}, _table_space(path, array.shape[1], space_name))


def _table_space(path: Path, dim: int, space_name: str | None) -> WordSpaceInfo:
    """The space a table's vectors live in: as named, else the authors' fastText when 300-d."""
    if space_name:
        return WordSpaceInfo(space_name, dim)
    if dim == AUTHORS_FASTTEXT.dim:
        return AUTHORS_FASTTEXT
    return WordSpaceInfo(f"table:{path.stem}", dim)

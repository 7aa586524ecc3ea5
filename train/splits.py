"""Zero-shot splits: which tags train the model (seen) and which are held out (unseen).

A split is a ``split.json`` ``{"seen": [...], "unseen": [...]}``, the authors'
``cls_ids.pickle`` ``{"train": {...}, "test": {...}}`` (indices into the category
list; a JSON file with the same keys works too), a text file of unseen tags, an inline
comma-separated list, or, for a ``zs_split`` folder, the categories annotated in the
training file. Pickles go through the restricted loader.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sdl_core.errors import SDLError
from sdl_core.safe_pickle import safe_load_pickle
from sdl_core.tags import normalize_tag, parse_tags
from sdl_core.vocab import read_tag_file

from .annotations import TaggedImages, read_json
from .errors import DataError


@dataclass(frozen=True)
class Split:
    """Which tags train the model (seen) and which are held out (unseen)."""

    seen: tuple[str, ...]
    unseen: tuple[str, ...]


def _names_or_indices(values: object, tags: Sequence[str], what: str) -> list[str]:
    """Tag names from names, or from indices into ``tags`` (the authors' cls_ids)."""
    items = sorted(values) if isinstance(values, (set, frozenset)) else list(values)  # type: ignore[arg-type]
    if all(isinstance(v, (int, np.integer)) for v in items):
        bad = [int(v) for v in items if not 0 <= int(v) < len(tags)]
        if bad:
            raise DataError(f"{what}: indices {bad[:5]} are outside the {len(tags)} categories")
        return [tags[int(v)] for v in items]
    return [normalize_tag(str(v)) for v in items]


def split_from_object(obj: object, tags: Sequence[str], what: str) -> Split:
    """``{"seen", "unseen"}`` names, or ``{"train", "test"}`` (cls_ids-style) indices or names."""
    if isinstance(obj, dict):
        if "seen" in obj and "unseen" in obj:
            seen, unseen = obj["seen"], obj["unseen"]
        elif "train" in obj and "test" in obj:
            seen, unseen = obj["train"], obj["test"]
        else:
            raise DataError(f"{what}: a split needs the keys seen/unseen (or train/test), got {sorted(obj)[:5]}")
        split = Split(tuple(_names_or_indices(seen, tags, what)), tuple(_names_or_indices(unseen, tags, what)))
    else:
        raise DataError(f"{what}: a split must be a mapping with seen/unseen (or train/test)")
    both = set(split.seen) & set(split.unseen)
    if both:
        raise DataError(f"{what}: tags both seen and unseen: {sorted(both)[:5]}")
    if not split.seen:
        raise DataError(f"{what}: no seen tags: nothing to train on")
    return split


def read_split(spec: str | Path, tags: Sequence[str]) -> Split:
    """A split file (.json, the authors' .pickle, or a text list of unseen tags) or an
    inline comma-separated list of unseen tags."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".json":
        return split_from_object(read_json(path), tags, path.name)
    if path.is_file() and path.suffix.lower() in (".pickle", ".pkl"):
        try:
            obj = safe_load_pickle(path)
        except SDLError as exc:
            raise DataError(str(exc)) from None
        return split_from_object(obj, tags, path.name)
    unseen = read_tag_file(path) if path.is_file() else parse_tags(str(spec))
    if not unseen:
        raise DataError(f"{spec!r}: no unseen tags given")
    unseen_set = set(unseen)
    return Split(tuple(t for t in tags if t not in unseen_set), tuple(unseen))


def split_by_annotation(train: TaggedImages, val: TaggedImages | None) -> Split:
    """The zs_split convention: seen = annotated in training, unseen = only in validation."""
    seen = [t for j, t in enumerate(train.tags) if train.targets[:, j].any()]
    unseen: list[str] = []
    if val is not None:
        seen_set = set(seen)
        unseen = [t for j, t in enumerate(val.tags) if val.targets[:, j].any() and t not in seen_set]
    return Split(tuple(seen), tuple(unseen))

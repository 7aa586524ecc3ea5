"""NUS-WIDE into ``train fit``: the same :class:`PreparedData` as COCO and tags.csv give.

``--data nus-wide:ROOT`` trains on the training list (images with at least one seen
tag); validation is ``--val-data nus-wide:ROOT`` (the test list, as the authors
selected their checkpoint) or a held-out share of the training images. Missing,
unlabelled and (later) unreadable images are counted in ``config.json``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from sdl_core.errors import SDLError
from sdl_core.safe_pickle import safe_load_pickle
from sdl_core.vocab import Vocabulary

from .prepared import DataSpec, PreparedData, hold_out
from .errors import DataError
from .nus_wide import PaperSplit, compare_with_authors, is_nus_wide, parse_spec, read_nus_wide
from .vectors import tag_vectors

log = logging.getLogger(__name__)

AUTHORS_FILES = ("classes.pickle", "unseen_classes.pickle")


@dataclass
class NusWidePrepared(PreparedData):
    """PreparedData plus the image counts and any difference from the authors' split."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    split_warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {**super().summary(), "nus_wide": self.counts, "split_warnings": self.split_warnings}


def authors_differences(split: PaperSplit, folder: str | Path) -> list[str]:
    """Compare with the authors' classes.pickle / unseen_classes.pickle in ``folder`` (if
    they are there); each difference is logged as a warning and returned."""
    folder = Path(folder)
    if not all((folder / name).is_file() for name in AUTHORS_FILES):
        return []
    try:
        classes = safe_load_pickle(folder / AUTHORS_FILES[0])
        unseen = safe_load_pickle(folder / AUTHORS_FILES[1])
    except SDLError as exc:
        raise DataError(str(exc)) from None
    if not isinstance(classes, dict) or not isinstance(unseen, (list, tuple, set)):
        raise DataError(f"{folder}: classes.pickle must be a dict and unseen_classes.pickle a list")
    problems = compare_with_authors(split, [str(classes[i]) for i in sorted(classes)], [str(t) for t in unseen])
    for problem in problems:
        log.warning("NUS-WIDE split vs the authors' files: %s", problem)
    return problems


def split_vocabulary(split: PaperSplit, vectors: Mapping[str, np.ndarray], space: str) -> Vocabulary:
    """The paper's tags (in order) that have a vector; a tag without one is dropped loudly."""
    missing = [t for t in split.tags if t not in vectors]
    if missing:
        log.warning("dropping %d NUS-WIDE tags without a word vector in %s: %s", len(missing), space, missing[:10])
    keep = [i for i, t in enumerate(split.tags) if t in vectors]
    if not any(split.seen[i] for i in keep):
        raise DataError(f"no seen NUS-WIDE tag has a vector in {space}: nothing to train on")
    tags = [split.tags[i] for i in keep]
    return Vocabulary(tags, np.stack([vectors[t] for t in tags]), split.seen[keep])


def prepare_nus_wide(spec: DataSpec) -> NusWidePrepared:
    """Training (and validation) images of NUS-WIDE over the paper's 925 + 81 tags."""
    if spec.split:
        raise DataError("--split/--unseen do not apply to NUS-WIDE: the split is the paper's "
                        "(the 1000 tags minus concept names are seen, the 81 concepts unseen)")
    source = parse_spec(spec.data, "train")
    train = read_nus_wide(source.root, source.split, spec.images_root)
    vectors = tag_vectors(spec.vectors, list(train.split.tags), spec.space_name)
    warnings = authors_differences(train.split, spec.vectors)
    vocab = split_vocabulary(train.split, vectors.vectors, vectors.info.name)
    train_set = train.usable("seen").with_tags(vocab.tags)
    counts = {source.split: train.counts}
    val = None
    if spec.val_data:
        if not is_nus_wide(spec.val_data):
            raise DataError("with --data nus-wide:..., --val-data must be nus-wide:ROOT (the test list) too")
        val_source = parse_spec(spec.val_data, "test")
        val_data = read_nus_wide(val_source.root, val_source.split, spec.images_root)
        val = val_data.usable("any").with_tags(vocab.tags)
        counts[f"val_{val_source.split}"] = val_data.counts
    elif spec.val_fraction > 0 and len(train_set) > 1:
        train_set, val = hold_out(train_set, spec.val_fraction, spec.seed)
    if len(train_set) == 0:
        raise DataError(f"{spec.data}: no training image is present with a seen tag "
                        f"({train.counts['missing']} of {train.counts['listed']} listed images are missing)")
    log.info("NUS-WIDE: %s", counts)
    return NusWidePrepared(train_set, val if val is not None and len(val) else None, vocab, vectors.info,
                           counts, warnings)

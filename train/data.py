"""Preparing a run's data: annotations, the seen/unseen split, tag vectors, validation images.

The pieces live by job: :mod:`train.annotations` (``tags.csv`` folders, COCO JSON,
``zs_split`` folders), :mod:`train.splits` (seen/unseen tags), :mod:`train.vectors`
(word vectors per tag) and :mod:`train.datasets` (images to tensors); this module puts
them together for ``fit``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from sdl_core.vocab import Vocabulary

from .annotations import TaggedImages, is_zs_train_file, read_annotations, zs_split_files
from .errors import DataError
from .prepared import DataSpec, PreparedData, hold_out
from .splits import Split, read_split, split_by_annotation
from .vectors import TagVectors, tag_vectors

log = logging.getLogger(__name__)


def prepare_data(spec: DataSpec) -> PreparedData:
    """Read annotations, decide the split, attach vectors, and hold out validation images."""
    if spec.data.lower().startswith("nus-wide:"):  # NUS-WIDE as distributed, with the paper's split
        from .nus_wide_prepare import prepare_nus_wide
        return prepare_nus_wide(spec)
    data_path = Path(spec.data)
    if not data_path.exists():
        raise DataError(f"{data_path}: no such file or folder")
    val_path: Path | None = Path(spec.val_data) if spec.val_data else None
    if data_path.is_dir() and zs_split_files(data_path) is not None:
        zs_train, zs_val = zs_split_files(data_path)  # type: ignore[misc]
        data_path, val_path = zs_train, val_path or zs_val
    train = read_annotations(data_path, spec.images_root)
    val = read_annotations(val_path, spec.images_root) if val_path is not None else None
    all_tags = list(dict.fromkeys(train.tags + (val.tags if val is not None else [])))
    split = read_split(spec.split, all_tags) if spec.split else None
    named = split.seen + split.unseen if split else ()
    extra = [t for t in named if t not in set(all_tags)]
    vectors = tag_vectors(spec.vectors, all_tags, spec.space_name, extra)
    if split is None:
        split = _default_split(data_path, train, val, vectors, all_tags)
    vocab = _split_vocabulary(split, all_tags, vectors)
    train = train.with_tags(vocab.tags).existing()
    if val is not None:
        val = val.with_tags(vocab.tags).existing()
    elif spec.val_fraction > 0:
        train, val = hold_out(train, spec.val_fraction, spec.seed)
    if len(train) == 0:
        raise DataError(f"{spec.data}: no training images found")
    if not train.targets[:, vocab.seen].any():
        raise DataError(f"{spec.data}: no training image has a seen tag: nothing to learn from")
    return PreparedData(train, val if val is not None and len(val) else None, vocab, vectors.info)


def _default_split(data_path: Path, train: TaggedImages, val: TaggedImages | None, vectors: TagVectors,
                   all_tags: Sequence[str]) -> Split:
    """No --split: the authors' folder's own split, the zs_split convention, or all seen."""
    if vectors.split is not None:
        return vectors.split
    if data_path.suffix.lower() == ".json" and val is not None and is_zs_train_file(data_path):
        return split_by_annotation(train, val)
    log.warning("no unseen tags given (--unseen/--split): every tag is seen; ZSL metrics will be empty")
    return Split(tuple(all_tags), ())


def _split_vocabulary(split: Split, all_tags: Sequence[str], vectors: TagVectors) -> Vocabulary:
    """Seen and unseen tags (data order, then split-only tags) that have vectors; a tag
    without a vector is dropped loudly. Tags of the data in neither list are left out."""
    in_split = set(split.seen) | set(split.unseen)
    order = [t for t in all_tags if t in in_split]
    extra = [t for t in split.seen + split.unseen if t not in set(order)]
    if extra:
        log.info("%d split tags have no image in the data (kept as negatives): %s", len(extra), extra[:10])
    order += extra
    no_vector = [t for t in order if t not in vectors.vectors]
    if no_vector:
        log.warning("dropping %d tags without a word vector in %s: %s", len(no_vector), vectors.info.name,
                    no_vector[:10])
    order = [t for t in order if t in vectors.vectors]
    if not order:
        raise DataError("no tag of the data has a word vector")
    unseen = set(split.unseen)
    vocab = Vocabulary(order, np.stack([vectors.vectors[t] for t in order]), np.array([t not in unseen for t in order]))
    if not vocab.seen.any():
        raise DataError("no seen tag has a word vector: nothing to train on")
    return vocab

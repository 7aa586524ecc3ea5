"""What data preparation hands to training: the options it reads and the data it returns.

Apart from :mod:`train.data` so that every reader (tags.csv and COCO there, NUS-WIDE in
:mod:`train.nus_wide_prepare`) builds the same :class:`PreparedData` without importing the others.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdl_core.config import WordSpaceInfo
from sdl_core.vocab import Vocabulary

from .annotations import TaggedImages
from .errors import DataError


@dataclass
class DataSpec:
    """Where the data is and how it is split (the ``fit``/``evaluate`` options)."""

    data: str
    vectors: str
    val_data: str | None = None
    images_root: str | None = None
    split: str | None = None
    val_fraction: float = 0.1
    seed: int = 0
    space_name: str | None = None


@dataclass
class PreparedData:
    """Train/val images with columns = ``vocab.tags`` (seen + unseen), and the vocabulary."""

    train: TaggedImages
    val: TaggedImages | None
    vocab: Vocabulary
    word_space: WordSpaceInfo

    @property
    def seen_index(self) -> np.ndarray:
        """Columns of the seen tags (what the loss trains on)."""
        return np.flatnonzero(self.vocab.seen)

    def summary(self) -> dict:
        """Counts for the log and ``config.json``."""
        return {"train_images": len(self.train), "val_images": len(self.val) if self.val is not None else 0,
                "seen_tags": int(self.vocab.seen.sum()), "unseen_tags": int((~self.vocab.seen).sum()),
                "word_space": self.word_space.name, "dim": self.word_space.dim}


def hold_out(data: TaggedImages, fraction: float, seed: int) -> tuple[TaggedImages, TaggedImages]:
    """A seeded random validation split of ``fraction`` of the images (at least one image)."""
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, int(round(fraction * len(data)))) if len(data) > 1 else 0
    return data.subset(np.sort(order[n_val:])), data.subset(np.sort(order[:n_val]))

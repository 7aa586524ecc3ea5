"""Choosing candidate photos from the approximate index's 8-bit scores.

Each tag's scan gives (photo, estimated score) for every entry (principal vector) of the
lists it read. From those, a photo's estimated score for a tag follows the model's rule:
its best entry (max over K), or the mean over its K entries (mean over K), where an entry
the scan did not reach counts with the lowest score the scan saw for that tag (the lists
not read fit the tag less). Photos are then chosen by the combined estimate (``all``: the
weakest tag; ``any``: the best) and by each tag's own estimate; only they are scored exactly.
"""
from __future__ import annotations

import numpy as np

Entries = tuple[np.ndarray, np.ndarray]  # (photo ids, estimated scores) of one tag's scan


def estimates(lists: list[Entries], k: int, reduction: str) -> tuple[np.ndarray, np.ndarray]:
    """(photos, (photos, T) estimated scores) from each tag's scanned entries."""
    photos, inverse = np.unique(np.concatenate([p for p, _ in lists]), return_inverse=True)
    tags = len(lists)
    cell = inverse * tags + np.repeat(np.arange(tags), [len(p) for p, _ in lists])  # (photo, tag), flat
    scores = np.concatenate([s for _, s in lists]).astype(np.float32)
    floors = np.array([s.min() if len(s) else 0.0 for _, s in lists], np.float32)
    if reduction == "max":
        table = np.repeat(floors[None, :], len(photos), axis=0)
        np.maximum.at(table.reshape(-1), cell, scores)  # a photo's best entry
        return photos, table
    sums = np.bincount(cell, weights=scores, minlength=len(photos) * tags).reshape(-1, tags)
    counts = np.bincount(cell, minlength=len(photos) * tags).reshape(-1, tags)
    return photos, ((sums + (k - counts) * floors) / k).astype(np.float32)


def chosen(photos: np.ndarray, table: np.ndarray, mode: str, per_tag: int, keep: int) -> np.ndarray:
    """The ``keep`` photos with the best combined estimate and each tag's ``per_tag`` best."""
    combined = table.min(axis=1) if mode == "all" else table.max(axis=1)
    rows = [best_rows(combined, keep)] + [best_rows(table[:, t], per_tag) for t in range(table.shape[1])]
    return np.unique(photos[np.concatenate(rows)])


def best_rows(values: np.ndarray, count: int) -> np.ndarray:
    """Rows of the ``count`` largest values (in no order)."""
    if count >= len(values):
        return np.arange(len(values))
    return np.argpartition(-values, count)[:count]

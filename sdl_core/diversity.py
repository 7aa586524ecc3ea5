"""A top-k of different things: no two shown tags whose word vectors are nearly equal.

Ranked by score alone, a vocabulary shows one idea several times (plane, airplane,
aircraft; night, nighttime), each copy taking a place a different true tag could have.
:func:`diverse_top_k` walks the ranking best first and skips a vocabulary tag whose
word vector is closer than ``max_cosine`` to a tag already shown. Typed tags are never
skipped (the user asked for them). Scores are untouched: only which tags fill the k
places changes, so search and evaluation, which read scores, are not affected.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .scoring import top_k_indices

#: Candidates looked at per shown place before the rest is filled in score order.
POOL_PER_PLACE = 4


def diverse_top_k(scores: torch.Tensor, tag_vectors: torch.Tensor, k: int, max_cosine: float,
                  keep: np.ndarray | None = None) -> list[int]:
    """Indices of ``k`` tags, best first, without near-duplicates (see the module docstring).

    ``scores`` (N,), ``tag_vectors`` (N, D); ``keep`` (N,) marks tags never skipped.
    ``k <= 0`` or ``k >= N`` returns every tag in score order, as :func:`top_k_indices` does.
    """
    n = scores.shape[-1]
    if k <= 0 or k >= n:
        return top_k_indices(scores, k).tolist()
    if not -1.0 <= max_cosine <= 1.0:
        raise ValueError(f"max_cosine must be within -1..1, got {max_cosine}")
    kept = np.zeros(n, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    size = min(n, POOL_PER_PLACE * k + int(kept.sum()))
    candidates = top_k_indices(scores, size).tolist()
    unit = F.normalize(tag_vectors[candidates].float(), dim=-1)
    similar = (unit @ unit.t() > max_cosine).cpu().numpy()
    chosen: list[int] = []
    for i, row in enumerate(candidates):
        if kept[row] or not similar[i, chosen].any():
            chosen.append(i)
            if len(chosen) == k:
                break
    order = [candidates[i] for i in chosen]
    if len(order) < k:  # too many near-duplicates in the pool: fill in score order
        shown = set(order)
        order += [row for row in top_k_indices(scores, n).tolist() if row not in shown][:k - len(order)]
    return sorted(order, key=lambda row: -float(scores[row]))

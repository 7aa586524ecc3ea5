"""Seen tags need the classifier's evidence: what the tagger leaves out of a top-k.

A seen tag names classes a classifier-based model (the offline default) was trained on, so
the model's own probabilities can vouch for it. A vocabulary whose ``evidence_classes`` lists
those classes, and a model that reports ``class_peaks`` (each class's highest probability over
its grid), let the tagger skip a seen tag whose classes the classifier did not see: its word
vector alone (drum, a hub of WordLlama's) would otherwise win on association. Like the
diversity step it changes which tags fill the k places, never a score.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .model import Encoded
from .vocab import Vocabulary


def evidence_matrix(vocabulary: Vocabulary) -> torch.Tensor | None:
    """(classes, tags) 0/1 matrix of each vocabulary tag's evidence classes; None for a
    vocabulary without any."""
    pairs = [(c, row) for row, tag in enumerate(vocabulary.tags) for c in vocabulary.evidence_classes.get(tag, ())]
    if not pairs:
        return None
    index = torch.tensor(pairs, dtype=torch.long)
    matrix = torch.zeros(int(index[:, 0].max()) + 1, len(vocabulary))
    matrix[index[:, 0], index[:, 1]] = 1.0
    return matrix


def unsupported(evidence: torch.Tensor | None, encoded: Encoded, threshold: float, typed: np.ndarray
                ) -> torch.Tensor | None:
    """(B, N) tags left out of the top-k: seen vocabulary tags, not typed, whose classes' peak
    probabilities add up to less than ``threshold`` (the classifier saw none of what the tag names).
    ``evidence`` covers the request's first rows (its vocabulary); the typed additions after them
    are never left out."""
    peaks = getattr(encoded, "class_peaks", None)
    if threshold <= 0 or peaks is None or evidence is None or peaks.shape[1] < evidence.shape[0]:
        return None
    matrix = evidence.to(peaks.device)
    mass = peaks[:, :matrix.shape[0]].float() @ matrix  # (B, vocabulary rows)
    hidden = (mass < threshold) & (matrix.sum(dim=0) > 0)[None]
    hidden = F.pad(hidden, (0, len(typed) - hidden.shape[1]))  # typed additions: never hidden
    return hidden & ~torch.from_numpy(np.asarray(typed, dtype=bool)).to(peaks.device)[None]

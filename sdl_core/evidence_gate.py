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

from .model import Encoded
from .vocab import Vocabulary


def evidence_matrix(vocabulary: Vocabulary, typed: np.ndarray, rows: int) -> torch.Tensor | None:
    """(classes, rows) 0/1 matrix of each vocabulary tag's evidence classes (typed tags get none)."""
    if not vocabulary.evidence_classes:
        return None
    classes = 1 + max((max(c) for c in vocabulary.evidence_classes.values() if c), default=0)
    matrix = torch.zeros(classes, rows)
    for row, tag in enumerate(vocabulary.tags):
        found = vocabulary.evidence_classes.get(tag)
        if found and not typed[row]:
            matrix[list(found), row] = 1.0
    return matrix


def unsupported(evidence: torch.Tensor | None, encoded: Encoded, threshold: float) -> torch.Tensor | None:
    """(B, N) tags left out of the top-k: seen vocabulary tags whose classes' peak probabilities
    add up to less than ``threshold`` (the classifier saw none of what the tag names)."""
    peaks = getattr(encoded, "class_peaks", None)
    if threshold <= 0 or peaks is None or evidence is None or peaks.shape[1] < evidence.shape[0]:
        return None
    matrix = evidence.to(peaks.device)
    mass = peaks[:, :matrix.shape[0]].float() @ matrix  # (B, N)
    return (mass < threshold) & (matrix.sum(dim=0) > 0)[None]

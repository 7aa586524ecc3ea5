"""Zero-shot multi-label metrics: per-label AP / mAP and overall P/R/F1 at k.

Protocol (as in the SDL paper and its predecessors):
- ZSL: rank only the unseen tags, on the images with at least one unseen positive.
- GZSL: rank seen + unseen tags, on the images with at least one positive.
- P@k = sum TP / (N * k), R@k = sum TP / sum |positives| over those N images (micro).
- mAP: AP per label (tied scores form one threshold, as in scikit-learn), averaged
  over the labels that have at least one positive among the images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

KS = (3, 5)
#: Labels whose AP is computed together (bounds the memory of the sorted copies).
AP_COLUMNS = 64


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AP per column of ``scores`` (M images, L labels); NaN for a label without positives.

    Equals scikit-learn's ``average_precision_score`` per label, ties included:
    AP = sum over distinct thresholds of (recall step) * precision at that threshold.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    targets = torch.as_tensor(targets).to(torch.float64)
    if scores.shape != targets.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must be the same (M, L)")
    if scores.shape[1] > AP_COLUMNS:  # a few labels at a time: NUS-WIDE's 107k x 1006 would need ~10 GB at once
        return torch.cat([average_precision(scores[:, s:s + AP_COLUMNS], targets[:, s:s + AP_COLUMNS])
                          for s in range(0, scores.shape[1], AP_COLUMNS)])
    m = scores.shape[0]
    if m == 0:
        return torch.full((scores.shape[1],), float("nan"), dtype=torch.float64)
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    sorted_scores = torch.gather(scores, 0, order)
    tp = torch.cumsum(torch.gather(targets, 0, order), dim=0)  # (M, L)
    # a position closes a tie group when the next score differs (or it is the last one)
    group_end = torch.ones_like(sorted_scores, dtype=torch.bool)
    group_end[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    tp_at_ends = torch.where(group_end, tp, torch.zeros_like(tp))
    previous_end_tp = torch.cat([torch.zeros_like(tp[:1]), torch.cummax(tp_at_ends, dim=0).values[:-1]])
    ranks = torch.arange(1, m + 1, dtype=torch.float64).unsqueeze(1)
    gain = torch.where(group_end, (tp - previous_end_tp) * tp / ranks, torch.zeros_like(tp))
    positives = targets.sum(dim=0)
    return torch.where(positives > 0, gain.sum(dim=0) / positives.clamp(min=1), torch.full_like(positives, math.nan))


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean of the per-label APs over labels with a positive; NaN if there is none."""
    ap = average_precision(scores, targets)
    ap = ap[~torch.isnan(ap)]
    return float(ap.mean()) if ap.numel() else math.nan


@dataclass
class TopK:
    """Overall (micro) precision, recall and F1 of the top-k tags."""

    precision: float
    recall: float
    f1: float


def precision_recall_f1_at_k(scores: torch.Tensor, targets: torch.Tensor, k: int) -> TopK:
    """Micro P/R/F1 of each image's top-k labels over all images given (ties: topk's order)."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    targets = torch.as_tensor(targets).bool()
    n, labels = scores.shape
    if n == 0 or labels == 0:
        return TopK(math.nan, math.nan, math.nan)
    top = torch.topk(scores, min(k, labels), dim=1).indices
    tp = float(torch.gather(targets, 1, top).sum())
    positives = float(targets.sum())
    precision = tp / (n * k)
    recall = tp / positives if positives else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return TopK(precision, recall, f1)


@dataclass
class SettingResult:
    """Metrics of one setting (ZSL or GZSL)."""

    map: float
    at_k: dict[int, TopK] = field(default_factory=dict)
    images: int = 0
    labels: int = 0

    def to_dict(self) -> dict:
        """Rounded values, None where a metric is undefined (JSON has no NaN)."""
        out = {"mAP": _finite(self.map), "images": self.images, "labels": self.labels}
        for k, res in self.at_k.items():
            out.update({f"P@{k}": _finite(res.precision), f"R@{k}": _finite(res.recall), f"F1@{k}": _finite(res.f1)})
        return out


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def evaluate_setting(scores: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = KS) -> SettingResult:
    """mAP and P/R/F1@k on the images that have at least one positive among these labels."""
    targets = torch.as_tensor(targets).bool()
    scores = torch.as_tensor(scores)
    keep = targets.any(dim=1)
    scores, targets = scores[keep], targets[keep]
    result = SettingResult(map=mean_average_precision(scores, targets), images=int(keep.sum()),
                           labels=int(targets.any(dim=0).sum()))
    result.at_k = {k: precision_recall_f1_at_k(scores, targets, k) for k in ks}
    return result


def evaluate_zsl_gzsl(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | np.ndarray,
                      ks: tuple[int, ...] = KS) -> dict[str, SettingResult]:
    """ZSL (unseen columns only) and GZSL (all columns) results for scores (M, N tags)."""
    seen = torch.as_tensor(np.asarray(seen, dtype=bool))
    unseen = ~seen
    return {"zsl": evaluate_setting(scores[:, unseen], torch.as_tensor(targets)[:, unseen], ks),
            "gzsl": evaluate_setting(scores, targets, ks)}


def results_to_dict(results: dict[str, SettingResult]) -> dict[str, dict]:
    """``{"zsl": {...}, "gzsl": {...}}`` for JSON files and the training log."""
    return {name: res.to_dict() for name, res in results.items()}


def format_table(results: dict[str, SettingResult], ks: tuple[int, ...] = KS) -> str:
    """A plain-text table: one row per setting, values in percent as papers print them."""
    columns = ["mAP"] + [f"{m}@{k}" for k in ks for m in ("P", "R", "F1")]
    header = f"{'setting':<8}" + "".join(f"{c:>8}" for c in columns) + f"{'images':>8}{'labels':>8}"
    lines = [header, "-" * len(header)]
    for name, res in results.items():
        values = res.to_dict()
        cells = "".join(f"{'-' if values[c] is None else f'{100 * values[c]:.1f}':>8}" for c in columns)
        lines.append(f"{name.upper():<8}{cells}{res.images:>8}{res.labels:>8}")
    return "\n".join(lines)


__all__ = ["KS", "SettingResult", "TopK", "average_precision", "evaluate_setting", "evaluate_zsl_gzsl",
           "format_table", "mean_average_precision", "precision_recall_f1_at_k", "results_to_dict"]

"""The SDL loss (Ben-Cohen et al., ICCV 2021), vectorised over the batch.

Per image i with positive seen tags P and negatives N (every other seen tag):

    L_rank = (1/|P|) * sum_{p in P} sum_{n in N} softplus(s_n - s_p)
    sigma  = sum_d Var_{p in P}(w_p[d])          (unbiased; 0 with one positive)
    R      = sum_d Var_k(A[k, d])                (unbiased; 0 when K = 1)
    loss_i = 2 * ((1 - lam) * (1 + sigma) * L_rank + lam * R)

with ``s_t = max_k <A_k, w_t>``. The original returned NaN for an image without
positives and for K = 1; here such an image is left out of the batch mean (and
counted) and K = 1 has a zero regulariser. With no negatives L_rank is 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from sdl_core.scoring import score_tags

#: lambda of the authors' training script (their loss class defaults to 0.3).
DEFAULT_LAMBDA = 0.01


@dataclass
class LossOutput:
    """The batch loss and what went into it (for the training log)."""

    loss: torch.Tensor  # scalar; 0 (with a graph) when no image had a positive
    per_image: torch.Tensor  # (B,), NaN where an image was left out
    used: int  # images with at least one positive
    skipped: int  # images without a positive: not in the mean


def semantic_diversity(tag_vectors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sigma_i: summed unbiased variance of the positives' word vectors, (B,). 0 for <2 positives."""
    mask = targets.to(tag_vectors.dtype)  # (B, N)
    count = mask.sum(dim=1)  # (B,)
    mean = (mask @ tag_vectors) / count.clamp(min=1).unsqueeze(1)  # (B, D)
    # sum_p ||w_p - mean||^2 = sum_p ||w_p||^2 - |P| * ||mean||^2
    sq_norms = (tag_vectors * tag_vectors).sum(dim=1)  # (N,)
    scatter = mask @ sq_norms - count * (mean * mean).sum(dim=1)
    return torch.where(count > 1, scatter.clamp(min=0) / (count - 1).clamp(min=1), torch.zeros_like(count))


def principal_variance(vectors: torch.Tensor) -> torch.Tensor:
    """R_i: the L1 norm of the per-dimension unbiased variance across the K vectors, (B,)."""
    if vectors.shape[1] < 2:
        return vectors.new_zeros(vectors.shape[0])
    return vectors.var(dim=1, unbiased=True).sum(dim=1)


def ranking_term(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_rank per image, (B,): mean over positives of the summed softplus margins to negatives."""
    pos = targets.bool()
    neg = ~pos
    margins = F.softplus(scores.unsqueeze(1) - scores.unsqueeze(2))  # [b, p, n] = softplus(s_n - s_p)
    pair_mask = pos.unsqueeze(2) & neg.unsqueeze(1)
    total = (margins * pair_mask.to(margins.dtype)).sum(dim=(1, 2))
    return total / pos.sum(dim=1).clamp(min=1).to(total.dtype)


def sdl_loss(vectors: torch.Tensor, tag_vectors: torch.Tensor, targets: torch.Tensor,
             lam: float = DEFAULT_LAMBDA, reduction: str = "max") -> LossOutput:
    """SDL loss of principal vectors (B, K, D) for multi-hot ``targets`` (B, N) over the
    seen tags whose unit word vectors are ``tag_vectors`` (N, D).

    Computed in float32 whatever the autocast dtype of ``vectors``.
    """
    if vectors.dim() != 3 or tag_vectors.dim() != 2 or vectors.shape[2] != tag_vectors.shape[1]:
        raise ValueError(f"shapes do not fit: vectors {tuple(vectors.shape)} (B, K, D), "
                         f"tag vectors {tuple(tag_vectors.shape)} (N, D)")
    if targets.shape != (vectors.shape[0], tag_vectors.shape[0]):
        raise ValueError(f"targets are {tuple(targets.shape)}, expected {(vectors.shape[0], tag_vectors.shape[0])}")
    vectors = vectors.float()
    tag_vectors = tag_vectors.to(vectors.device, torch.float32)
    targets = targets.to(vectors.device)
    scores, _ = score_tags(vectors, tag_vectors, reduction)  # the scores tagging and search use
    rank = ranking_term(scores, targets)
    sigma = semantic_diversity(tag_vectors, targets)
    per_image = 2.0 * ((1.0 - lam) * (1.0 + sigma) * rank + lam * principal_variance(vectors))
    has_pos = targets.bool().any(dim=1)
    used = int(has_pos.sum())
    loss = per_image[has_pos].mean() if used else vectors.sum() * 0.0
    return LossOutput(loss=loss, per_image=torch.where(has_pos, per_image, torch.full_like(per_image, float("nan"))),
                      used=used, skipped=int(has_pos.numel() - used))

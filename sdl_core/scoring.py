"""Scoring tags against principal vectors: the one contract every model shares.

``score(b, t) = reduce_k <A[b, k], w_t>`` with ``reduce`` = max (the paper) or mean.
The winning k per tag says which principal vector "owns" the tag.

Large matrices (100k tags, 100k indexed photos) are read at close to memory speed by
:func:`top_tags` and :func:`exact_top`: a first pass over a bfloat16 copy
(:class:`LowPrecision`, half the bytes) gives every score within a proven bound, and only
the rows that could still reach the top are scored again by :func:`score_tags` in float32.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

#: bfloat16's unit round-off (8 significant bits) and float32's (the products accumulate in float32).
_U_LOW = 2.0 ** -8
_U32 = 2.0 ** -24
#: CPU flags of native bfloat16 products; elsewhere they are emulated and slower than float32.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: Rows of principal vectors (B*K) from which :func:`top_tags` takes the bfloat16 pass: the float32
#: product of up to 3 rows already reads the tag matrix at memory speed (100k tags, AVX-512 VM:
#: K=3 float32 12.7 ms, bfloat16 15.1 ms; K=7 32.4 -> 24.1 ms; benchmarks/bench.py section 4).
LOW_PRECISION_FROM_ROWS = 4


def _products(vectors: torch.Tensor, tag_vectors: torch.Tensor, reduction: str) -> tuple[torch.Tensor, int]:
    """Every <A[b, k], w_t>, as (B, K, N) (dim of K: 1) or (N, B, K) (dim 2); inputs checked."""
    if vectors.dim() != 3:
        raise ValueError(f"principal vectors must be (B, K, D), got {tuple(vectors.shape)}")
    if tag_vectors.dim() != 2 or tag_vectors.shape[1] != vectors.shape[2]:
        raise ValueError(f"tag vectors must be (N, {vectors.shape[2]}), got {tuple(tag_vectors.shape)}")
    if reduction not in ("max", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}")
    b, k, d = vectors.shape
    n = tag_vectors.shape[0]
    flat, tags = vectors.reshape(b * k, d), tag_vectors.to(vectors.dtype)
    if b * k <= n:
        # Tagging (few principal vectors, many tags): one (B*K, D) x (N, D)^T product that
        # streams the tag matrix once for all K and writes (B, K, N), so the max over K needs
        # no transpose. On an AVX-512 VM: as fast as reading the matrix for K=3, 100k tags
        # (2x the other layout).
        return F.linear(flat, tags).view(b, k, n), 1
    # Search and training (many images, few tags): (N, D) x (B*K, D)^T reads the big
    # principal-vector matrix row by row; 10% faster than the layout above for 1 tag.
    return F.linear(tags, flat).view(n, b, k), 2


def score_tags(vectors: torch.Tensor, tag_vectors: torch.Tensor, reduction: str = "max"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B, N) and winning principal index (B, N) for principal vectors (B, K, D)
    against tag vectors (N, D)."""
    per_k, dim = _products(vectors, tag_vectors, reduction)
    best, winner = per_k.max(dim=dim)
    scores = best if reduction == "max" else per_k.mean(dim=dim)
    if dim == 1:
        return scores, winner
    return scores.t().contiguous(), winner.t().contiguous()


def best_scores(vectors: torch.Tensor, tag_vectors: torch.Tensor, reduction: str = "max") -> torch.Tensor:
    """The scores of :func:`score_tags` (B, N) without the winning k: a max over K without
    indices is 30x cheaper (100k tags, K=3: 0.04 ms instead of 1.3 ms on one core)."""
    per_k, dim = _products(vectors, tag_vectors, reduction)
    scores = per_k.amax(dim=dim) if reduction == "max" else per_k.mean(dim=dim)
    return scores if dim == 1 else scores.t().contiguous()


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k best scores per row, best first (k <= 0 or k >= N: all, sorted).

    Equal scores keep their order (the lower index first), also at the cut, so the order
    never depends on topk's tie order and :func:`ranks_of` agrees with it."""
    if scores.dim() > 1:
        return torch.stack([top_k_indices(row, k) for row in scores])
    n = scores.shape[-1]
    if k <= 0 or k >= n:
        return torch.sort(scores, dim=-1, descending=True, stable=True).indices
    values, rows = torch.topk(scores, k + 1, dim=-1)  # the one after the cut tells if a tie straddles it
    cut, rows = values[k - 1], rows[:k]
    if bool(values[k] == cut):  # rare: the tied rows at the cut go to the lower rows
        above = torch.nonzero(scores > cut).flatten()
        rows = torch.cat([above, torch.nonzero(scores == cut).flatten()[: k - above.numel()]])
    rows = rows.sort().values
    return rows[torch.sort(scores[rows], descending=True, stable=True).indices]


def ranks_of(scores: torch.Tensor, rows: Sequence[int]) -> list[int]:
    """The 1-based rank of each of ``rows`` in the order of :func:`top_k_indices` over all of
    a (N,) row of scores: one plus the scores above it plus the equal scores in earlier rows.

    Counts over the scores already computed, no sort: ~1 ns a tag per typed tag on one core
    (10 typed tags among 100k: 0.1 ms; a stable sort of 100k scores takes ~17 ms)."""
    values = scores.detach().float().cpu().numpy()
    return [int(np.count_nonzero(values[:row] >= values[row])) + int(np.count_nonzero(values[row + 1:] > values[row]))
            + 1 for row in rows]


# --- large matrices: a bfloat16 pass, then the exact scores of the few rows that matter ------

@functools.lru_cache(maxsize=1)
def fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX); elsewhere the
    bfloat16 pass is emulated and slower than reading float32 (seen: 2-8x on an AVX2 EPYC)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return any(flag in flags for flag in _BF16_FLAGS)


@dataclass(frozen=True)
class LowPrecision:
    """A bfloat16 copy (half the bytes) of a large (R, D) float32 matrix, for the first pass
    of :func:`top_tags` and :func:`exact_top`; ``max_row_norm`` bounds its error."""

    matrix: torch.Tensor
    max_row_norm: float

    @classmethod
    def of(cls, matrix: torch.Tensor, require_fast: bool = True) -> LowPrecision | None:
        """The copy of a CPU float32 matrix, or None where it would not pay (no native
        bfloat16 here, unless ``require_fast=False``) or cannot bound its error (non-finite values)."""
        if matrix.dim() != 2 or matrix.device.type != "cpu" or (require_fast and not fast_bfloat16()):
            return None
        norm = float(matrix.float().norm(dim=1).max()) if matrix.numel() else 0.0
        if not math.isfinite(norm):
            return None
        return cls(matrix.to(torch.bfloat16).contiguous(), norm)


def approximate_products(rows: torch.Tensor, low: LowPrecision) -> tuple[torch.Tensor, float]:
    """(M, R) products of float32 ``rows`` (M, D) with the matrix, from its bfloat16 copy, and a
    bound on |approximate - exact| for every entry (inf where the inputs are not finite).

    Both inputs rounded to bfloat16 (u each), float32 accumulation over D terms, the result
    rounded to bfloat16 (u of its size); by Cauchy-Schwarz a product's input error is at most
    (2u + u^2 + D u32) |row| |matrix row|; a factor 2 spares kernels that round partial sums."""
    approx = F.linear(rows.to(torch.bfloat16), low.matrix).float()
    if not approx.numel():
        return approx, 0.0
    row_norm = float(rows.float().norm(dim=1).max())
    inputs = (2 * _U_LOW + _U_LOW ** 2 + rows.shape[1] * _U32) * row_norm * low.max_row_norm
    bound = 2.0 * (inputs + _U_LOW * float(approx.abs().max()))
    return approx, (bound if math.isfinite(bound) else math.inf)


def exact_top(approx: torch.Tensor, bound: float, n: int, exact_scores: Callable[[torch.Tensor], torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the ``n`` best exact scores and those scores, best first, ties to the lower row
    (as :func:`top_k_indices`), from (R,) approximate scores within ``bound`` of the exact ones
    and a function that gives the exact scores of given rows (ascending).

    A row of the exact top n scores at least the n-th best approximate score minus ``bound``,
    so its approximate score is at least that minus 2 * bound: those candidates hold the top n."""
    n = min(max(1, n), approx.shape[0])
    kth = torch.topk(approx, n).values[-1]
    candidates = torch.nonzero(approx >= kth - 2 * bound).flatten()
    exact = exact_scores(candidates)
    order = top_k_indices(exact, n)
    return candidates[order], exact[order]


def top_tags(vectors: torch.Tensor, tag_vectors: torch.Tensor, k: int, reduction: str = "max",
             low: LowPrecision | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best tags per image, as ``top_k_indices(score_tags(...)[0][b], k)`` ranks them:
    tag rows, scores and winning principal index, each (B, k), best first.

    With ``low`` (the tag matrix's :class:`LowPrecision` copy) and at least
    LOW_PRECISION_FROM_ROWS principal vectors, the whole matrix is read in bfloat16 and only
    candidates are scored in float32 (where two float32 scores are within float32 rounding,
    their order is the candidates' product's); otherwise every score is computed in float32 and
    the winning k only for the top rows."""
    n = tag_vectors.shape[0]
    k = n if k <= 0 else min(k, n)
    if low is None or k >= n or vectors.shape[0] * vectors.shape[1] < LOW_PRECISION_FROM_ROWS:
        scores = best_scores(vectors, tag_vectors, reduction)
        rows = torch.stack([top_k_indices(row, k) for row in scores])
        chosen = scores.gather(1, rows)
    else:
        b, kk, d = vectors.shape
        products, bound = approximate_products(vectors.reshape(b * kk, d), low)
        per_k = products.view(b, kk, n)
        approx = per_k.amax(dim=1) if reduction == "max" else per_k.mean(dim=1)
        found = [exact_top(approx[i], bound, k,
                           lambda cand, i=i: best_scores(vectors[i:i + 1], tag_vectors[cand], reduction)[0])
                 for i in range(b)]
        rows, chosen = torch.stack([r for r, _ in found]), torch.stack([s for _, s in found])
    winners = torch.stack([score_tags(vectors[i:i + 1], tag_vectors[rows[i]], reduction)[1][0]
                           for i in range(vectors.shape[0])])
    return rows, chosen, winners

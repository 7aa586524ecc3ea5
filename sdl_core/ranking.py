"""The top k tags of a large tag matrix at close to the speed of reading it once.

:func:`sdl_core.scoring.score_tags` stays the one scoring function. For ranking, a float16
copy of the tag matrix (half the bytes to read) gives approximate scores with a proven
error bound; every tag whose approximate score could still reach the top k is re-scored
by ``score_tags`` itself in float64. The result is the float32 path's top k: same tags in the
same order, scores equal up to float32 rounding. Only where two float32 scores are within
float32 rounding of each other (their order there is an artefact of the GEMM kernel, which
sums a few candidate rows in another order than all rows) does the float64 order decide;
exact ties go to the lower tag index.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .scoring import score_tags

#: B*K rows of principal vectors from which the float16 pass pays: measured on an AVX-512
#: (FP16) VM, float16 read 100k x 300 tags 1.65x faster than float32 for K=7, but for K=3 the
#: float32 product already ran at the speed of reading the matrix and float16 was slower.
HALF_FROM_ROWS = 6
#: The float16 product must beat float32 by this much on this CPU to be used (on AVX2-only
#: CPUs torch's float16 products were measured 2-8x *slower*).
HALF_MIN_SPEEDUP = 1.25
#: float16's unit round-off.
_U16 = 2.0 ** -11
#: float32's unit round-off (accumulation is in float32).
_U32 = 2.0 ** -24


@dataclass(frozen=True)
class RankingMatrix:
    """A tag matrix prepared for ranking: the float32 rows (shared, not copied) and a
    float16 copy scaled by a power of two so that no entry overflows."""

    exact: torch.Tensor
    half: torch.Tensor
    half_scale: float
    max_row_norm: float

    @classmethod
    def of(cls, tag_vectors: torch.Tensor) -> RankingMatrix:
        """Prepare (N, D) float32 tag vectors (one float16 copy: half their size again)."""
        if tag_vectors.dim() != 2:
            raise ValueError(f"tag vectors must be (N, D), got {tuple(tag_vectors.shape)}")
        exact = tag_vectors.float().contiguous()
        scale = _power_of_two_above(float(exact.abs().max())) if exact.numel() else 1.0
        half = (exact / scale).half()
        norm = float(exact.norm(dim=1).max()) / scale if exact.numel() else 0.0
        return cls(exact, half, scale, norm)


def _power_of_two_above(x: float) -> float:
    """The smallest power of two >= x (1 for x == 0): scaling by it is exact."""
    return 2.0 ** math.ceil(math.log2(x)) if x > 0 else 1.0


@functools.cache
def half_pays() -> bool:
    """Whether this CPU runs the float16 product clearly faster than float32 (timed once per
    process on a 32k x 256 block, best of 3: about 10 ms)."""
    gen = torch.Generator().manual_seed(0)
    tags, rows = torch.randn(32_768, 256, generator=gen), torch.randn(7, 256, generator=gen)
    half_tags, half_rows = tags.half(), rows.half()

    def best(fn) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)
    with torch.inference_mode():
        single = best(lambda: F.linear(rows, tags))
        half = best(lambda: F.linear(half_rows, half_tags))
    return half * HALF_MIN_SPEEDUP <= single


def half_error_bound(a: torch.Tensor, tag_norm: float) -> float:
    """Largest |float16 score - exact score| for scaled principal vectors ``a`` (|a| <= 1)
    against scaled tags of norm <= ``tag_norm``: both inputs rounded to float16 (u each),
    float32 accumulation over D terms, the output rounded to float16, and subnormals
    (absolute error 2^-25 per entry), with a factor 2 to spare."""
    d = a.shape[-1]
    a_norm = float(a.norm(dim=-1).max())
    relative = (4 * _U16 + d * _U32) * a_norm * tag_norm
    return 2.0 * (relative + d * 2.0 ** -23)


def approximate_scores(vectors: torch.Tensor, matrix: RankingMatrix, reduction: str = "max"
                       ) -> tuple[torch.Tensor, float]:
    """(B, N) float16-pass scores, in the units of the exact scores, and their error bound."""
    b, k, d = vectors.shape
    rows = vectors.reshape(b * k, d).float()
    scale = _power_of_two_above(float(rows.abs().max()))
    per_k = F.linear((rows / scale).half(), matrix.half).view(b, k, -1)
    approx = per_k.amax(dim=1).float() if reduction == "max" else per_k.float().mean(dim=1)
    unit = scale * matrix.half_scale
    return approx * unit, half_error_bound(rows / scale, matrix.max_row_norm) * unit


def top_tags(vectors: torch.Tensor, matrix: RankingMatrix, k: int, reduction: str = "max"
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best tags per image for principal vectors (B, K, D): tag indices, exact scores
    and winning principal index, each (B, k), best first, as ``score_tags`` ranks them."""
    n = matrix.exact.shape[0]
    b, kk, _ = vectors.shape
    k = n if k <= 0 else min(k, n)
    if b * kk >= HALF_FROM_ROWS and k < n and half_pays():
        approx, bound = approximate_scores(vectors, matrix, reduction)
    else:
        approx, bound = score_tags(vectors, matrix.exact, reduction)[0], 0.0
    kth = torch.topk(approx, k, dim=1).values[:, -1:]
    # A tag of the exact top k scores >= the k-th best approximate score - bound, so its
    # approximate score is >= that - 2 * bound: these candidates hold the exact top k.
    candidates = torch.nonzero((approx >= kth - 2 * bound).any(dim=0)).flatten()
    scores, winners = score_tags(vectors.double(), matrix.exact[candidates].double(), reduction)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return candidates[order], scores.gather(1, order).float(), winners.gather(1, order)

"""The vectorised SDL loss against a plain per-sample reference written here."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from train.loss import sdl_loss


def reference_loss(vectors, tag_vectors, targets, lam):
    """Straight from the formula, one image at a time (float64)."""
    per_image = []
    for a, y in zip(vectors.double(), targets.bool()):
        w = tag_vectors.double()
        scores = (a @ w.t()).max(dim=0).values  # max_k <A_k, w_t>
        pos, neg = scores[y], scores[~y]
        if pos.numel() == 0:
            continue
        rank = sum(math.log1p(math.exp(float(sn - sp))) for sp in pos for sn in neg) / pos.numel()
        wp = w[y]
        sigma = float(wp.var(dim=0, unbiased=True).sum()) if wp.shape[0] > 1 else 0.0
        reg = float(a.var(dim=0, unbiased=True).sum()) if a.shape[0] > 1 else 0.0
        per_image.append(2 * ((1 - lam) * (1 + sigma) * rank + lam * reg))
    return sum(per_image) / len(per_image), len(per_image)


@pytest.mark.parametrize("b,k,d,n,lam", [(1, 1, 4, 3, 0.01), (4, 3, 8, 6, 0.3), (7, 7, 16, 20, 0.01),
                                         (5, 2, 300, 12, 0.5), (3, 1, 5, 9, 0.0)])
def test_matches_per_sample_reference(b, k, d, n, lam):
    gen = torch.Generator().manual_seed(b * 100 + k)
    vectors = torch.randn(b, k, d, generator=gen)
    tag_vectors = F.normalize(torch.randn(n, d, generator=gen), dim=1)
    targets = torch.rand(b, n, generator=gen) < 0.3
    targets[0] = False
    targets[0, 0] = True  # a single-positive image (sigma = 0)
    if b > 2:
        targets[1] = False  # no positive: left out of the mean
        targets[2] = True  # all positive: no negatives, L_rank = 0
    out = sdl_loss(vectors, tag_vectors, targets, lam=lam)
    expected, used = reference_loss(vectors, tag_vectors, targets, lam)
    assert out.used == used and out.skipped == b - used
    assert float(out.loss) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_no_positive_images_are_excluded_and_counted():
    torch.manual_seed(0)
    vectors, tags = torch.randn(4, 3, 8), F.normalize(torch.randn(5, 8), dim=1)
    targets = torch.zeros(4, 5, dtype=torch.bool)
    targets[2, 1] = True
    out = sdl_loss(vectors, tags, targets)
    assert (out.used, out.skipped) == (1, 3)
    assert torch.isnan(out.per_image[[0, 1, 3]]).all() and torch.isfinite(out.per_image[2])
    assert float(out.loss) == pytest.approx(float(sdl_loss(vectors[2:3], tags, targets[2:3]).loss), rel=1e-6)


def test_batch_without_positives_gives_zero_with_a_graph():
    vectors = torch.randn(2, 3, 8, requires_grad=True)
    out = sdl_loss(vectors, F.normalize(torch.randn(5, 8), dim=1), torch.zeros(2, 5, dtype=torch.bool))
    assert float(out.loss.detach()) == 0.0 and out.skipped == 2
    out.loss.backward()
    assert torch.equal(vectors.grad, torch.zeros_like(vectors))


def test_k1_regulariser_is_zero_and_gradients_finite():
    vectors = torch.randn(3, 1, 8, requires_grad=True)
    tags = F.normalize(torch.randn(6, 8), dim=1)
    targets = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    full = sdl_loss(vectors, tags, targets, lam=0.5)
    full.loss.backward()
    assert torch.isfinite(vectors.grad).all()
    no_reg = sdl_loss(vectors.detach(), tags, targets, lam=0.5)
    expected, _ = reference_loss(vectors.detach(), tags, targets, 0.5)
    assert float(no_reg.loss) == pytest.approx(expected, rel=1e-5)


def test_large_scores_do_not_overflow():
    """softplus, not log(1 + exp): margins of 1e4 stay finite (the original gave inf)."""
    tags = torch.eye(4)
    vectors = torch.zeros(1, 2, 4)
    vectors[0, 0, 3] = 1e4  # a negative scores far above the positive; the other two score 0
    targets = torch.tensor([[True, False, False, False]])
    out = sdl_loss(vectors, tags, targets, lam=0.0)
    assert math.isfinite(float(out.loss)) and float(out.loss) == pytest.approx(2 * (1e4 + 2 * math.log(2)), rel=1e-6)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="targets"):
        sdl_loss(torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="shapes"):
        sdl_loss(torch.randn(2, 3, 4), torch.randn(5, 6), torch.zeros(2, 5))

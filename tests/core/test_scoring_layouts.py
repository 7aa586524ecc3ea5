"""score_tags picks a product layout by shape (tagging: few vectors, many tags; search and
training: many images, few tags); both must give the definition's scores and winners."""
import numpy as np
import pytest
import torch

from sdl_core.scoring import score_tags


def unit_rows(rng: np.random.Generator, n: int, d: int) -> torch.Tensor:
    rows = rng.normal(size=(n, d)).astype(np.float32)
    return torch.from_numpy(rows / np.linalg.norm(rows, axis=1, keepdims=True))


@pytest.mark.parametrize("b,n", [(1, 500), (100, 3)])  # tagging layout and search/training layout
@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_both_product_layouts_of_score_tags_match_the_definition(b, n, reduction):
    rng = np.random.default_rng(b + n)
    vectors = torch.from_numpy(rng.normal(size=(b, 7, 32)).astype(np.float32))
    tags = unit_rows(rng, n, 32)
    per_k = torch.einsum("bkd,nd->bkn", vectors.double(), tags.double())
    scores, winners = score_tags(vectors, tags, reduction)
    want = per_k.amax(dim=1) if reduction == "max" else per_k.mean(dim=1)
    torch.testing.assert_close(scores.double(), want, rtol=0, atol=1e-5)
    assert scores.shape == winners.shape == (b, n) and scores.is_contiguous()
    assert torch.equal(winners, per_k.argmax(dim=1))

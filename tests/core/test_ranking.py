"""The fast ranking path gives the float32 path's top k: same tags, same order, same scores,
also where scores are within float16 rounding of each other."""
import numpy as np
import pytest
import torch

from sdl_core import ranking
from sdl_core.ranking import HALF_FROM_ROWS, RankingMatrix, approximate_scores, top_tags
from sdl_core.scoring import score_tags


REAL_HALF_PAYS = ranking.half_pays


@pytest.fixture(autouse=True, params=[True, False], ids=["float16 pass", "float32 only"])
def half_pays(request, monkeypatch):
    """Every test runs with and without the float16 pass (which one this CPU picks varies)."""
    monkeypatch.setattr(ranking, "half_pays", lambda: request.param)
    return request.param


def unit_rows(rng: np.random.Generator, n: int, d: int) -> torch.Tensor:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))


def assert_same_top(got, want) -> None:
    """Same tags in the same order with the same winners; scores equal up to float32 rounding
    (a GEMM over a few candidate rows may sum in another order than over all of them)."""
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-5)


def reference(vectors: torch.Tensor, tags: torch.Tensor, k: int, reduction: str = "max"):
    """The float32 path: score every tag, sort (exact ties: lower index first)."""
    scores, winners = score_tags(vectors, tags, reduction)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return order, scores.gather(1, order), winners.gather(1, order)


@pytest.mark.parametrize("b,k,d,reduction", [(1, 7, 300, "max"), (1, 3, 256, "max"), (3, 7, 64, "max"),
                                             (2, 5, 32, "mean")])
def test_top_k_equals_the_float32_path_on_random_data(b, k, d, reduction):
    rng = np.random.default_rng(k * d)
    tags = unit_rows(rng, 20_000, d)
    vectors = torch.from_numpy(rng.normal(size=(b, k, d)).astype(np.float32)) * 7.0
    got = top_tags(vectors, RankingMatrix.of(tags), 10, reduction)
    want = reference(vectors, tags, 10, reduction)
    assert_same_top(got, want)


def near_tie_case(seed: int, copies: torch.Tensor):
    """Random tags plus ``copies`` of the best tag added to it, shuffled in."""
    rng = np.random.default_rng(seed)
    tags = unit_rows(rng, 5_000, copies.shape[1])
    vectors = torch.from_numpy(rng.normal(size=(1, 7, copies.shape[1])).astype(np.float32))
    best = int(score_tags(vectors, tags)[0].argmax())
    tags = torch.cat([tags, tags[best] + copies])
    return vectors, tags[torch.from_numpy(rng.permutation(tags.shape[0]))].contiguous()


def test_near_ties_below_float16_resolution_keep_the_float32_order():
    nudges = torch.from_numpy(np.random.default_rng(9).normal(size=(12, 300)).astype(np.float32)) * 1e-5
    vectors, tags = near_tie_case(1, nudges)
    matrix = RankingMatrix.of(tags)
    got, want = top_tags(vectors, matrix, 10), reference(vectors, tags, 10)
    assert_same_top(got, want)
    _, bound = approximate_scores(vectors, matrix)
    assert float(want[1][0, 0] - want[1][0, 9]) < bound  # float16 alone could not order these


def test_exact_copies_tie_and_go_to_the_lower_index():
    vectors, tags = near_tie_case(2, torch.zeros(4, 300))
    got, want = top_tags(vectors, RankingMatrix.of(tags), 10), reference(vectors, tags, 10)
    copies = got[0][0, :5]
    assert torch.equal(copies, torch.sort(copies).values)
    assert set(copies.tolist()) == set(want[0][0, :5].tolist())
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-5)  # the case really has near or exact ties


def test_the_float16_pass_stays_inside_its_error_bound():
    rng = np.random.default_rng(2)
    tags = unit_rows(rng, 20_000, 300) * 3.0
    vectors = torch.from_numpy(rng.normal(size=(2, 7, 300)).astype(np.float32)) * 50.0
    approx, bound = approximate_scores(vectors, RankingMatrix.of(tags))
    err = float((approx - score_tags(vectors, tags)[0]).abs().max())
    assert 0 < err <= bound / 2  # the bound without its factor 2 to spare


def test_small_products_and_k_beyond_n_use_the_exact_scores():
    rng = np.random.default_rng(3)
    tags = unit_rows(rng, 50, 16)
    vectors = torch.from_numpy(rng.normal(size=(1, 1, 16)).astype(np.float32))
    assert 1 < HALF_FROM_ROWS
    for k in (5, 0, 80):
        got = top_tags(vectors, RankingMatrix.of(tags), k)
        want = reference(vectors, tags, 50 if k <= 0 or k > 50 else k)
        assert_same_top(got, want)


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


def test_the_cpu_check_for_the_float16_pass_runs_once_per_process():
    first = REAL_HALF_PAYS()
    assert isinstance(first, bool) and REAL_HALF_PAYS() is first
    assert REAL_HALF_PAYS.cache_info().hits >= 1

"""The fast ranking of large matrices (sdl_core/scoring.py: best_scores, top_tags, the bfloat16
pass with its error bound, exact_top) and its use in search: the same rows, order and scores as
ranking every float32 score, also where scores lie within bfloat16 rounding of each other."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from sdl_core.scoring import (LowPrecision, approximate_products, best_scores, score_tags, top_k_indices,
                              top_tags)
from sdl_core.search import query


def unit_rows(rng: np.random.Generator, n: int, d: int) -> torch.Tensor:
    rows = rng.normal(size=(n, d)).astype(np.float32)
    return torch.from_numpy(rows / np.linalg.norm(rows, axis=1, keepdims=True))


def reference(vectors: torch.Tensor, tags: torch.Tensor, k: int, reduction: str):
    """The float32 path: every score, then top_k_indices per image."""
    scores, winners = score_tags(vectors, tags, reduction)
    rows = torch.stack([top_k_indices(row, k) for row in scores])
    return rows, scores.gather(1, rows), winners.gather(1, rows)


@pytest.mark.parametrize("b,n", [(1, 500), (100, 3)])
@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_best_scores_are_score_tags_scores(b, n, reduction):
    rng = np.random.default_rng(b * n)
    vectors = torch.from_numpy(rng.normal(size=(b, 5, 24)).astype(np.float32))
    tags = unit_rows(rng, n, 24)
    assert torch.equal(best_scores(vectors, tags, reduction), score_tags(vectors, tags, reduction)[0])


@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("shape", [(1, 3, 32, 2000), (1, 4, 32, 2000), (3, 7, 40, 3000), (2, 1, 16, 50)])
@pytest.mark.parametrize("with_low", [False, True])
def test_top_tags_equals_ranking_every_float32_score(reduction, shape, with_low):
    b, k, d, n = shape
    rng = np.random.default_rng(n + k)
    vectors = torch.from_numpy(rng.normal(size=(b, k, d)).astype(np.float32))
    tags = unit_rows(rng, n, d)
    low = LowPrecision.of(tags, require_fast=False) if with_low else None
    for top in (1, 10, n):
        rows, scores, winners = top_tags(vectors, tags, top, reduction, low)
        want_rows, want_scores, want_winners = reference(vectors, tags, top, reduction)
        assert torch.equal(rows, want_rows)
        torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-5)
        assert torch.equal(winners, want_winners)


def test_scores_closer_than_bfloat16_can_tell_keep_the_float32_order():
    """Tags 1e-4 apart in score (bfloat16 rounds ~4e-3 at this size) and exact duplicates:
    the candidates' float32 scores decide, exact ties go to the lower row."""
    rng = np.random.default_rng(1)
    d = 64
    vector = torch.from_numpy(rng.normal(size=(1, 5, d)).astype(np.float32))
    direction = torch.nn.functional.normalize(vector[0, 0], dim=0)
    near = direction + 1e-4 * torch.from_numpy(rng.normal(size=(200, d)).astype(np.float32))
    tags = torch.cat([unit_rows(rng, 5000, d), near, near[:20]])  # the last 20 duplicate rows
    tags = tags[torch.from_numpy(rng.permutation(tags.shape[0]))]
    low = LowPrecision.of(tags, require_fast=False)
    rows, scores, _ = top_tags(vector, tags, 30, "max", low)
    want_rows, want_scores, _ = reference(vector, tags, 30, "max")
    assert torch.equal(rows, want_rows)
    assert torch.equal(scores, want_scores)
    assert float(want_scores[0, 0] - want_scores[0, -1]) < 1e-2  # they really are that close


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_the_bfloat16_bound_holds(scale):
    rng = np.random.default_rng(int(scale * 10) + 3)
    rows = torch.from_numpy((rng.normal(size=(7, 300)) * scale).astype(np.float32))
    matrix = torch.from_numpy(rng.normal(size=(4000, 300)).astype(np.float32) * rng.uniform(0.1, 10, (4000, 1)))
    matrix = matrix.float()
    approx, bound = approximate_products(rows, LowPrecision.of(matrix, require_fast=False))
    exact = rows.double() @ matrix.double().t()
    error = float((approx.double() - exact).abs().max())
    assert 0 < error <= bound / 2  # a factor 2 of the bound is spare
    norms = float(rows.norm(dim=1).max()) * float(matrix.norm(dim=1).max())
    assert bound < 0.05 * norms  # and it is not vacuous: a few bfloat16 round-offs of |a| |w|


def test_no_copy_for_non_finite_matrices():
    matrix = torch.ones(10, 4)
    matrix[3, 1] = float("inf")
    assert LowPrecision.of(matrix, require_fast=False) is None
    assert LowPrecision.of(torch.ones(10, 4), require_fast=False) is not None


def index_vectors(n: int, k: int, d: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, k, d, generator=gen), dim=-1).half().float()


@pytest.mark.parametrize("mode", ["any", "all"])
def test_search_rows_from_the_bfloat16_pass_equal_the_float32_ranking(mode, monkeypatch):
    monkeypatch.setattr(query, "LOW_PRECISION_FROM", 0)
    monkeypatch.setattr(query, "LowPrecision", _AlwaysLow)
    vectors = index_vectors(3000, 7, 48)
    w = unit_rows(np.random.default_rng(5), 2 if mode == "all" else 1, 48)
    want = query.top_rows(query.combine(query.tag_scores(vectors, w, "max"), mode)[0], 25)
    assert query.low_precision_of(vectors) is None  # the first query scans in float32
    assert torch.equal(query.best_rows(vectors, w, "max", mode, 25), want)
    assert query.low_precision_of(vectors) is not None  # from the second on, the copy
    assert torch.equal(query.best_rows(vectors, w, "max", mode, 25), want)


def test_the_search_copy_follows_in_place_changes_and_goes_with_its_vectors(monkeypatch):
    monkeypatch.setattr(query, "LOW_PRECISION_FROM", 0)
    monkeypatch.setattr(query, "LowPrecision", _AlwaysLow)
    vectors = index_vectors(500, 3, 16)
    query.low_precision_of(vectors)
    first = query.low_precision_of(vectors)
    assert query.low_precision_of(vectors) is first
    vectors[0] = -vectors[0]
    second = query.low_precision_of(vectors)
    assert second is not first and torch.equal(second.matrix[:3], vectors[0].bfloat16())
    key = id(vectors)
    del vectors, first, second
    gc.collect()
    assert key not in query._low_copies


class _AlwaysLow(LowPrecision):
    """LowPrecision that makes its copy on any CPU (the tests run where bfloat16 may be emulated)."""

    @classmethod
    def of(cls, matrix: torch.Tensor, require_fast: bool = True):
        return LowPrecision.of(matrix, require_fast=False)

"""Typed tags are always reported: each with its score and its rank among all ranked tags."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdl_core.scoring import ranks_of, top_k_indices
from sdl_core.tagger import Tagger, TypedTag
from tests.conftest import make_photo


def brute_force_ranks(scores: list[float], rows: list[int]) -> list[int]:
    """Rank = place in the list sorted by (-score, row), counted from 1."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    place = {row: p for p, row in enumerate(order, 1)}
    return [place[r] for r in rows]


@pytest.mark.parametrize("seed", range(5))
def test_ranks_match_a_brute_force_ranking_of_random_scores(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    scores = rng.normal(size=n).astype(np.float32)
    rows = [int(r) for r in rng.choice(n, size=min(n, 100), replace=False)]
    assert ranks_of(torch.from_numpy(scores), rows) == brute_force_ranks(scores.tolist(), rows)


@pytest.mark.parametrize("seed", range(5))
def test_ties_rank_in_row_order_and_top_k_agrees(seed):
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.integers(0, 4, size=40).astype(np.float32))  # many exact ties
    rows = list(range(40))
    ranks = ranks_of(scores, rows)
    assert ranks == brute_force_ranks(scores.tolist(), rows)
    assert sorted(ranks) == list(range(1, 41))  # ties still give distinct places
    full = top_k_indices(scores, 0).tolist()
    assert [full.index(r) + 1 for r in rows] == ranks
    for k in (1, 5, 13, 39):  # a tie straddles the cut for most k: the lower rows win it
        top = top_k_indices(scores, k).tolist()
        assert top == full[:k]
        assert sorted(r for r, rank in zip(rows, ranks) if rank <= k) == sorted(top)


def test_top_k_indices_of_a_batch_is_each_rows_own():
    scores = torch.tensor([[0.1, 0.3, 0.3, 0.0], [1.0, 1.0, 2.0, 0.5]])
    assert top_k_indices(scores, 2).tolist() == [[1, 2], [2, 0]]


def test_ranks_of_nothing_is_empty():
    assert ranks_of(torch.zeros(3), []) == []


@pytest.fixture
def tagger(sdl_model, toy_vocab):
    return Tagger(sdl_model, toy_vocab)


def full_ranking(tagger: Tagger, extra: list[str], only_extra: bool = False) -> list[str]:
    return [t.tag for t in tagger.tag(make_photo(), extra_tags=extra, top_k=0, only_extra=only_extra)]


def test_every_typed_tag_with_a_vector_is_reported_in_the_order_typed(tagger):
    extra = ["Sky", "zebra", "cat", "boat"]
    everything = full_ranking(tagger, extra)
    result = tagger.tag(make_photo(), extra_tags=extra, top_k=2)
    assert [t.tag for t in result.typed] == ["sky", "cat", "boat"]  # typed order; zebra has no vector
    assert result.not_in_vocabulary == ["zebra"] and result.ranked == len(everything) == 8
    shown = {t.tag for t in result.tags}
    scores = {t.tag: t.score for t in tagger.tag(make_photo(), extra_tags=extra, top_k=0)}
    for t in result.typed:
        assert isinstance(t, TypedTag) and t.typed
        assert t.rank == everything.index(t.tag) + 1
        assert t.score == pytest.approx(scores[t.tag])
        assert t.in_top_k == (t.tag in shown) == (t.rank <= 2)
    assert result.typed_outside == [t for t in result.typed if t.rank > 2]
    assert len(result.typed_outside) >= 1  # three typed tags, two places


def test_a_typed_tag_also_in_the_vocabulary_keeps_its_row_and_seen_flag(tagger):
    result = tagger.tag(make_photo(), extra_tags=["house", "dog"], top_k=1)
    everything = full_ranking(tagger, [])
    assert result.ranked == 8  # nothing added: both are vocabulary tags
    house, dog = result.typed
    assert (house.tag, house.seen, dog.tag, dog.seen) == ("house", False, "dog", True)
    assert [house.rank, dog.rank] == [everything.index("house") + 1, everything.index("dog") + 1]


def test_only_extra_ranks_among_the_typed_tags_only(tagger):
    extra = ["sky", "boat", "tree"]
    everything = full_ranking(tagger, extra, only_extra=True)
    result = tagger.tag(make_photo(), extra_tags=extra, only_extra=True, top_k=1)
    assert result.ranked == 3 and sorted(t.rank for t in result.typed) == [1, 2, 3]
    assert {t.tag: t.rank for t in result.typed} == {tag: everything.index(tag) + 1 for tag in extra}
    assert [t.tag for t in result.tags] == [everything[0]]


def test_tag_files_and_analyze_report_typed_tags(tagger, tmp_path):
    path = tmp_path / "p.png"
    make_photo().save(path)
    alone = tagger.tag(path, extra_tags=["sky", "cat"], top_k=1)
    [(_, from_files)] = list(tagger.tag_files([path], extra_tags=["sky", "cat"], top_k=1))
    analysis = tagger.analyze(path, extra_tags=["sky", "cat"], top_k=1)
    for result in (from_files, analysis.tags):
        assert [(t.tag, t.rank, t.in_top_k) for t in result.typed] == \
            [(t.tag, t.rank, t.in_top_k) for t in alone.typed]


def test_no_typed_tags_means_an_empty_list(tagger):
    result = tagger.tag(make_photo(), top_k=3)
    assert result.typed == [] and result.typed_outside == []


def test_to_dict_carries_typed_with_rank_and_score(tagger):
    d = tagger.tag(make_photo(), extra_tags=["sky"], top_k=1).to_dict()
    json.dumps(d)
    [sky] = d["typed"]
    assert set(sky) == {"tag", "score", "rank", "seen", "principal", "typed", "approximate", "in_top_k"}
    assert sky["tag"] == "sky" and 1 <= sky["rank"] <= d["ranked"] == 8


def test_min_score_filtering_moves_typed_tags_it_hides_outside(tagger):
    from sdl_core.cli.tag import above
    result = tagger.tag(make_photo(), extra_tags=["sky", "cat", "boat"], top_k=0)
    cut = sorted(t.score for t in result.typed)[1]  # the best two typed tags stay, the worst goes
    kept = above(result, cut)
    assert all(t.score >= cut for t in kept.tags) and len(kept.tags) < len(result.tags)
    assert [t.tag for t in kept.typed_outside] == [t.tag for t in result.typed if t.score < cut]
    assert [t.rank for t in kept.typed] == [t.rank for t in result.typed]  # ranks are of the full order
    assert above(result, None) is result

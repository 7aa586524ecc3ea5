"""The diversity step: no two near-equal tags in a top-k, typed tags always kept, scores untouched."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sdl_core import Tagger
from sdl_core.diversity import diverse_top_k
from sdl_core.vocab import Vocabulary
from sdl_core.wordvec import unit_rows
from tests.conftest import make_photo, make_sdl_model


def _vectors(*rows: list[float]) -> torch.Tensor:
    return torch.from_numpy(unit_rows(np.array(rows, dtype=np.float32)))


# a and a2 are near-equal (cosine 0.995); b and c point elsewhere
VECTORS = _vectors([1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 0, 1])
SCORES = torch.tensor([0.9, 0.8, 0.5, 0.4])


def test_near_duplicate_gives_its_place_to_the_next_tag():
    assert diverse_top_k(SCORES, VECTORS, 2, max_cosine=0.9) == [0, 2]
    assert diverse_top_k(SCORES, VECTORS, 3, max_cosine=0.9) == [0, 2, 3]


def test_threshold_above_the_pair_keeps_both():
    assert diverse_top_k(SCORES, VECTORS, 2, max_cosine=0.999) == [0, 1]


def test_typed_tags_are_never_skipped():
    keep = np.array([False, True, False, False])
    assert diverse_top_k(SCORES, VECTORS, 2, max_cosine=0.9, keep=keep) == [0, 1]


def test_all_or_none_asked_returns_plain_score_order():
    for k in (0, 4, 9):
        assert diverse_top_k(SCORES, VECTORS, k, max_cosine=0.9) == [0, 1, 2, 3]


def test_too_many_duplicates_fill_up_in_score_order():
    same = _vectors([1, 0, 0], [1, 0.01, 0], [1, 0.02, 0], [1, 0.03, 0])
    assert diverse_top_k(SCORES, same, 3, max_cosine=0.5) == [0, 1, 2]


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="max_cosine"):
        diverse_top_k(SCORES, VECTORS, 2, max_cosine=1.5)


def _tagger(max_cosine: float | None, vectors: torch.Tensor = VECTORS) -> Tagger:
    model = make_sdl_model(k=2, d=3)
    extra = {} if max_cosine is None else {"max_tag_cosine": max_cosine}
    model.config = dataclasses.replace(model.config, extra=extra)
    vocab = Vocabulary(["a", "a2", "b", "c"], vectors.numpy(), np.ones(4, bool))
    return Tagger(model, vocab, optimize=False)


def _best_pair_first(photo) -> torch.Tensor:
    """Vocabulary vectors where the near-equal pair a, a2 scores best on ``photo``."""
    mean = _tagger(None).encode([photo]).vectors[0].mean(0)
    best = torch.nn.functional.normalize(mean, dim=0)
    other = torch.nn.functional.normalize(best + 0.05 * torch.tensor([1.0, -1.0, 0.5]), dim=0)
    return torch.stack([best, other, -best, torch.nn.functional.normalize(torch.tensor([1.0, 1.0, 1.0]), dim=0)])


def test_tagger_uses_the_models_threshold_and_keeps_scores():
    photo = make_photo()
    vectors = _best_pair_first(photo)
    plain = _tagger(None, vectors).tag(photo, top_k=0)
    order = [t.tag for t in plain]
    assert set(order[:2]) == {"a", "a2"}
    shown = [t.tag for t in _tagger(0.9, vectors).tag(photo, top_k=2)]
    assert shown == [order[0], order[2]]  # the near-equal runner-up gives its place to the next tag
    full = _tagger(0.9, vectors).tag(photo, top_k=0)  # all tags asked: nothing skipped, same scores
    assert [(t.tag, t.score) for t in full] == [(t.tag, t.score) for t in plain]
    typed = _tagger(0.9, vectors).tag(photo, extra_tags=[order[1]], top_k=2)
    assert [t.tag for t in typed] == order[:2]  # a typed tag is never skipped

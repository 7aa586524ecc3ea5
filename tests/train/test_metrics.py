"""Metrics against hand-computed cases and scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from train.metrics import (average_precision, evaluate_zsl_gzsl, format_table, mean_average_precision,
                           precision_recall_f1_at_k)


def test_ap_hand_computed():
    # ranking: pos, neg, pos, neg -> AP = (1/1 + 2/3) / 2
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
    targets = torch.tensor([[1], [0], [1], [0]])
    assert float(average_precision(scores, targets)[0]) == pytest.approx((1 + 2 / 3) / 2)


def test_ap_ties_form_one_threshold():
    # the top two tie (one pos, one neg): precision there is 1/2 for the first recall step
    scores = torch.tensor([[0.5], [0.5], [0.2]])
    targets = torch.tensor([[0], [1], [1]])
    assert float(average_precision(scores, targets)[0]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_label_without_positives_is_nan_and_left_out_of_map():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.3]])
    targets = torch.tensor([[1, 0], [0, 0]])
    ap = average_precision(scores, targets)
    assert float(ap[0]) == 1.0 and math.isnan(float(ap[1]))
    assert mean_average_precision(scores, targets) == 1.0


@pytest.mark.parametrize("seed,labels", [(s, 7) for s in range(6)] + [(6, 150)])
def test_ap_equals_sklearn(seed, labels):
    """(150 labels: more than one chunk of AP_COLUMNS.)"""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(40, labels)).astype(float) if seed % 2 else rng.normal(size=(40, labels))
    targets = rng.random((40, labels)) < 0.25
    targets[0, :] = True
    ours = average_precision(torch.tensor(scores), torch.tensor(targets)).numpy()
    theirs = [average_precision_score(targets[:, j], scores[:, j]) for j in range(labels)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def test_precision_recall_f1_at_k_hand_computed():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.9]])
    targets = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])
    res = precision_recall_f1_at_k(scores, targets, k=2)
    # image 0: top2 = {0, 1} -> 1 TP; image 1: top2 = {3, 2} -> 1 TP. P = 2/4, R = 2/3
    assert res.precision == pytest.approx(0.5) and res.recall == pytest.approx(2 / 3)
    assert res.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_zsl_uses_unseen_columns_and_images_with_an_unseen_positive():
    seen = np.array([True, True, False, False])
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.2],   # unseen positive: tag 2, ranked first among unseen
                           [0.1, 0.9, 0.3, 0.7],   # unseen positive: tag 2, ranked second among unseen
                           [0.5, 0.5, 0.9, 0.9]])  # only a seen positive: not in ZSL
    targets = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 0]])
    res = evaluate_zsl_gzsl(scores, targets, seen, ks=(1,))
    assert res["zsl"].images == 2 and res["gzsl"].images == 3 and res["zsl"].labels == 1
    assert res["zsl"].at_k[1].precision == pytest.approx(0.5)  # one of the two images has tag 2 on top
    # ZSL AP of tag 2 over the two images: both positive -> 1.0
    assert res["zsl"].map == pytest.approx(1.0)
    table = format_table(res, ks=(1,))
    assert "ZSL" in table and "GZSL" in table and "50.0" in table

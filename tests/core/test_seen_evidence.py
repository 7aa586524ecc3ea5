"""The default's seen-tag gate (``min_seen_evidence``): a seen vocabulary tag is shown only when
the classifier gives its classes some probability; scores, typed tags and channel words are
never affected, and the gate survives a checkpoint round trip."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdl_core import Tagger
from sdl_core.checkpoint import load_checkpoint, save_checkpoint
from sdl_core.default_model import MIN_SEEN_EVIDENCE, SEEN_CLASSES, class_names
from sdl_core.model import Encoded
from sdl_core.evidence_gate import evidence_matrix, unsupported

ROOT = Path(__file__).resolve().parents[2]
COFFEE = ROOT / "demo" / "examples" / "coffee.jpg"


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger.from_pretrained()


def test_shipped_evidence_names_real_classes():
    evidence = json.loads(SEEN_CLASSES.read_text(encoding="utf-8"))
    names = class_names()
    assert [names[i] for i in evidence["drum"]] == ["drum"]
    assert "tabby" in [names[i] for i in evidence["cat"]] and len(evidence["animal"]) > 300
    assert "person" not in evidence  # a channel word: the face detector is its evidence
    assert all(0 <= i < 1000 for classes in evidence.values() for i in classes)


def test_gate_hides_seen_tags_without_evidence(tagger):
    with_gate = tagger.tag(str(COFFEE), top_k=10)
    open_tagger = Tagger(tagger.model, dataclasses.replace(tagger.vocabulary, evidence_classes={}),
                         tagger.word_space)
    without = open_tagger.tag(str(COFFEE), top_k=10)
    shown = [t.tag for t in with_gate]
    assert "coffee" in shown  # espresso (0.9) is its evidence
    hidden = [t.tag for t in without if t.tag not in shown]
    assert hidden, "the gate changed nothing on the espresso photo"
    assert all(tagger.vocabulary.is_seen(t) for t in hidden)
    every = {t.tag: t.score for t in tagger.tag(str(COFFEE), top_k=0)}
    assert all(every[t.tag] == pytest.approx(t.score) for t in without)  # scores are the same
    assert len(every) == len(tagger.vocabulary)  # top_k=0 still ranks every tag


def test_typed_seen_tags_are_never_hidden(tagger):
    result = tagger.tag(str(COFFEE), extra_tags=["drum"], top_k=3)
    typed = result.typed[0]
    assert typed.tag == "drum" and typed.rank >= 1
    shown = tagger.tag(str(COFFEE), extra_tags=["drum"], top_k=len(tagger.vocabulary) // 2)
    assert "drum" in [t.tag for t in shown]


def test_unsupported_is_a_threshold_on_peak_mass():
    evidence = torch.zeros(4, 3)
    evidence[0, 0] = evidence[1, 0] = evidence[2, 1] = 1.0  # a: classes 0, 1; b: class 2; c: none
    peaks = torch.tensor([[0.006, 0.006, 0.0, 0.9], [0.0, 0.0, 0.5, 0.0]])
    encoded = Encoded(vectors=torch.zeros(2, 1, 2))
    encoded.class_peaks = peaks
    hidden = unsupported(evidence, encoded, 0.01, np.zeros(3, bool))
    assert hidden.tolist() == [[False, True, False], [True, False, False]]
    assert unsupported(evidence, encoded, 0.0, np.zeros(3, bool)) is None
    no_classifier = Encoded(vectors=torch.zeros(3, 1, 2))
    assert unsupported(evidence, no_classifier, 0.01, np.zeros(3, bool)) is None  # no classifier: no gate


def test_evidence_matrix_and_typed_rows(tagger):
    vocab = tagger.vocabulary
    matrix = evidence_matrix(vocab)
    assert matrix.shape[1] == len(vocab)  # the vocabulary's rows; a request's typed additions come after
    assert matrix[:, vocab.index("cat")].sum() > 10 and matrix[:, vocab.index("sky")].sum() == 0
    encoded = Encoded(vectors=torch.zeros(1, 1, 2))
    encoded.class_peaks = torch.zeros(1, 1000)  # the classifier saw nothing
    typed = np.zeros(len(vocab) + 2, bool)
    typed[vocab.index("drum")] = True
    hidden = unsupported(matrix, encoded, 0.01, typed)[0]
    assert hidden[vocab.index("cat")] and not hidden[vocab.index("drum")] and not hidden[vocab.index("sky")]
    assert hidden.shape[0] == len(vocab) + 2 and not hidden[-2:].any()  # typed additions: never hidden


def test_select_and_checkpoint_keep_the_evidence(tagger, tmp_path):
    part = tagger.vocabulary.select(["cat", "drum", "sky"])
    assert set(part.evidence_classes) == {"cat", "drum"}
    path = save_checkpoint(tagger.model, tagger.vocabulary, tmp_path / "default.safetensors")
    _, vocab = load_checkpoint(path)
    assert vocab.evidence_classes == tagger.vocabulary.evidence_classes
    assert vocab.trained_names == tagger.vocabulary.trained_names
    assert tagger.config.extra["min_seen_evidence"] == MIN_SEEN_EVIDENCE

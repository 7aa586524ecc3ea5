"""The offline default model: loads with no network, tags real photos sensibly, maps
follow the object, survives a checkpoint round trip, and its shipped assets are sound."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdl_core import Tagger
from sdl_core.checkpoint import build_model, load_checkpoint, save_checkpoint
from sdl_core.colour import CHANNELS
from sdl_core.conse import ConSEModel, load_efficientnet_lite_weights
from sdl_core.default_model import (CLASS_VECTORS, NAME, SEEN_CLASSES, UNSEEN, VOCABULARY, build, class_names,
                                    default_config, read_class_vectors)
from sdl_core.errors import CheckpointError
from sdl_core.registry import resolve_name
from sdl_core.vocab import read_tag_file
from tests.conftest import load_tool

ROOT = Path(__file__).resolve().parents[2]
COFFEE = ROOT / "demo" / "examples" / "coffee.jpg"
COFFEE_LIKE = {"coffee", "cafe", "mug", "restaurant", "kitchen"}


def build_tool():
    """tools/build_class_vectors.py (tools/ is not a package)."""
    return load_tool("build_class_vectors")


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger.from_pretrained()


def test_default_loads_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the default model tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    build.cache_clear()
    tagger = Tagger.from_pretrained()
    assert tagger.config.kind == "conse" and tagger.name == NAME
    assert resolve_name("default") == NAME
    assert isinstance(tagger.model, ConSEModel)
    assert Tagger.from_pretrained().model is tagger.model  # built once per process


def test_vocabulary_and_seen_flags(tagger):
    vocab = tagger.vocabulary
    assert vocab.tags == read_tag_file(VOCABULARY)
    assert {"dog", "birds", "cat", "vehicle", "coffee"} <= set(vocab.seen_tags)
    assert {"sky", "beach", "sunset", "clouds", "fog"} <= set(vocab.unseen_tags)
    assert set(read_tag_file(UNSEEN)) == set(vocab.unseen_tags)
    assert tagger.config.extra["max_tag_cosine"] < 1  # the default shows no near-duplicates


def test_typed_imagenet_class_names_are_seen_though_not_listed(tagger):
    """The photo vocabulary leaves out the 1,000 class names, yet the classifier was trained on them."""
    assert "espresso" not in tagger.vocabulary and "tripod" not in tagger.vocabulary
    result = tagger.tag(COFFEE, extra_tags=["espresso", "tripods", "lake"], top_k=3)
    seen = {t.tag: t.seen for t in result.typed}
    assert seen == {"espresso": True, "tripods": True, "lake": False}


def test_coffee_photo_gets_coffee_tags(tagger):
    top5 = [t.tag for t in tagger.tag(COFFEE, top_k=5)]
    assert top5[0] in COFFEE_LIKE, top5
    assert len(COFFEE_LIKE.intersection(top5)) >= 2, top5  # beside the photo's colours (orange, red)
    typed = tagger.tag(COFFEE, extra_tags=["espresso", "zebra"], only_extra=True, top_k=0)
    assert [t.tag for t in typed] == ["espresso", "zebra"]


def _pasted(position: str) -> Image.Image:
    """The coffee photo shrunk into one corner of a plain grey canvas."""
    canvas = Image.new("RGB", (448, 448), (128, 128, 128))
    cup = Image.open(COFFEE).convert("RGB").resize((200, 200))
    canvas.paste(cup, (0, 0) if position == "top_left" else (248, 248))
    return canvas


def test_maps_are_shaped_right_and_follow_the_object(tagger):
    k = tagger.config.k
    for position in ("top_left", "bottom_right"):
        analysis = tagger.analyze(_pasted(position), extra_tags=["cup", "espresso"], only_extra=True, top_k=0)
        maps = analysis.principal_maps
        assert maps.ndim == 3 and maps.shape[0] == k and maps.shape[1] == maps.shape[2] >= 3
        assert set(analysis.tag_maps) == {"cup", "espresso"}
        assert all(m.shape == maps.shape for m in analysis.tag_maps.values())
        assert len(analysis.principal_tags) == k
        side = maps.shape[1]
        winner = next(t.principal for t in analysis.tags if t.tag == "cup")
        for m in list(maps) + [analysis.tag_maps["cup"][winner]]:
            i, j = np.unravel_index(np.argmax(m), m.shape)
            near_origin = i < side / 2 and j < side / 2
            near_end = i >= side / 2 and j >= side / 2
            assert near_origin if position == "top_left" else near_end, (position, i, j)


def test_checkpoint_round_trip_gives_identical_scores(tagger, tmp_path):
    path = save_checkpoint(tagger.model, tagger.vocabulary, tmp_path / "default.safetensors")
    model, vocab = load_checkpoint(path)
    assert isinstance(model, ConSEModel) and model.config == tagger.config
    assert vocab.tags == tagger.vocabulary.tags and (vocab.seen == tagger.vocabulary.seen).all()
    reloaded = Tagger.from_pretrained(path)
    a = tagger.tag(COFFEE, extra_tags=["latte"], top_k=0)
    b = reloaded.tag(COFFEE, extra_tags=["latte"], top_k=0)
    assert [(t.tag, t.score, t.seen, t.principal) for t in a] == [(t.tag, t.score, t.seen, t.principal) for t in b]


def test_model_builds_without_weights_and_checks_its_config():
    model = build_model(default_config())
    assert isinstance(model, ConSEModel) and float(model.class_vectors.abs().sum()) == 0.0
    with torch.inference_mode():
        encoded = model.encode(torch.zeros(2, 3, 224, 224), with_maps=True)
    d = 256 + len(CHANNELS) + 1  # WordLlama plus the colour channels and the person channel
    assert encoded.vectors.shape == (2, 3, d) and encoded.local.shape[:3] == (2, 3, d)
    bad = default_config().__class__.from_dict({**json.loads(default_config().to_json()), "kind": "sdl"})
    with pytest.raises(ValueError, match="conse"):
        ConSEModel(bad)


def test_foreign_weights_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match="tensors"):
        load_efficientnet_lite_weights(ConSEModel(default_config()).classifier, path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_efficientnet_lite_weights(ConSEModel(default_config()).classifier, tmp_path / "junk.pth")


def test_shipped_class_vectors_are_unit_and_named():
    vectors = read_class_vectors()
    assert vectors.shape == (1000, 256)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(1000), atol=2e-3)
    names = class_names()
    assert names[0] == "tench" and names[281] == "tabby" and len(names) == 1000
    with pytest.raises(CheckpointError, match="class vectors"):
        read_class_vectors(Path(CLASS_VECTORS).with_name("missing.safetensors"))


WORDNET = Path("/usr/share/wordnet")


@pytest.mark.skipif(not (WORDNET / "data.noun").is_file(), reason="WordNet (Debian wordnet-base) is not installed")
def test_build_tool_reproduces_shipped_class_vectors():
    tool = build_tool()
    from sdl_core.wordvec import load_word_space

    synsets = tool.read_wordnet_nouns(WORDNET)
    classes = tool.imagenet_synsets()
    first_sense = tool.dv.read_first_senses(WORDNET)
    picked = [0, 281, 504, 967, 971]  # tench, tabby, coffee mug, espresso, bubble
    fresh = tool.class_vectors(load_word_space("wordllama"), synsets, [classes[i] for i in picked], first_sense)
    shipped = read_class_vectors()[picked].numpy()
    assert np.allclose(fresh, shipped, atol=2e-3)
    assert [synsets[classes[i]].lemmas[0] for i in (281, 967)] == ["tabby", "espresso"]
    levels = tool.hypernym_levels(synsets, classes[281], 3)
    assert [synsets[level[0]].lemmas[0] for level in levels] == ["domestic cat", "cat", "feline"]
    # the polysemy guard: bubble's hypernyms "ball" and "sphere" are not what those words first mean
    # each seen tag's evidence classes (the tagger's seen-tag rule) are what the tool computes
    shipped_evidence = json.loads(SEEN_CLASSES.read_text(encoding="utf-8"))
    tags = ["drum", "cat", "plants", "person"]
    fresh_evidence = tool.evidence_classes(tags, {"drum", "cat", "plants", "person"}, synsets, classes,
                                           tool.dv.read_noun_senses(WORDNET), tool.read_noun_exceptions(WORDNET))
    assert fresh_evidence == {t: shipped_evidence[t] for t in tags[:3]}  # person reads the face channel
    levels = tool.hypernym_levels(synsets, classes[971], 3)
    assert [[tool.sense_name(synsets[h], first_sense) for h in level] for level in levels] == [["globule"], [None], [None]]


def test_build_tool_singulars():
    tool = build_tool()
    exceptions = {"geese": "goose"}
    assert "bird" in tool.noun_forms("birds", exceptions)
    assert "goose" in tool.noun_forms("geese", exceptions)
    assert "sea horse" in tool.noun_forms("sea horses", exceptions)
    assert "butterfly" in tool.noun_forms("butterflies", exceptions)

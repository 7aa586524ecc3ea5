"""The default vocabulary: cleaned photo-tag words, seen/unseen by WordNet, consistent with the
shipped class vectors and reproducible by tools/build_class_vectors.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdl_core.colour import channel_of
from sdl_core.default_model import CLASS_VECTORS, UNSEEN, VOCABULARY, read_class_vectors
from sdl_core.safe_pickle import safe_load_pickle
from sdl_core.vocab import read_tag_file
from tests.conftest import REFERENCE, load_tool, needs_reference

dv = load_tool("default_vocabulary")
tool = load_tool("build_class_vectors")

WORDNET = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(not (WORDNET / "index.noun").is_file(),
                                   reason="WordNet (Debian wordnet-base) is not installed")
EXCEPTIONS = {"men": "man", "geese": "goose"}


def forms(tag: str) -> list[str]:
    return tool.noun_forms(tag, EXCEPTIONS)


@pytest.fixture(scope="module")
def shipped() -> tuple[list[str], set[str]]:
    return read_tag_file(VOCABULARY), set(read_tag_file(UNSEEN))


def test_shipped_vocabulary_is_clean(shipped):
    tags, unseen = shipped
    source = set(dv.read_words())
    assert 300 <= len(tags) <= len(source) and unseen < set(tags)
    assert set(tags) <= source and not set(tags) & (dv.PLACES | dv.NOT_VISIBLE | dv.AMBIGUOUS | set(dv.SPELLING))
    plural_pairs = [(t, f) for t in tags for f in forms(t)[1:] if f in tags and t not in dv.DISTINCT_PLURALS]
    assert plural_pairs == []
    assert {"sky", "lake", "fog", "sunset", "grass"} <= unseen
    assert {"dog", "flowers", "vehicle", "church"} <= set(tags) - unseen


def test_shipped_vocabulary_fits_the_model(shipped):
    """Every tag has at most MAX_TOKENS WordLlama tokens; no unseen tag is a hub of the shipped
    class vectors (what the build checked, recomputed from the files the model loads)."""
    from sdl_core.wordvec import load_word_space

    tags, unseen = shipped
    word_tags = [t for t in tags if channel_of(t) is None]  # colour words are scored from pixels
    assert max(tool.token_counts(word_tags)) <= dv.MAX_TOKENS
    vectors, found = load_word_space("wordllama").embed(word_tags)
    assert found.all()
    shares = dv.hub_share(read_class_vectors(CLASS_VECTORS).numpy(), vectors)
    assert max(s for t, s in zip(word_tags, shares) if t in unseen) <= dv.HUB_SHARE
    assert {"monochrome", "blue", "orange"} <= unseen  # pixel words: kept and never seen


def test_merge_plurals_prefers_the_concept_form_then_the_singular():
    words = ["bird", "birds", "bridge", "bridges", "man", "men", "wood", "woods", "sky"]
    assert dv.merge_plurals(words, ["birds"], forms) == ["birds", "bridge", "man", "wood", "woods", "sky"]


def test_clean_words_says_why_each_word_went():
    kept, dropped = dv.clean_words(["paris", "best", "craft", "colour", "lake", "lakes", "fog"], [], forms)
    assert kept == ["lake", "fog"]
    assert dropped["place"] == ["paris"] and dropped["not visible"] == ["best"]
    assert dropped["ambiguous"] == ["craft"] and dropped["spelling"] == ["colour"] and dropped["plural"] == ["lakes"]


def test_seen_by_class_name_or_first_sense():
    first = {"dog": "d1", "wind": "w1", "flower": "f1", "tiger": "person"}
    covered = {"d1", "f1"}
    seen = dv.seen_tags(["dog", "wind", "flowers", "tiger", "sky"], {"tiger"}, first, covered, forms)
    assert seen == {"dog", "flowers", "tiger"}


def test_filter_vectors_drops_sub_word_bags_then_unseen_hubs_until_none_is_left():
    classes = np.eye(3, dtype=np.float32)
    tags = ["sky", "giraffe", "petals", "dog", "pups"]
    vectors = np.array([[0, 0, 1], [1, 1, 1], [1, 0.9, 0], [0, 1, 0.2], [1, 0.8, 0]], dtype=np.float32)
    shares = dv.hub_share(classes, vectors[[0, 2, 3, 4]], top=dv.HUB_TOP)
    assert shares.max() == 1.0  # with 4 tags, each is among every class's 10 nearest
    kept, dropped = dv.filter_vectors(tags, {"dog", "sky"}, [1, 3, 2, 1, 1], vectors, classes)
    assert kept == ["sky", "dog"] and dropped == {"sub-word vector": ["giraffe"], "hub": ["petals", "pups"]}


def test_hub_share_counts_nearest_tags_per_class():
    classes = np.eye(3, dtype=np.float32)
    tags = np.array([[1, 1, 1], [2, 0, 0], [0, 0, 0.1]], dtype=np.float32)
    assert dv.hub_share(classes, tags, top=1).tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_first_senses_read_from_index_noun(tmp_path):
    (tmp_path / "index.noun").write_text("  1 licence line\nleopard n 2 3 @ ~ #m 2 0 14765422 02128385  \n"
                                         "sea_horse n 1 1 @ 1 0 02604954  \n", encoding="utf-8")
    assert dv.read_first_senses(tmp_path) == {"leopard": "14765422", "sea horse": "02604954"}


@needs_reference
def test_source_words_are_the_authors_nus_wide_tags():
    classes = safe_load_pickle(REFERENCE / "NUS_WIDE" / "classes.pickle")
    assert dv.read_words() == [str(classes[i]) for i in range(len(classes))]


@needs_wordnet
def test_build_tool_reproduces_the_shipped_vocabulary(shipped):
    synsets = tool.read_wordnet_nouns(WORDNET)
    classes = tool.imagenet_synsets()
    vocab = tool.build_vocabulary(synsets, classes, dv.read_first_senses(WORDNET), tool.read_noun_exceptions(WORDNET),
                                  read_class_vectors(CLASS_VECTORS).numpy(), dv.read_words())
    tags, unseen = shipped
    assert vocab.tags == tags and set(vocab.tags) - vocab.seen == unseen
    assert "wind" in unseen and "georgia" in vocab.dropped["place"] and "petals" in vocab.dropped["hub"]

"""Tagger: typed tags, not-in-vocabulary, seen flags, batching, word-space checks, analysis."""
from pathlib import Path

import numpy as np
import pytest

from sdl_core.config import WordSpaceInfo
from sdl_core.errors import ImageError, TagInputError, WordSpaceError
from sdl_core.tagger import Tagger
from sdl_core.vocab import check_word_space
from sdl_core.vocab import Vocabulary
from sdl_core.wordvec import FastTextSpace, TableSpace
from tests.conftest import make_photo, make_sdl_model, make_vocab


@pytest.fixture
def tagger(sdl_model, toy_vocab):
    return Tagger(sdl_model, toy_vocab)


def test_tag_ranks_the_whole_vocabulary(tagger, toy_vocab):
    result = tagger.tag(make_photo(), top_k=0)
    assert len(result) == len(toy_vocab)
    scores = [t.score for t in result]
    assert scores == sorted(scores, reverse=True)
    assert {t.tag for t in result} == set(toy_vocab.tags)
    assert all(0 <= t.principal < 3 for t in result)


def test_unseen_tags_are_starred(tagger):
    result = {t.tag: t for t in tagger.tag(make_photo(), top_k=0)}
    assert not result["boat"].seen and result["boat"].display == "*boat*"
    assert result["cat"].seen and result["cat"].display == "cat"


def test_score_is_max_over_k_of_dot_products(tagger, toy_vocab):
    img = make_photo()
    vectors = tagger.encode([img]).vectors[0].numpy()
    expected = (vectors @ toy_vocab.vectors.T).max(0)
    got = {t.tag: t.score for t in tagger.tag(img, top_k=0)}
    np.testing.assert_allclose([got[t] for t in toy_vocab.tags], expected, atol=1e-5)


def test_typed_tags_not_in_a_table_space_are_reported(tagger):
    result = tagger.tag(make_photo(), extra_tags=["Cat", "zebra", "sky"], top_k=0)
    assert result.not_in_vocabulary == ["zebra"]
    typed = {t.tag for t in result if t.typed}
    assert typed == {"cat", "sky"}


def test_only_extra_ranks_only_typed_tags(tagger):
    result = tagger.tag(make_photo(), extra_tags=["sky", "boat"], only_extra=True, top_k=0)
    assert sorted(t.tag for t in result) == ["boat", "sky"]
    with pytest.raises(TagInputError, match="at least one"):
        tagger.tag(make_photo(), extra_tags=[], only_extra=True)


def test_fasttext_space_embeds_new_words(fasttext_bin):
    space = FastTextSpace(fasttext_bin)
    tags = ["cat", "dog", "car", "tree", "sky", "water"]
    vocab = Vocabulary.from_tags(tags, space, seen=tags[:4])
    model = make_sdl_model(d=16, space=space.info)
    tagger = Tagger(model, vocab, space)
    result = tagger.tag(make_photo(), extra_tags=["kitten", "hot dog"], top_k=0)
    new = {t.tag: t for t in result if t.typed}
    assert set(new) == {"kitten", "hot dog"} and result.not_in_vocabulary == []
    assert not new["kitten"].seen  # a typed word outside the training tags is unseen


def test_word_space_of_another_dimension_is_refused(fasttext_bin, sdl_model):
    vocab = make_vocab(d=16)
    other = TableSpace(WordSpaceInfo("toy-space-16", 8), ["a"], np.ones((1, 8)))
    with pytest.raises(WordSpaceError, match="8-d"):
        Tagger(sdl_model, vocab, other)


def test_unrelated_word_space_of_same_dimension_is_refused(fasttext_bin):
    """Two 16-d spaces are not the same space: the vocabulary vectors must agree."""
    space = FastTextSpace(fasttext_bin)
    model = make_sdl_model(d=16)
    random_vocab = make_vocab(tags=["cat", "dog", "car", "tree"], unseen=())
    with pytest.raises(WordSpaceError, match="mean cosine"):
        Tagger(model, random_vocab, space)
    good_vocab = Vocabulary.from_tags(["cat", "dog", "car", "tree"], space, seen=True)
    assert check_word_space(space, "anything", 16, good_vocab) > 0.99


def test_batched_equals_one_by_one(tagger):
    images = [make_photo(seed=i) for i in range(3)]
    batched = tagger.tag(images, top_k=0, batch_size=3)
    single = [tagger.tag(img, top_k=0) for img in images]
    for a, b in zip(batched, single):
        assert [t.tag for t in a] == [t.tag for t in b]
        np.testing.assert_allclose([t.score for t in a], [t.score for t in b], atol=1e-4)


def test_bad_image_raises_image_error(tagger, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="bad.jpg"):
        tagger.tag(bad)


def test_tag_files_reports_bad_files_and_tags_the_rest(tagger, tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.png"
        make_photo(seed=i).save(p)
        paths.append(p)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    out = list(tagger.tag_files([paths[0], bad, paths[1], paths[2]], top_k=2, batch_size=2))
    assert [p for p, _ in out].count(str(bad)) == 1
    assert sum(isinstance(r, ImageError) for _, r in out) == 1
    assert sorted(p for p, r in out if not isinstance(r, ImageError)) == sorted(map(str, paths))


@pytest.mark.parametrize("batch_size", [1, 2, 3, 16])
def test_tag_files_yields_in_input_order_with_each_images_own_tags(tagger, tmp_path, batch_size):
    """Batches are read one ahead in a thread: order and pairing must survive it."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"broken")
    paths = []
    for i in range(7):
        p = tmp_path / f"p{i}.png"
        make_photo(seed=10 + i).save(p)
        paths.append(p)
    order = [bad, paths[0], paths[1], bad, paths[2], paths[3], paths[4], paths[5], bad, paths[6]]
    out = list(tagger.tag_files(order, extra_tags=["sky"], top_k=3, batch_size=batch_size))
    assert [p for p, _ in out] == [str(p) for p in order]
    for path, result in out:
        if Path(path) == bad:
            assert isinstance(result, ImageError)
        else:
            alone = tagger.tag(path, extra_tags=["sky"], top_k=3)
            assert result.image == str(path)
            assert [t.tag for t in result] == [t.tag for t in alone]
            np.testing.assert_allclose([t.score for t in result], [t.score for t in alone], atol=1e-4)


def test_analyze_gives_tags_and_exact_maps(tagger):
    analysis = tagger.analyze(make_photo(), extra_tags=["sky"], top_k=4)
    assert len(analysis.tags) == 4
    assert analysis.principal_maps.shape[0] == 3
    for t in analysis.tags:
        maps = analysis.tag_maps[t.tag]
        assert maps.shape[0] == 3
        # the winning vector's map averages to the tag's score (max reduction)
        assert maps[t.principal].mean() == pytest.approx(t.score, abs=1e-4)
    assert sum(len(x) for x in analysis.principal_tags) == 4


def test_custom_vocabulary(tagger, toy_vocab):
    sub = toy_vocab.select(["cat", "boat"])
    result = tagger.tag(make_photo(), vocabulary=sub, top_k=0)
    assert sorted(t.tag for t in result) == ["boat", "cat"]


def test_to_dict_is_json_ready(tagger):
    import json
    d = tagger.tag(make_photo(), top_k=2).to_dict()
    assert set(d["tags"][0]) == {"tag", "score", "seen", "principal", "typed", "approximate"}
    json.dumps(d)

"""Word spaces: fastText .bin (any word), tables (.vec, the authors' vectors), WordLlama; normalisation."""
import numpy as np
import pytest

from sdl_core.config import WordSpaceInfo
from sdl_core.errors import WordSpaceError
from sdl_core.tags import normalize_tag, parse_tags
from sdl_core.wordvec import (AUTHORS_FASTTEXT, WORDLLAMA, FastTextSpace, TableSpace, WordLlamaSpace,
                              fasttext_space_name, load_word_space)


def test_normalize_tag_nfc_case_spaces_stars_controls():
    assert normalize_tag("  Hot\u00a0  DOG ") == "hot dog"
    assert normalize_tag("*Elk*") == "elk"
    assert normalize_tag("cafe\u0301") == "caf\u00e9"  # NFC
    assert normalize_tag("ca\x00t\x1b") == "cat"


def test_parse_tags_splits_on_separators_and_merges_duplicates():
    assert parse_tags("hot dog, Cat;cat\nsea  lion,, ") == ["hot dog", "cat", "sea lion"]
    assert parse_tags("") == [] and parse_tags(None) == []


def test_fasttext_bin_embeds_any_word_with_unit_vectors(fasttext_bin):
    space = FastTextSpace(fasttext_bin)
    assert space.dim == 16 and space.info.name == "fasttext:toy-ft"
    vecs, found = space.embed(["cat", "kittens", "zzqxv-never-seen", "hot dog"])
    assert found.all()  # subwords give every word a vector
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_fasttext_phrase_is_mean_of_word_vectors(fasttext_bin):
    space = FastTextSpace(fasttext_bin)
    (cat, dog), _ = space.embed(["cat", "dog"])
    (phrase,), _ = space.embed(["cat dog"])
    expected = (cat + dog) / np.linalg.norm(cat + dog)
    np.testing.assert_allclose(phrase, expected, atol=1e-5)


def test_embedding_is_cached_and_normalised_once(fasttext_bin):
    space = FastTextSpace(fasttext_bin)
    a, _ = space.embed(["Cat"])
    calls = []
    original = space._embed_new
    space._embed_new = lambda tags: calls.append(tags) or original(tags)
    b, _ = space.embed(["  cat ", "*CAT*"])
    assert calls == [] and np.allclose(a[0], b[0]) and np.allclose(b[0], b[1])


def test_not_a_fasttext_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not fasttext at all")
    with pytest.raises(WordSpaceError, match="not a fastText"):
        FastTextSpace(bad)
    with pytest.raises(WordSpaceError, match="no such"):
        FastTextSpace(tmp_path / "missing.bin")


def test_table_space_reports_unknown_words_and_averages_phrases():
    info = WordSpaceInfo("t", 2)
    space = TableSpace(info, ["hot", "dog", "sea_lion"], np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]]))
    vecs, found = space.embed(["hot dog", "sea lion", "zebra", "hot cat"])
    assert found.tolist() == [True, True, False, False]
    np.testing.assert_allclose(vecs[0], [2 ** -0.5, 2 ** -0.5], atol=1e-6)
    np.testing.assert_allclose(vecs[1], [0.6, 0.8], atol=1e-6)
    assert not vecs[2].any()


def test_vec_file_table(tmp_path):
    path = tmp_path / "tiny.vec"
    path.write_text("3 2\ncat 1 0\ndog 0 2\nbad line\ncar 3 4\n")
    space = load_word_space(path)
    assert space.info == WordSpaceInfo("fasttext:tiny", 2)
    vecs, found = space.embed(["dog", "car", "cow"])
    assert found.tolist() == [True, True, False]
    np.testing.assert_allclose(vecs[1], [0.6, 0.8], atol=1e-6)


def test_vec_file_needs_header(tmp_path):
    path = tmp_path / "bad.vec"
    path.write_text("cat 1 0\n")
    with pytest.raises(WordSpaceError, match="first line"):
        TableSpace.from_vec_file(path)


def test_space_names_follow_files():
    assert fasttext_space_name("/x/crawl-300d-2M-subword.bin") == AUTHORS_FASTTEXT.name
    assert fasttext_space_name("cc.en.300.bin") == "fasttext:cc.en.300"


def test_unknown_space_spec_is_an_error():
    with pytest.raises(WordSpaceError, match="unknown word space"):
        load_word_space("glove.txt")


def test_wordllama_space_loads_offline_and_embeds_phrases():
    space = WordLlamaSpace()
    assert space.info == WORDLLAMA
    vecs, found = space.embed(["dog", "puppy", "hot dog", "carburetor", ""])
    assert found.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(np.linalg.norm(vecs[:4], axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[3]  # related words are closer

"""Word spaces: fastText .bin (any word), tables (.vec, the authors' vectors), WordLlama; normalisation."""
import numpy as np
import pytest

from sdl_core.config import WordSpaceInfo
from sdl_core.errors import WordSpaceError
from sdl_core.tags import normalize_tag, parse_tags
from sdl_core import wordvec
from sdl_core.wordvec import (AUTHORS_FASTTEXT, WORDLLAMA, FastTextSpace, TableSpace, WordLlamaSpace,
                              fasttext_space_name, load_word_space, token_sums, tokenizer_facts,
                              words_tokenize_alone)


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


# --- WordLlama: our tokenize + pool path must give what WordLlama.embed(norm=True) gives ---

#: Typed tags that stress the tokenizer: words, phrases, punctuation, digits, accents, other
#: scripts, emoji (byte fallback, joiners), special-token text, a typed word mark, very long
#: tags, duplicates, and tags with no tokens at all.
TRICKY_TAGS = [
    "dog", "Hot Dog", "sea lion", "the", "a", "mother-in-law", "rock'n'roll!", "c++", "???", "...", "#sunset",
    "4x4 truck", "1984", "route 66 at night", "café au lait", "naïve", "ÅNGSTRÖM", "日本の猫", "кошка", "قطة",
    "🦄", "👩\u200d💻 coder", "emoji🙂inside", "🇫🇷 flag", "<s>", "a<s>b", "</s> x", "x <unk>", "<s>",
    "x\u2581 y", "x\u2581 日本", "x\u2581 1", "\u2581", "\u2581\u2581dog", "tab\tsep", "  many   spaces  ", "a" * 100,
    " ".join(["word"] * 40), "supercalifragilisticexpialidocious", "dog", "Dog", "", "   ", "\u200d",
]


@pytest.fixture(scope="module")
def llama():
    return WordLlamaSpace()


def _library_vectors(space, keys):
    with np.errstate(invalid="ignore", divide="ignore"):  # the library divides 0 by 0 for empty tags
        return space._model.embed(list(keys), norm=True)


def _assert_matches_library(space, raw_tags):
    keys = [normalize_tag(t) for t in raw_tags]
    vecs, found = space.embed(raw_tags)
    ref = _library_vectors(space, keys)
    usable = np.isfinite(ref).all(axis=1) & ref.any(axis=1)
    assert found.tolist() == usable.tolist()
    np.testing.assert_allclose(vecs[found], ref[found], rtol=0, atol=1e-6)
    assert not vecs[~found].any()


def test_wordllama_vectors_equal_the_library(llama):
    _assert_matches_library(llama, TRICKY_TAGS)
    found = llama.embed(TRICKY_TAGS)[1]
    assert found.sum() == len(TRICKY_TAGS) - 3  # "", "   " and the joiner alone normalise to nothing
    _assert_matches_library(llama, TRICKY_TAGS[::-1])  # again: cached now, same answers


def test_wordllama_tokens_equal_the_tokenizer(llama, monkeypatch):
    """Word-by-word tokenizing (with the word cache) gives the tokenizer's exact ids for each tag."""
    assert llama._by_words  # the shipped Llama-2 tokenizer allows the word split
    raw = [" 日本", "1 ", "hot  1", " "]  # not normalised: odd spaces must not be split either
    keys = [normalize_tag(t) for t in TRICKY_TAGS] + raw
    batch = llama._model.tokenizer.encode_batch(keys, add_special_tokens=False)  # padded to the longest
    expected = [[i for i, keep in zip(e.ids, e.attention_mask) if keep] for e in batch]
    for by_words in (True, False):  # the word path, then everything through the whole tokenizer
        monkeypatch.setattr(llama, "_by_words", by_words)
        monkeypatch.setattr(llama, "_word_ids", {})
        for _ in range(2):  # cold, then from the word cache
            ids, counts = llama._token_ids(keys)
            assert counts.sum() == ids.size
            assert [chunk.tolist() for chunk in np.split(ids, np.cumsum(counts)[:-1])] == expected
    assert llama._word_ids  # the word cache was used


def test_wordllama_typed_tags_in_bulk_equal_the_library(llama):
    rng = np.random.default_rng(0)
    words = ["red", "old", "tiny", "cat", "harbour", "x17", "zqvh", "über", "🐈", "2024"]
    tags = [" ".join(rng.choice(words, size=rng.integers(1, 5))) + f" {i}" for i in range(300)]
    _assert_matches_library(llama, tags)


def test_wordllama_tag_whose_tokens_sum_to_zero_has_no_vector(llama, monkeypatch):
    table = llama._table.copy()
    dog = llama._model.tokenizer.encode("dog", add_special_tokens=False).ids
    table[dog] = 0.0
    monkeypatch.setattr(llama, "_table", table)
    vectors = wordvec._unit_vectors(llama._embed_new(["dog", "hot dog", ""]), llama.dim)
    assert vectors[0] is None and vectors[1] is not None and vectors[2] is None


def test_token_sums_add_each_run_in_order():
    table = np.arange(12, dtype=np.float32).reshape(6, 2) ** 2
    ids = np.array([1, 2, 2, 5, 0, 3, 4, 4, 4, 1])
    counts = np.array([3, 0, 1, 5, 0, 1])
    got = token_sums(table, ids, counts)
    ends = np.cumsum(counts)
    expected = np.stack([table[ids[e - n:e]].sum(axis=0) for n, e in zip(counts, ends)])
    np.testing.assert_array_equal(got, expected)
    assert not token_sums(table, ids[:0], np.zeros(3, dtype=np.intp)).any()


def test_word_split_is_refused_for_other_tokenizers(llama):
    mark = "\u2581"
    facts = tokenizer_facts(llama._tokenizer)
    assert facts["pre_tokenizer"] is None and len(facts["model"]["vocab"]) == 32000
    assert words_tokenize_alone(facts) and not words_tokenize_alone(tokenizer_facts(object()))
    llama_like = {"pre_tokenizer": None, "model": {"type": "BPE", "vocab": {mark + "dog": 0, "og": 1}},
                  "normalizer": {"type": "Sequence", "normalizers": [
                      {"type": "Prepend", "prepend": mark},
                      {"type": "Replace", "pattern": {"String": " "}, "content": mark}]}}
    assert words_tokenize_alone(llama_like)
    assert not words_tokenize_alone({**llama_like, "model": {"type": "BPE", "vocab": {"g" + mark + "d": 0}}})
    assert not words_tokenize_alone({**llama_like, "pre_tokenizer": {"type": "Whitespace"}})
    assert not words_tokenize_alone({**llama_like, "normalizer": {"type": "Lowercase"}})
    assert not words_tokenize_alone({**llama_like, "model": {"type": "WordPiece", "vocab": {}}})


def test_wordllama_word_cache_stays_bounded(llama, monkeypatch):
    monkeypatch.setattr(wordvec, "WORD_IDS_CACHE_SIZE", 5)
    monkeypatch.setattr(llama, "_word_ids", {})
    tags = ["ant bee cow", "deer elk fox", "gnu hen ibis jay kiwi lark"]
    for tag in tags:
        llama._embed_new([tag])
        assert len(llama._word_ids) <= 5
    np.testing.assert_allclose(wordvec._unit_vectors(llama._embed_new(tags), llama.dim)[0],
                               _library_vectors(llama, tags)[0], atol=1e-6)


def test_unit_vectors_take_a_matrix():
    vectors = wordvec._unit_vectors(np.array([[3.0, 4.0], [0.0, 0.0], [np.nan, 1.0]]), 2)
    np.testing.assert_allclose(vectors[0], [0.6, 0.8])
    assert vectors[1] is None and vectors[2] is None
    with pytest.raises(WordSpaceError, match="expected"):
        wordvec._unit_vectors(np.zeros((2, 3)), 2)


def test_wordllama_whole_tags_ignore_tokenizer_padding(llama, monkeypatch):
    texts = ["<s> dog", "x\u2581 1"]
    expected = llama._tokenize_whole(texts)
    padded = type(llama._tokenizer).from_str(llama._tokenizer.to_str())
    padded.enable_padding(length=64)  # the shared tokenizer's settings are WordLlama's to choose
    monkeypatch.setattr(llama, "_tokenizer", padded)
    assert llama._tokenize_whole(texts) == expected and all(expected.values())

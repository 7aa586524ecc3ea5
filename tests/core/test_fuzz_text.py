"""Fuzzing tag text and vocabulary files: ``parse_tags``/``clean_tags``/``normalize_tag``,
``read_tag_file``/``Vocabulary.from_text_file``, ``.vec`` word tables and WordLlama's
embedding of whatever survives normalisation.

Properties: the result obeys the documented limits and normal form, or the input is
refused with the library's own error (``TagInputError``, ``VocabularyError``,
``WordSpaceError``); nothing else escapes.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sdl_core.config import WordSpaceInfo
from sdl_core.errors import TagInputError, VocabularyError, WordSpaceError
from sdl_core.tags import MAX_TAG_LENGTH, MAX_TAG_TEXT, MAX_TAGS, clean_tags, normalize_tag, parse_tags
from sdl_core.vocab import Vocabulary, read_tag_file
from sdl_core.wordvec import TableSpace, WordSpace, load_word_space
from tests.fuzzing import FUZZ

#: Every code point, surrogates and control characters included, weighted towards the
#: characters the normaliser treats specially.
SPECIAL = ",;\n\r\t *\u200c\u200d\u202e\u2066\x00\x1b\ufeff\u00a0\u3000\u0301e\u00e9<>&\"'"
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
tag_text = st.text(st.one_of(st.sampled_from(SPECIAL), any_char), max_size=300)


def check_tags(tags: list[str], limit: int = MAX_TAGS, split: bool = True) -> None:
    """The limits and the normal form; ``split``: tags came from text, so no separator is left."""
    assert len(tags) <= limit and len(set(tags)) == len(tags)
    for tag in tags:
        assert tag and len(tag) <= MAX_TAG_LENGTH
        assert normalize_tag(tag) == tag  # already in normal form: normalising twice changes nothing
        assert not any(space in tag for space in "\n\r\t")  # whitespace collapsed to single spaces
        assert not (split and any(sep in tag for sep in ",;"))


@FUZZ
@given(text=tag_text)
def test_parse_tags_any_text(text: str) -> None:
    try:
        tags = parse_tags(text)
    except TagInputError as exc:
        assert str(exc)
        return
    check_tags(tags)


@FUZZ
@given(tags=st.lists(tag_text, max_size=30), limit=st.integers(1, 40))
def test_clean_tags_any_list(tags: list[str], limit: int) -> None:
    try:
        cleaned = clean_tags(tags, max_tags=limit)
    except TagInputError:
        return
    check_tags(cleaned, limit, split=False)


@FUZZ
@given(text=tag_text)
def test_normalize_tag_is_idempotent(text: str) -> None:
    once = normalize_tag(text)
    assert normalize_tag(once) == once and once == once.strip()


def test_limits_are_enforced_at_the_edges() -> None:
    """The limits themselves, exactly at and just past each edge."""
    assert len(parse_tags(",".join(f"t{i}" for i in range(MAX_TAGS)))) == MAX_TAGS
    with pytest.raises(TagInputError, match="too many tags"):
        parse_tags(",".join(f"t{i}" for i in range(MAX_TAGS + 1)))
    assert parse_tags("x" * MAX_TAG_LENGTH) == ["x" * MAX_TAG_LENGTH]
    with pytest.raises(TagInputError, match="characters long"):
        parse_tags("x" * (MAX_TAG_LENGTH + 1))
    with pytest.raises(TagInputError, match="tag text is"):
        parse_tags("," * (MAX_TAG_TEXT + 1))


class HashSpace(WordSpace):
    """Embeds any tag (a hash-seeded vector), so vocabulary building is tested alone."""

    def __init__(self) -> None:
        super().__init__(WordSpaceInfo("hash-8", 8))

    def _embed_new(self, tags: list[str]) -> np.ndarray:
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in tags]) if tags \
            else np.zeros((0, 8))


line_bytes = st.one_of(st.binary(max_size=40), tag_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                       st.sampled_from([b"# comment", b"", b"\xef\xbb\xbfbom", b"cat # pet", b"\xff\xfe",
                                        b"a" * 150, b"\x00", b"*", b"dog\r"]))
file_bytes = st.lists(line_bytes, max_size=20).map(b"\n".join)


@FUZZ
@given(tags=file_bytes, unseen=st.none() | file_bytes)
def test_vocabulary_files(tmp_path_factory, tags: bytes, unseen: bytes | None) -> None:
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "tags.txt").write_bytes(tags)
    unseen_path = None
    if unseen is not None:
        unseen_path = folder / "unseen.txt"
        unseen_path.write_bytes(unseen)
    try:
        listed = read_tag_file(folder / "tags.txt")
    except VocabularyError:
        listed = None
    else:
        assert listed and all(t and normalize_tag(t) == t for t in listed)
    try:
        vocab = Vocabulary.from_text_file(folder / "tags.txt", HashSpace(), unseen_path)
    except VocabularyError as exc:
        assert str(exc)
        return
    assert listed is not None and set(listed) <= set(vocab.tags)
    assert vocab.vectors.shape == (len(vocab), 8) and np.isfinite(vocab.vectors).all()


@FUZZ
@given(lines=st.lists(st.one_of(line_bytes, st.lists(st.sampled_from(["0.5", "-1", "nan", "inf", "1e999", "x", ""]),
                                                     max_size=10).map(lambda v: " ".join(v).encode())), max_size=12))
def test_vec_word_tables(tmp_path_factory, lines: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("vec") / "words.vec"
    path.write_bytes(b"\n".join(lines))
    try:
        space = TableSpace.from_vec_file(path)
    except WordSpaceError as exc:
        assert str(exc)
        return
    vectors, found = space.embed(["cat", "x"])
    assert vectors.shape[0] == 2 and found.dtype == bool


@pytest.fixture(scope="module")
def wordllama() -> WordSpace:
    return load_word_space("wordllama")


@settings(FUZZ, max_examples=150)
@given(text=tag_text)
def test_wordllama_embeds_whatever_parses(wordllama, text: str) -> None:
    """Our own WordLlama tokenisation and pooling take any normalised tag: a finite unit
    vector, or 'not found'; never an exception."""
    try:
        tags = parse_tags(text)
    except TagInputError:
        return
    vectors, found = wordllama.embed(tags)
    assert vectors.shape == (len(tags), wordllama.dim) and found.shape == (len(tags),)
    norms = np.linalg.norm(vectors[found], axis=1)
    assert np.isfinite(vectors).all() and np.allclose(norms, 1.0, atol=1e-4)

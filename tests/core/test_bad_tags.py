"""Bad tag input: every case is normalised as documented or refused with a clear message.

Normalisation (sdl_core.tags): NFC; control and format characters removed (bidi
overrides too) except zero-width (non-)joiners; spaces collapsed; surrounding ``*``
stripped; lower case; duplicates merged (first wins). Text stays text: HTML is
neither stripped nor escaped by the library.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from sdl_core import cli
from sdl_core.checkpoint import save_checkpoint
from sdl_core.errors import TagInputError, VocabularyError
from sdl_core.tagger import Tagger
from sdl_core.tags import MAX_TAG_LENGTH, MAX_TAG_TEXT, MAX_TAGS, clean_tags, normalize_tag, parse_tags
from sdl_core.vocab import Vocabulary, read_tag_file
from sdl_core.wordvec import FastTextSpace
from tests.conftest import ROOT, TOY_TAGS, make_photo, make_sdl_model, make_vocab

HTML = "<script>alert(1)</script>"
HEBREW, ARABIC = "חתול", "قطة"
TECHNOLOGIST = "\U0001F469\u200d\U0001F4BB"  # woman + ZWJ + laptop: one emoji
PERSIAN = "می\u200cخواهم"  # needs its zero-width non-joiner

#: (id, typed text, expected tags or None, error regex or None)
PARSE_CASES = [
    ("empty", "", [], None),
    ("only_separators", " , ,;; \n\t ,", [], None),
    ("only_stars", "*, **, ***", [], None),
    ("duplicates", "Cat, cat, CAT ,*cat*,  cat  ,cat", ["cat"], None),
    ("multi_word_duplicates", "hot dog, Hot   Dog, hot\u00a0dog", ["hot dog"], None),
    ("order_kept_first_wins", "dog, cat, Dog", ["dog", "cat"], None),
    ("emoji", f"\U0001F431, {TECHNOLOGIST}, \U0001F1EB\U0001F1F7", ["\U0001F431", TECHNOLOGIST, "\U0001F1EB\U0001F1F7"],
     None),
    ("rtl", f"{HEBREW}, {ARABIC}, {PERSIAN}", [HEBREW, ARABIC, PERSIAN], None),
    ("bidi_override_removed", "\u202ecat, \u2066dog\u2069, \u200fsky", ["cat", "dog", "sky"], None),
    ("control_chars", "ca\x00t, d\x07og, \x1b[31mred\x1b[0m, tab\there", ["cat", "dog", "[31mred[0m", "tab", "here"],
     None),
    ("nfc", "cafe\u0301, CAFÉ", ["café"], None),
    ("html_stays_text", f"{HTML}, <b>bold</b>, a & b", [HTML, "<b>bold</b>", "a & b"], None),
    ("zero_width_only", "\u200d, \u200c, \ufeff", [], None),
    ("max_tags_exactly", ",".join(f"t{i}" for i in range(MAX_TAGS)), [f"t{i}" for i in range(MAX_TAGS)], None),
    ("ten_thousand_tags", ",".join(f"t{i}" for i in range(10_000)), None, rf"too many tags: the limit is {MAX_TAGS}"),
    ("ten_thousand_duplicates", ",".join(["cat"] * 10_000), ["cat"], None),
    ("longest_tag", "x" * MAX_TAG_LENGTH, ["x" * MAX_TAG_LENGTH], None),
    ("tag_too_long", "y" * (MAX_TAG_LENGTH + 1), None, rf"is {MAX_TAG_LENGTH + 1} characters long; the limit is "
                                                         rf"{MAX_TAG_LENGTH}"),
    ("one_megabyte_tag", "z" * 1_000_000, None, r"tag text is 1,000,000 characters long; the limit is 100,000"),
    ("not_utf8_arg", "caf\udce9, dog", None, r"not valid UTF-8 text"),
]


@pytest.mark.parametrize("text,expected,error", [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse_tags(text, expected, error):
    start = time.perf_counter()
    if error:
        with pytest.raises(TagInputError, match=error):
            parse_tags(text)
    else:
        assert parse_tags(text) == expected
    assert time.perf_counter() - start < 1.0


def test_clean_tags_limits_on_lists():
    """The Python API (lists of tags) has the same limits as typed text."""
    with pytest.raises(TagInputError, match="too many tags"):
        clean_tags([f"t{i}" for i in range(10_000)])
    start = time.perf_counter()
    with pytest.raises(TagInputError, match="1000000 characters long; the limit is 100"):
        clean_tags(["w" * 1_000_000])
    assert time.perf_counter() - start < 1.0
    assert clean_tags(["a", "A", " a "], max_tags=1) == ["a"]  # duplicates do not count
    with pytest.raises(TagInputError, match="the limit is 2 per request"):
        clean_tags(["a", "b", "c"], max_tags=2)
    assert MAX_TAG_TEXT >= MAX_TAGS * 20  # 500 tags of 20 characters fit in one text


def test_normalisation_is_idempotent_and_shared():
    for _, text, expected, error in PARSE_CASES:
        if expected:
            assert [normalize_tag(t) for t in expected] == expected
    vocab = Vocabulary(["Cat", "\u202eDog*"], np.eye(2, dtype=np.float32), np.ones(2, bool))
    assert vocab.tags == ["cat", "dog"] and "CAT" in vocab and vocab.index("*dog*") == 1


# --- through the Tagger ---------------------------------------------------------------
@pytest.fixture(scope="module")
def ft_tagger(fasttext_bin) -> Tagger:
    """A toy model in a tiny fastText space: every typed string gets a vector (subwords)."""
    space = FastTextSpace(fasttext_bin)
    vocab = Vocabulary.from_tags(TOY_TAGS, space, seen=[t for t in TOY_TAGS if t not in ("boat", "house")])
    return Tagger(make_sdl_model(d=16, space=space.info), vocab, space)


def test_tagger_ranks_odd_tags_as_plain_text(ft_tagger):
    typed = [HTML, "\U0001F431", TECHNOLOGIST, HEBREW, ARABIC, "Cat", "*cat*", "ca\x00t", "  ", ""]
    result = ft_tagger.tag(make_photo(), extra_tags=typed, only_extra=True, top_k=0)
    got = {t.tag for t in result}
    assert got | set(result.not_in_vocabulary) == {HTML, "\U0001F431", TECHNOLOGIST, HEBREW, ARABIC, "cat"}
    assert HTML in got and "cat" in got and len(result) == len(got)  # merged: "cat" once
    assert all(t.typed for t in result) and all(np.isfinite(t.score) for t in result)
    assert next(t for t in result if t.tag == "cat").seen  # a vocabulary tag keeps its flag


def test_tagger_refuses_bad_tag_lists(ft_tagger):
    photo = make_photo()
    with pytest.raises(TagInputError, match="too many tags"):
        ft_tagger.tag(photo, extra_tags=[f"t{i}" for i in range(10_000)])
    with pytest.raises(TagInputError, match="characters long"):
        ft_tagger.tag(photo, extra_tags=["x" * 1_000_000])
    with pytest.raises(TagInputError, match="no tags to rank"):
        ft_tagger.tag(photo, extra_tags=parse_tags(" ,, ; "), only_extra=True)
    with pytest.raises(TagInputError, match="not valid UTF-8"):
        ft_tagger.tag(photo, extra_tags=["caf\udce9"])
    with pytest.raises(TagInputError, match="too many tags"):  # before any image work
        list(ft_tagger.tag_files(["missing.jpg"], extra_tags=[f"t{i}" for i in range(MAX_TAGS + 1)]))


# --- vocabulary files -------------------------------------------------------------------
def test_vocab_file_rules(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffCat\n# comment\n\n  dog  # trailing comment\n*Boat*\ncat\n\u202esky\r\n".encode())
    assert read_tag_file(good) == ["cat", "dog", "boat", "sky"]
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"cat\ncaf\xe9\n")
    with pytest.raises(VocabularyError, match=r"latin1.txt: not UTF-8 text \(byte 0xe9 on line 2\)"):
        read_tag_file(latin1)
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("cat\ndog\n".encode("utf-16"))
    with pytest.raises(VocabularyError, match="not UTF-8 text"):
        read_tag_file(utf16)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n  \n*\n\u200d\n")
    with pytest.raises(VocabularyError, match="no tags found"):
        read_tag_file(empty)


# --- the CLI ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory):
    return save_checkpoint(make_sdl_model(), make_vocab(), tmp_path_factory.mktemp("ckpt") / "toy.safetensors")


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    make_photo().save(path)
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("tags,message", [
    (",".join(f"t{i}" for i in range(10_000)), "too many tags: the limit is 500"),
    ("q" * 1_000_000, "tag text is 1,000,000 characters long"),
    ("r" * (MAX_TAG_LENGTH + 5), f"is {MAX_TAG_LENGTH + 5} characters long"),
], ids=["ten_thousand", "one_megabyte", "too_long"])
def test_cli_refuses_bad_tags_in_one_line(capsys, toy_ckpt, photo, tags, message):
    code, out, err = run_cli(capsys, "tag", photo, "--model", toy_ckpt, "--tags", tags, "--json")
    assert code == cli.EXIT_USAGE and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1 and len(err) < 400


def test_cli_only_separators_with_only_tags(capsys, toy_ckpt, photo):
    code, out, err = run_cli(capsys, "tag", photo, "--model", toy_ckpt, "--tags", " , ;; ", "--only-tags")
    assert code == cli.EXIT_USAGE and "no tags to rank" in err


def test_cli_odd_tags_stay_plain_text(capsys, toy_ckpt, photo):
    """The toy table space cannot embed new words: they come back verbatim in
    not_in_vocabulary (JSON) and in the human output."""
    tags = f"{HTML}, \U0001F431, {HEBREW}, Dog, dog, *DOG*"
    code, out, err = run_cli(capsys, "tag", photo, "--model", toy_ckpt, "--tags", tags, "--json", "--top-k", "0")
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert result["not_in_vocabulary"] == [HTML, "\U0001F431", HEBREW]
    assert [t["tag"] for t in result["tags"]].count("dog") == 1
    assert next(t for t in result["tags"] if t["tag"] == "dog")["typed"] is True
    code, out, err = run_cli(capsys, "tag", photo, "--model", toy_ckpt, "--tags", tags)
    assert code == 0 and f"not in vocabulary: {HTML}, \U0001F431, {HEBREW}" in out


def test_cli_non_utf8_vocab_file(capsys, toy_ckpt, photo, tmp_path):
    vocab = tmp_path / "tags.txt"
    vocab.write_bytes(b"cat\ndog\nna\xefve\n")
    code, out, err = run_cli(capsys, "tag", photo, "--model", toy_ckpt, "--vocab", vocab)
    assert code == cli.EXIT_USAGE and "tags.txt: not UTF-8 text (byte 0xef on line 3)" in err


def test_cli_non_utf8_arguments_real_process(toy_ckpt, tmp_path):
    """Bytes that are not UTF-8 in argv: a bad --tags value is refused in one line; a
    file name is tagged and printed as a \\udcXX escape, so --json stays valid UTF-8
    and names the file exactly (even with a strict stdout encoding)."""
    name = b"caf\xe9.jpg"
    make_photo().save(os.fsdecode(tmp_path / os.fsdecode(name)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}  # strict encoder
    base = [sys.executable, "-m", "sdl_core", "tag", name, "--model", str(toy_ckpt), "--top-k", "2"]
    bad = subprocess.run([*base, b"--tags=caf\xe9, dog"], cwd=tmp_path, env=env, capture_output=True, timeout=180)
    assert bad.returncode == cli.EXIT_USAGE, bad.stderr
    assert bad.stderr.decode("utf-8").startswith("error: tag 'caf\\udce9' is not valid UTF-8 text")
    assert b"Traceback" not in bad.stderr
    good = subprocess.run([*base, "--json"], cwd=tmp_path, env=env, capture_output=True, timeout=180)
    assert good.returncode == 0, good.stderr
    data = json.loads(good.stdout.decode("utf-8"))  # valid UTF-8
    assert os.fsencode(data["results"][0]["image"]) == name
    assert len(data["results"][0]["tags"]) == 2

"""Vocabularies: the authors' data folder (real files), text files, the restricted unpickler."""
import pickle

import numpy as np
import pytest

from sdl_core.errors import VocabularyError
from sdl_core.safe_pickle import safe_load_pickle
from sdl_core.vocab import Vocabulary, read_tag_file
from sdl_core.wordvec import FastTextSpace
from tests.conftest import REFERENCE, needs_reference


@needs_reference
def test_authors_nus_wide_folder():
    vocab = Vocabulary.from_authors_folder(REFERENCE / "NUS_WIDE")
    assert len(vocab) == 1006 and vocab.dim == 300
    assert int((~vocab.seen).sum()) == 81 and int(vocab.seen.sum()) == 925
    np.testing.assert_allclose(np.linalg.norm(vocab.vectors, axis=1), 1.0, atol=1e-4)
    assert vocab.tags[0] == "abandoned" and "dog" in vocab.unseen_tags
    # the pickled (300, 1006) array is read column-wise: tag i gets column i
    raw = safe_load_pickle(REFERENCE / "NUS_WIDE" / "wordvec_array.pickle")
    i = vocab.index("dog")
    np.testing.assert_allclose(vocab.vectors[i], raw[:, i] / np.linalg.norm(raw[:, i]), atol=1e-6)


@needs_reference
def test_authors_coco_pickles_load_safely():
    data = safe_load_pickle(REFERENCE / "COCO" / "wordvec_array.pickle")
    assert data["wordvec_array"].shape == (1, 300, 80)
    ids = safe_load_pickle(REFERENCE / "COCO" / "cls_ids.pickle")
    assert len(ids["train"]) == 48 and len(ids["test"]) == 17


def test_missing_authors_files_are_named(tmp_path):
    with pytest.raises(VocabularyError, match="classes.pickle"):
        Vocabulary.from_authors_folder(tmp_path)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(VocabularyError, match="refusing to load"):
        safe_load_pickle(path)


def test_restricted_unpickler_reads_plain_data(tmp_path):
    path = tmp_path / "ok.pickle"
    payload = {"a": [1, 2.5, "x"], "arr": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path.write_bytes(pickle.dumps(payload))
    out = safe_load_pickle(path)
    assert out["a"] == [1, 2.5, "x"] and np.array_equal(out["arr"], payload["arr"])


def test_text_file_with_unseen_list(tmp_path, fasttext_bin):
    space = FastTextSpace(fasttext_bin)
    tags = tmp_path / "tags.txt"
    tags.write_text("# my tags\ncat\nDog\n\nhot dog  # a phrase\ncat\n")
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("dog\nboat\n")
    vocab = Vocabulary.from_text_file(tags, space, unseen_path=unseen)
    assert vocab.tags == ["cat", "dog", "hot dog", "boat"]
    assert vocab.seen.tolist() == [True, False, True, False]


def test_text_file_without_tags_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n\n")
    with pytest.raises(VocabularyError, match="no tags"):
        read_tag_file(path)


def test_vocabulary_rejects_inconsistent_parts():
    with pytest.raises(VocabularyError, match="disagree"):
        Vocabulary(["a", "b"], np.zeros((3, 4)), np.array([True, True]))
    with pytest.raises(VocabularyError, match="duplicate"):
        Vocabulary(["a", "A"], np.zeros((2, 4)), np.array([True, True]))


def test_trained_names_make_typed_words_seen_in_any_number():
    vectors = np.eye(3, dtype=np.float32)
    vocab = Vocabulary(["sky", "dog", "Beach"], vectors, np.array([False, True, False]),
                       trained_names=frozenset({"Espresso", "tabby cat", "box"}))
    assert vocab.is_seen("dog") and not vocab.is_seen("sky") and not vocab.is_seen("beach")
    assert vocab.is_seen("espresso") and vocab.is_seen("*Espressos*") and vocab.is_seen("boxes")
    assert vocab.is_seen("tabby cats") and not vocab.is_seen("tabby") and not vocab.is_seen("latte")
    assert vocab.select(["sky"]).trained_names == vocab.trained_names

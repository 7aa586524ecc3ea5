"""The bridge from WordLlama into a fixed table word space (typed words for the authors' model)."""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from sdl_core.bridge import (MIN_BRIDGE_TAGS, BridgeConfig, BridgedSpace, WordBridge, bridge_table_space, inflections,
                             source_views)
from sdl_core.checkpoint import save_checkpoint
from sdl_core.config import WordSpaceInfo
from sdl_core.factory import load_model
from sdl_core.tagger import Tagger
from sdl_core.vocab import Vocabulary
from sdl_core.wordvec import FastTextSpace, TableSpace, load_word_space, unit_rows
from tests.conftest import ROOT, make_photo, make_sdl_model, needs_reference
from tests.core.test_cli import run_cli

SPACE = WordSpaceInfo("synthetic-24", 24)
SYLLABLES = ["ba", "ko", "ri", "mu", "te", "lo", "san", "vi", "dre", "pu", "gon", "fel"]


def pseudo_words(n: int, seed: int = 0) -> list[str]:
    """n distinct made-up words (three different syllables each), in a seeded order."""
    words = ["".join(p) for p in itertools.product(SYLLABLES, repeat=3) if len(set(p)) == 3]
    return [words[i] for i in np.random.default_rng(seed).permutation(len(words))[:n]]


@pytest.fixture(scope="module")
def source():
    return load_word_space("wordllama")


@pytest.fixture(scope="module")
def relation(source):
    """A generated table: 300 words whose 24-d vectors are a random linear map of their
    WordLlama views plus 10% noise. Returns (words, vectors, map)."""
    rng = np.random.default_rng(0)
    words = pseudo_words(300)
    views = source_views(source, words, BridgeConfig())
    weights = rng.normal(size=(views.shape[1], SPACE.dim))
    clean = views @ weights
    noise = rng.normal(size=clean.shape) * np.linalg.norm(clean, axis=1, keepdims=True) / np.sqrt(SPACE.dim)
    return words, unit_rows(clean + 0.1 * noise), weights


@pytest.fixture(scope="module")
def bridged(relation):
    words, vectors, _ = relation
    vocab = Vocabulary(words[:250], vectors[:250], np.ones(250, bool))
    space = bridge_table_space(vocab, TableSpace(SPACE, vocab.tags, vocab.vectors))
    assert isinstance(space, BridgedSpace)
    return space


def test_wordllama_reads_words_as_written(source):
    paris, capital = source.embed_texts(["paris", "Paris"])
    assert np.allclose(paris, source.embed(["Paris"])[0][0]) and paris @ capital < 0.99  # tags are lower case
    assert source.approximate(["paris"]).tolist() == [False]  # a space's own vectors are never approximate


def test_bridge_recovers_held_out_vectors_of_a_linear_relation(relation, source):
    words, vectors, _ = relation
    bridge = WordBridge.fit(words[:240], vectors[:240], source)
    predicted, found = bridge.predict(words[240:])
    assert found.all() and np.allclose(np.linalg.norm(predicted, axis=1), 1, atol=1e-5)
    cosines = (predicted * vectors[240:]).sum(1)
    sims = predicted @ vectors.T
    nearest = sims.argmax(1)
    # chance: cosine ~0, the right word nearest 1 time in 300
    assert cosines.mean() > 0.7, cosines.mean()
    assert (nearest == np.arange(240, 300)).mean() > 0.5


def test_table_words_keep_their_vectors_and_new_words_are_bridged_and_flagged(bridged, relation):
    words, vectors, _ = relation
    a, b, new = words[0], words[1], words[280]
    tags = [a, f"{a} {b}", new, f"{a} {new}", "qwzx"]
    out, found = bridged.embed(tags)
    assert found.all() and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.allclose(out[0], vectors[0], atol=1e-6)  # the table's own vector, exactly
    assert np.allclose(out[1], unit_rows((vectors[0] + vectors[1])[None])[0], atol=1e-6)  # table phrase rule
    assert out[2] @ vectors[280] > 0.6  # bridged, near the truth the table never saw
    assert np.allclose(out[3], unit_rows((vectors[0] + out[2])[None])[0], atol=1e-5)  # phrase: word by word
    assert bridged.approximate(tags).tolist() == [False, False, True, True, True]


def test_the_bridge_is_fitted_once_and_only_when_a_word_needs_it(relation, source):
    words, vectors, _ = relation
    fits = []

    def fit():
        fits.append(1)
        return WordBridge.fit(words[:250], vectors[:250], source)

    space = BridgedSpace(TableSpace(SPACE, words[:250], vectors[:250]), fit)
    space.embed(words[:5])
    assert not fits  # table words only: no fit, no WordLlama work
    space.embed([words[260]])
    space.embed([words[261], words[262]])
    assert len(fits) == 1


def test_inflections():
    assert inflections("cats")[0] == "cat" and inflections("cities")[0] == "city" and inflections("boxes")[0] == "box"
    assert inflections("cat") == ["cats"] and inflections("city") == ["cities"] and inflections("box") == ["boxes"]
    assert inflections("glass") == ["glasses"] and inflections("day") == ["days"]
    assert inflections("ox") == [] and inflections("t-shirt") == []


def test_a_bridged_word_leans_on_the_tables_plural_of_it(relation, source):
    words, vectors, _ = relation
    plural = words[270] + "s"
    tags, table_vectors = words[:250] + [plural], np.vstack([vectors[:250], vectors[270]])
    vocab = Vocabulary(tags, table_vectors, np.ones(len(tags), bool))
    table = TableSpace(SPACE, tags, table_vectors)
    plain = bridge_table_space(vocab, table, config=BridgeConfig(inflection=0.0)).embed([words[270]])[0][0]
    leaning = bridge_table_space(vocab, table).embed([words[270]])[0][0]
    assert leaning @ vectors[270] > plain @ vectors[270] + 0.02


def test_small_tables_get_no_bridge(relation):
    words, vectors, _ = relation
    few = MIN_BRIDGE_TAGS - 1
    table = TableSpace(SPACE, words[:few], vectors[:few])
    space = bridge_table_space(Vocabulary(words[:few], vectors[:few], np.ones(few, bool)), table)
    assert space is table and not space.embed([words[280]])[1][0]


def test_tagger_flags_bridged_typed_tags(bridged, relation):
    words = relation[0]
    model = make_sdl_model(d=SPACE.dim, space=SPACE)
    vocab = Vocabulary(words[:250], bridged.table.embed(words[:250])[0], np.ones(250, bool))
    tagger = Tagger(model, vocab, word_space=bridged, optimize=False)
    result = tagger.tag(make_photo(), extra_tags=[words[0], words[290]], top_k=0)
    flags = {t.tag: t.approximate for t in result}
    assert flags[words[290]] is True and flags[words[0]] is False and flags[words[1]] is False
    assert result.not_in_vocabulary == []
    assert next(t for t in result.to_dict()["tags"] if t["tag"] == words[290])["approximate"] is True


@pytest.fixture(scope="module")
def fasttext_checkpoint(tmp_path_factory, fasttext_bin):
    """A model trained in a fastText space: its checkpoint carries only the table."""
    space = FastTextSpace(fasttext_bin)
    vocab = Vocabulary.from_tags(pseudo_words(MIN_BRIDGE_TAGS + 20, seed=1), space, seen=True)
    folder = tmp_path_factory.mktemp("ft-bridge")
    make_photo().save(folder / "photo.jpg")
    return save_checkpoint(make_sdl_model(d=space.dim, space=space.info), vocab, folder / "ft.safetensors")


def test_a_real_word_space_wins_over_the_bridge(fasttext_checkpoint, fasttext_bin):
    bridged = Tagger.from_pretrained(fasttext_checkpoint)
    real = Tagger.from_pretrained(fasttext_checkpoint, word_space=fasttext_bin)
    assert isinstance(bridged.word_space, BridgedSpace) and isinstance(real.word_space, FastTextSpace)
    exact = FastTextSpace(fasttext_bin).embed(["kitten"])[0][0]
    assert np.allclose(real.word_space.embed(["kitten"])[0][0], exact)
    for tagger, approximate in ((bridged, True), (real, False)):
        result = tagger.tag(make_photo(), extra_tags=["kitten"], top_k=0)
        assert next(t for t in result if t.tag == "kitten").approximate is approximate


def test_the_factory_bridges_a_table_model_only_without_a_word_space(fasttext_checkpoint, fasttext_bin):
    assert isinstance(load_model(fasttext_checkpoint).word_space, BridgedSpace)
    assert isinstance(load_model(fasttext_checkpoint, word_space=fasttext_bin).word_space, FastTextSpace)


def test_cli_json_says_approximate_unless_the_word_space_is_given(fasttext_checkpoint, fasttext_bin):
    photo = fasttext_checkpoint.parent / "photo.jpg"
    for extra, approximate in (((), True), (("--word-space", fasttext_bin), False)):
        out = run_cli("tag", photo, "--model", fasttext_checkpoint, "--tags", "kitten", "--only-tags", "--json",
                      *extra)
        assert out.returncode == 0, out.stderr
        [tag] = json.loads(out.stdout)["results"][0]["tags"]
        assert tag["tag"] == "kitten" and tag["approximate"] is approximate


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "bridge_fidelity.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=900)


@needs_reference
def test_held_out_fidelity_on_the_authors_vectors_beats_the_ridge_reference():
    out = run_tool("--methods", "ridge,shipped", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = {row["method"]: row for row in report["methods"]}
    shipped, ridge = rows["shipped"], rows["ridge"]
    for metric, reference in report["reference"].items():
        assert shipped["nus"][metric] > reference, (metric, shipped["nus"][metric])
    for data in ("nus", "coco"):
        assert shipped[data]["spearman"] > ridge[data]["spearman"] + 0.01
        assert shipped[data]["top5"] > ridge[data]["top5"]


def test_tool_refuses_an_unknown_method_in_one_line():
    out = run_tool("--methods", "magic")
    assert out.returncode == 2 and "unknown method" in out.stderr and "Traceback" not in out.stderr

"""`python -m demo --word-space`: a checkpoint trained in a fastText space embeds typed words."""
import pytest

from demo.cli import build_parser
from demo.models import TaggerCache, startup_choice
from sdl_core.checkpoint import save_checkpoint
from sdl_core.errors import WordSpaceError
from sdl_core.vocab import Vocabulary
from sdl_core.wordvec import FastTextSpace
from tests.conftest import make_photo, make_sdl_model


@pytest.fixture(scope="module")
def fasttext_checkpoint(tmp_path_factory, fasttext_bin):
    space = FastTextSpace(fasttext_bin)
    tags = ["cat", "dog", "car", "tree", "sky"]
    vocab = Vocabulary.from_tags(tags, space, seen=tags[:3])
    model = make_sdl_model(d=space.dim, space=space.info)
    return save_checkpoint(model, vocab, tmp_path_factory.mktemp("ft") / "ft.safetensors")


def test_word_space_flag_embeds_typed_words(fasttext_checkpoint, fasttext_bin):
    without = TaggerCache([startup_choice(str(fasttext_checkpoint))]).get()
    assert without.tag(make_photo(), extra_tags=["kitten"]).not_in_vocabulary == ["kitten"]
    cache = TaggerCache([startup_choice(str(fasttext_checkpoint))], word_space=str(fasttext_bin))
    result = cache.get().tag(make_photo(), extra_tags=["kitten"], top_k=0)
    assert result.not_in_vocabulary == [] and "kitten" in {t.tag for t in result if t.typed}


def test_a_foreign_word_space_is_refused_for_the_startup_model(toy_checkpoint, fasttext_bin):
    cache = TaggerCache([startup_choice(str(toy_checkpoint))], word_space=str(fasttext_bin))
    with pytest.raises(WordSpaceError, match="dimensional|-d"):
        cache.get()


def test_flag_is_parsed():
    args = build_parser({}).parse_args(["--word-space", "cc.en.300.bin"])
    assert args.word_space == "cc.en.300.bin"

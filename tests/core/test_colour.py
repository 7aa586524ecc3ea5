"""Colour evidence (sdl_core.colour): pixels prove colour words, other tags' scores are untouched,
colour words get real maps, and search ranks photos by colour."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdl_core import Tagger
from sdl_core.colour import CHANNELS, FULL_SCORE, channel_of, evidence_scores, pixel_memberships
from sdl_core.evidence import EvidenceSpace
from sdl_core.conse import ConSEModel
from sdl_core.default_model import default_config
from sdl_core.search import query_space, search, update_index

ROOT = Path(__file__).resolve().parents[2]
COFFEE = ROOT / "demo" / "examples" / "coffee.jpg"


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger.from_pretrained()


def _plain(rgb: tuple[int, int, int], size: int = 96) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


def _shares(img: Image.Image) -> dict[str, float]:
    pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    shares = pixel_memberships(pixels).mean(dim=(2, 3))[0]
    return dict(zip(CHANNELS, shares.tolist()))


@pytest.mark.parametrize("rgb, channel", [((20, 60, 220), "blue"), ((40, 180, 40), "green"), ((230, 200, 20), "yellow"),
                                           ((200, 20, 20), "red"), ((240, 130, 20), "orange"), ((120, 70, 30), "brown"),
                                           ((128, 128, 128), "gray"), ((250, 250, 250), "white"), ((5, 5, 5), "black")])
def test_plain_colours_fill_their_channel(rgb, channel):
    shares = _shares(_plain(rgb))
    assert shares[channel] == pytest.approx(1.0)
    others = [c for c in CHANNELS[:11] if c != channel]
    assert all(shares[c] == 0 for c in others), shares


def test_monochrome_and_dark_are_graded():
    assert _shares(_plain((128, 128, 128)))["monochrome"] == pytest.approx(1.0)
    assert _shares(_plain((20, 60, 220)))["monochrome"] == 0
    assert _shares(_plain((5, 5, 5)))["dark"] == pytest.approx(1.0)
    assert _shares(_plain((250, 250, 250)))["dark"] == 0


def test_evidence_scale():
    full = evidence_scores(torch.ones(len(CHANNELS)))
    assert torch.allclose(full, torch.full_like(full, FULL_SCORE))
    assert torch.all(evidence_scores(torch.zeros(len(CHANNELS))) == 0)
    some = torch.full((len(CHANNELS),), 0.4)
    scores = dict(zip(CHANNELS, evidence_scores(some).tolist()))
    assert scores["blue"] > 0.5 * FULL_SCORE  # a colour filling 40% of the photo is tagged
    assert scores["gray"] == 0  # grey must dominate: most photos have some


def test_words_and_aliases():
    assert channel_of("Grey") == channel_of("gray") == CHANNELS.index("gray")
    assert channel_of("black and white") == CHANNELS.index("monochrome")
    assert channel_of("sky") is None


def test_colour_space_keeps_plain_words_and_gives_colours_an_axis(tagger):
    space = tagger.word_space
    assert isinstance(space, EvidenceSpace)
    base = space.base
    vectors, found = space.embed(["lake", "blue", "grey"])
    assert found.all()
    plain, _ = base.embed(["lake"])
    assert np.allclose(vectors[0, :base.dim], plain[0]) and not vectors[0, base.dim:].any()
    assert vectors[1, base.dim + CHANNELS.index("blue")] == 1 and not vectors[1, :base.dim].any()
    assert vectors[2, base.dim + CHANNELS.index("gray")] == 1


def test_plain_tags_score_exactly_as_without_colour(tagger):
    """The evidence dimensions change colour and person words only: every other tag's score is the old one."""
    config = default_config()
    plain_config = type(config)(**{**config.__dict__, "extra": {**config.extra, "colour": False, "person": False},
                                   "word_space": tagger.word_space.base.info})
    plain = ConSEModel(plain_config)
    state = {k: v for k, v in tagger.model.state_dict().items()}
    plain.load_state_dict(state)
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        with_colour = tagger.model.encode(pixels).vectors
        without = plain.eval().encode(pixels).vectors
    base_dim = tagger.word_space.base.dim
    assert torch.allclose(with_colour[..., :base_dim], without, atol=1e-6)
    assert with_colour.shape[-1] == base_dim + len(CHANNELS) + 1  # + the person channel


def test_blue_photo_is_tagged_blue_and_unseen(tagger):
    result = tagger.tag(_plain((30, 80, 210), 224), top_k=3)
    top = {t.tag: t for t in result}
    assert "blue" in top, [t.tag for t in result]
    assert not top["blue"].seen and top["blue"].display == "*blue*"
    assert top["blue"].score == pytest.approx(FULL_SCORE, abs=1e-3)


def test_greyscale_photo_is_monochrome_and_typed_colours_rank(tagger):
    grey = Image.open(COFFEE).convert("L").convert("RGB")
    result = tagger.tag(grey, extra_tags=["black and white", "red"], top_k=5)
    assert "monochrome" in [t.tag for t in result]
    typed = {t.tag: t for t in result.typed}
    assert typed["black and white"].score == pytest.approx(FULL_SCORE, abs=1e-3)
    assert typed["red"].score == 0 and typed["red"].rank > typed["black and white"].rank
    colour = tagger.tag(COFFEE, extra_tags=["monochrome"], top_k=5)
    assert {t.tag: t.score for t in colour.typed}["monochrome"] == 0


def test_orange_is_a_colour_not_the_fruit(tagger):
    assert not tagger.vocabulary.is_seen("orange")
    assert tagger.vocabulary.is_seen("espresso")


def test_colour_word_map_shows_where_the_colour_is(tagger):
    img = Image.new("RGB", (224, 224), (200, 30, 30))
    img.paste((30, 60, 220), (0, 0, 112, 224))  # left half blue
    analysis = tagger.analyze(img, extra_tags=["blue"], top_k=5)
    blue_map = analysis.tag_maps["blue"][0]  # (h, w)
    assert blue_map[:, 0].min() > 0.4 and blue_map[:, -1].max() == 0, blue_map  # the window blurs the middle
    assert np.all(np.diff(blue_map, axis=1) <= 0), blue_map


def test_search_ranks_photos_by_colour(tagger, tmp_path):
    for name, rgb in {"blue.jpg": (30, 80, 210), "green.jpg": (40, 170, 50), "red.jpg": (200, 30, 30)}.items():
        _plain(rgb, 160).save(tmp_path / name)
    index, _ = update_index(tmp_path, tagger)
    space = query_space(index)
    assert isinstance(space, EvidenceSpace)  # an index of the default model gets its colour space back
    result = search(index, ["green"], space)
    assert Path(result.hits[0].path).name == "green.jpg"

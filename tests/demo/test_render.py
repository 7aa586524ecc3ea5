"""Rendering: overlays land where the map is hot, the table escapes text, JSON has no server paths."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from demo.render import (Shown, colormap_lut, model_view, normalize, overlay, overlays_each, overlays_shared,
                         principal_captions, result_json, safe_stem, tag_captions, tags_table_html, write_json)
from sdl_core import ImageTags, PreprocessConfig, TagResult, TypedTag


def grey_photo(w: int = 200, h: int = 100) -> Image.Image:
    return Image.new("RGB", (w, h), (128, 128, 128))


def test_overlay_is_hot_where_the_map_is_hot():
    heat = np.zeros((4, 4), np.float32)
    heat[0, 3] = 1.0  # top-right cell
    out = np.asarray(overlay(grey_photo(), heat)).astype(int)
    assert out.shape == (100, 200, 3)
    hot_rgb, cold_rgb = colormap_lut()[255].astype(int), colormap_lut()[0].astype(int)
    top_right, bottom_left = out[5, 195], out[95, 5]
    assert np.abs(top_right - (0.45 * 128 + 0.55 * hot_rgb)).max() <= 3
    assert np.abs(bottom_left - (0.45 * 128 + 0.55 * cold_rgb)).max() <= 3


def test_normalize_scales_and_flat_maps_are_zero():
    assert np.allclose(normalize(np.array([1.0, 2.0, 3.0]), 1.0, 3.0), [0.0, 0.5, 1.0])
    assert np.allclose(normalize(np.array([5.0, 5.0]), 5.0, 5.0), 0.0)
    assert np.allclose(normalize(np.array([0.0, 9.0]), 1.0, 3.0), [0.0, 1.0])  # clipped


def test_shared_scale_keeps_the_k_maps_comparable():
    maps = np.stack([np.full((2, 2), 0.0), np.full((2, 2), 1.0)])
    weak, strong = (np.asarray(im).astype(int) for im in overlays_shared(grey_photo(), maps))
    assert (strong != weak).any()
    each = overlays_each(grey_photo(), maps)  # each on its own scale: flat maps look the same
    assert np.array_equal(np.asarray(each[0]), np.asarray(each[1]))


def test_model_view_crops_like_the_model_and_fits_the_display():
    photo = grey_photo(800, 400)
    squash = model_view(photo, PreprocessConfig(resize="squash"), max_side=320)
    crop = model_view(photo, PreprocessConfig(resize="shorter_side_crop"), max_side=320)
    assert squash.size == (320, 160)
    assert crop.size == (320, 320)
    assert model_view(grey_photo(50, 40), PreprocessConfig(), max_side=320).size == (50, 40)


def result(*tags: TagResult, missing: tuple[str, ...] = ()) -> ImageTags:
    return ImageTags(list(tags), list(missing), "/tmp/gradio/abc/photo.jpg")


def test_table_marks_unseen_and_typed_and_escapes_user_text():
    res = result(TagResult("cat", 0.91, True, 0), TagResult("<img src=x onerror=alert(1)>", 0.5, False, 2, typed=True),
                 missing=("<b>zzqx</b>",))
    page = tags_table_html(res, "toy <model>")
    assert "<img src=x" not in page and "<b>zzqx" not in page and "toy <model>" not in page
    assert "*&lt;img src=x onerror=alert(1)&gt;*" in page  # unseen: starred, escaped
    assert page.count('class="unseen"') == 1 and page.count("sdl-badge typed") == 1
    assert "0.9100" in page and "0.5000" in page
    assert "not ranked: &lt;b&gt;zzqx&lt;/b&gt;" in page


def test_typed_tags_outside_the_top_k_follow_the_table_with_their_rank_escaped():
    shown = TagResult("cat", 0.91, True, 0, typed=True)
    typed = [TypedTag("cat", 0.91, True, 0, rank=1, in_top_k=True),
             TypedTag("<script>x</script>", 0.12, False, 1, rank=57, in_top_k=False),
             TypedTag("pier", 0.05, True, 2, rank=130, in_top_k=False)]
    page = tags_table_html(ImageTags([shown], [], None, typed, 1006), "toy")
    table, outside = page.split('class="sdl-outside-title"')
    assert "cat" in table and "pier" not in table and "script" not in table
    assert "Your tags outside the top 1 (rank among all 1006 tags)" in outside and "cat" not in outside
    assert "<script>" not in page and "*&lt;script&gt;x&lt;/script&gt;*" in outside
    assert outside.index("#57") < outside.index("script") < outside.index("#130") < outside.index("pier")
    assert "0.1200" in outside and outside.count("sdl-badge typed") == 2 and outside.count('class="unseen"') == 1
    assert 'class="sdl-outside' not in tags_table_html(ImageTags([shown], [], None, typed[:1], 1006), "toy")


def test_table_marks_bridged_typed_tags_as_approximate():
    page = tags_table_html(result(TagResult("dog", 0.9, True, 0, typed=True),
                                  TagResult("moose", 0.7, False, 1, typed=True, approximate=True)), "sdl")
    dog_row, moose_row = page.split("<tr class=")[1:3]
    assert "\u2248 approximate" in moose_row and "sdl-badge approx" in moose_row
    assert "approx" not in dog_row


def test_json_result_names_the_file_not_the_server_path(tmp_path):
    res = result(TagResult("cat", 0.9, True, 1, typed=True))
    data = result_json(res, "toy", "/tmp/gradio/abc/photo.jpg", 5, False)
    assert data["image"] == "photo.jpg" and data["model"] == "toy" and data["top_k"] == 5
    assert data["tags"][0] == {"tag": "cat", "score": 0.9, "seen": True, "principal": 1, "typed": True,
                            "approximate": False}
    path = write_json(data, tmp_path, "tags-photo.json")
    assert path.name == "tags-photo.json" and json.loads(path.read_text()) == data


def test_json_folder_keeps_only_the_newest(tmp_path):
    paths = [write_json({"i": i}, tmp_path, "t.json", keep=3) for i in range(6)]
    assert sorted(p.parent for p in tmp_path.glob("*/t.json")) == sorted(p.parent for p in paths[-3:])


def test_safe_stem():
    assert safe_stem("../../etc/pass wd.jpg") == "pass_wd"
    assert safe_stem(None) == "photo" and safe_stem("...") == "photo"


def test_captions_name_the_winning_vector():
    assert principal_captions([["cat", "*boat*"], []]) == ["k=0 · wins: cat, *boat*",
                                                           "k=1 · wins none of the shown tags"]
    caps = tag_captions(TagResult("boat", 0.3, False, 1), 3)
    assert caps[1].startswith("k=1 · *boat*") and "wins" in caps[1]
    assert "wins" not in caps[0] + caps[2]


def test_shown_gives_k_maps_of_a_tag_by_display_or_name():
    tags = (TagResult("cat", 0.9, True, 0), TagResult("boat", 0.3, False, 1))
    maps = {"cat": np.random.default_rng(0).normal(size=(3, 5, 5)), "boat": np.zeros((3, 5, 5))}
    shown = Shown(grey_photo(), tags, maps)
    gallery = shown.tag_gallery("*boat*")
    assert len(gallery) == 3 and gallery[0][0].size == (200, 100)
    assert len(shown.tag_gallery("cat")) == 3
    assert shown.tag_gallery("not shown") == []

"""The real server, launched in-process, driven through gradio_client like any API user."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from gradio_client import handle_file

from demo.app import EXAMPLES_DIR, MAX_TOP_K, example_rows
from sdl_core.tags import MAX_TAGS
from tests.demo.conftest import TOY_K

COFFEE = EXAMPLES_DIR / "coffee.jpg"


def tag(server, image, tags="", only=False, top_k=5, model=None):
    model = model if model is not None else server.app_default
    return server.client.predict(handle_file(str(image)), tags, only, top_k, model, api_name="/tag")


@pytest.fixture(scope="module")
def toy(toy_server, toy_checkpoint):
    toy_server.app_default = str(toy_checkpoint.resolve())
    return toy_server


def table_rows(page: str) -> list[tuple[str, str, float]]:
    """(row class, tag cell text, score) of each row of the HTML table."""
    rows = re.findall(r'<tr class="(\w+)"><td class="num">\d+</td><td class="tag">(.*?)</td>'
                      r'<td class="num">([-\d.]+)</td>', page)
    return [(cls, re.sub(r"<span.*", "", cell), float(score)) for cls, cell, score in rows]


def test_tag_a_shipped_photo_with_typed_tags(toy):
    page, json_path, maps, choice, tag_maps, _ = tag(toy, COFFEE, "Boat, red car, zzqxv", top_k=8)
    data = json.loads(Path(json_path).read_text())
    assert data["image"] == "coffee.jpg" and data["top_k"] == 8
    tags = {t["tag"]: t for t in data["tags"]}
    assert len(data["tags"]) == 8  # 8 vocabulary tags + typed ones, top 8 shown
    scores = [t["score"] for t in data["tags"]]
    assert scores == sorted(scores, reverse=True)
    # the page shows the same ranking: unseen starred and marked, scores to 4 decimals
    rows = table_rows(page)
    assert [r[1].strip("*") for r in rows] == [t["tag"] for t in data["tags"]]
    for cls, cell, score in rows:
        t = tags[cell.strip("*")]
        assert (cls == "unseen") == (not t["seen"]) and (cell == f"*{t['tag']}*") == (not t["seen"])
        assert score == pytest.approx(t["score"], abs=1e-4)
    typed = {t["tag"] for t in data["tags"] if t["typed"]}
    assert typed <= {"boat", "red car", "zzqxv"} and page.count("sdl-badge typed") == len(typed)
    # K attention images, captioned with the tags each principal vector wins
    assert len(maps) == TOY_K and all(Path(m["image"]).is_file() for m in maps)
    winners = [re.sub(r"^k=\d+ · wins:? ?", "", m["caption"]) for m in maps]
    shown = {t["tag"] if t["seen"] else f"*{t['tag']}*" for t in data["tags"]}
    assert set(", ".join(w for w in winners if "none of" not in w).split(", ")) == shown
    assert choice["value"] == rows[0][1] and len(tag_maps) == TOY_K


def test_typed_words_are_embedded_in_the_models_word_space(toy):
    page, json_path, *_ = tag(toy, COFFEE, "red car, Boat", only=True, top_k=MAX_TOP_K)
    data = json.loads(Path(json_path).read_text())
    ranked = {t["tag"]: t for t in data["tags"]}
    assert set(ranked) == {"red car", "boat"} and data["not_in_vocabulary"] == []
    assert all(t["typed"] for t in data["tags"])
    assert ranked["boat"]["seen"] is False and ranked["red car"]["seen"] is False  # boat keeps its flag
    assert "*red car*" in page and "*boat*" in page


def test_the_json_download_and_the_page_carry_typed_tags_outside_the_top_k(toy):
    page, json_path, *_ = tag(toy, COFFEE, "red car, Boat, house", top_k=1)
    data = json.loads(Path(json_path).read_text())
    typed = data["typed"]
    assert [t["tag"] for t in typed] == ["red car", "boat", "house"]  # in the order typed
    assert data["ranked"] == 9 and sorted({t["rank"] for t in typed}) == sorted(t["rank"] for t in typed)
    everything = json.loads(Path(tag(toy, COFFEE, "red car, Boat, house", top_k=MAX_TOP_K)[1]
                                 ).read_text())["tags"]
    for t in typed:
        assert t["rank"] == [x["tag"] for x in everything].index(t["tag"]) + 1
        assert t["in_top_k"] == (t["rank"] == 1) == (t["tag"] == data["tags"][0]["tag"])
    outside = [t for t in typed if not t["in_top_k"]]
    assert len(outside) >= 2 and "Your tags outside the top 1" in page
    for t in outside:
        assert f'<td class="num">#{t["rank"]}</td><td class="tag">*{t["tag"]}*' in page


def test_words_a_fixed_word_table_cannot_embed_are_listed(toy, models_dir):
    table = str((models_dir / "table_k2.safetensors").resolve())
    page, json_path, *_ = tag(toy, COFFEE, "red car, boat, cat", only=True, top_k=MAX_TOP_K, model=table)
    data = json.loads(Path(json_path).read_text())
    assert [t["tag"] for t in data["tags"]] == sorted(["boat", "cat"], key=lambda t: -next(
        x["score"] for x in data["tags"] if x["tag"] == t))
    assert data["not_in_vocabulary"] == ["red car"]
    assert "not ranked: red car" in page


@pytest.mark.parametrize("args, message", [
    (dict(image=None), "Upload a photo first"),
    (dict(tags=", ".join(f"w{i}" for i in range(MAX_TAGS + 1))), "too many tags"),
    (dict(top_k=MAX_TOP_K + 1), "top-k must be from 1"),
    (dict(top_k="ten"), "top-k must be a whole number"),
    (dict(only=True, tags=""), "type at least one tag"),
    (dict(model="/etc/passwd"), "is not one this app offers"),
    (dict(model=["a", "list"]), "is not one this app offers"),
])
def test_bad_requests_show_a_message(toy, args, message):
    kwargs = dict(image=COFFEE, tags="", only=False, top_k=5, model=toy.app_default) | args
    image = handle_file(str(kwargs["image"])) if kwargs["image"] else None
    with pytest.raises(Exception) as info:
        toy.client.predict(image, kwargs["tags"], kwargs["only"], kwargs["top_k"], kwargs["model"], api_name="/tag")
    assert message.lower() in str(info.value).lower()
    assert "Traceback" not in str(info.value)


def test_unreadable_image_and_broken_checkpoint_show_sdl_core_messages(toy, models_dir, tmp_path):
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(Exception, match=r"holiday\.jpg: .*(supported|not an image|cannot)"):
        tag(toy, bad)
    broken = str((models_dir / "broken.safetensors").resolve())
    with pytest.raises(Exception, match="broken.safetensors: not a readable safetensors checkpoint"):
        tag(toy, COFFEE, model=broken)
    with pytest.raises(Exception, match="broken.safetensors"):
        toy.client.predict(broken, api_name="/about")
    page, *_ = tag(toy, COFFEE, "boat")  # and the server keeps serving
    assert "*boat*" in page


def test_choosing_another_model_and_its_about_panel(toy, models_dir):
    other = str((models_dir / "table_k2.safetensors").resolve())
    about = toy.client.predict(other, api_name="/about")
    assert "K = 2 principal vectors" in about and "6 seen tags, 2 unseen tags" in about
    _, _, maps, *_ = tag(toy, COFFEE, model=other)
    assert len(maps) == 2


def test_every_shipped_example_runs_through_the_default_model(default_server):
    from sdl_core.registry import resolve_name
    rows = example_rows(EXAMPLES_DIR)
    assert len(rows) >= 4
    default = resolve_name("default")
    k = None
    for photo, typed in rows:
        page, json_path, maps, _, tag_maps, _ = default_server.client.predict(
            handle_file(photo), typed, False, 10, default, api_name="/tag")
        data = json.loads(Path(json_path).read_text())
        assert len(data["tags"]) == 10, photo
        k = k or len(maps)
        assert len(maps) == k == len(tag_maps) and k >= 1
        assert data["tags"][0]["tag"] in page
    about = default_server.client.predict(default, api_name="/about")
    assert "unseen tags" in about and "Measured quality" in about

"""The Search tab through gradio_client, on a real server holding only that tab.

The toy colour model of tests/core/test_search.py makes the expected order known:
a photo's score for "red" is its mean red.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from demo.search_tab import build_search_tab
from tests.core.test_search import color_tagger, solid
from tests.demo.conftest import free_port

COLORS = {"a.png": (250, 10, 10), "b.png": (120, 200, 30), "c.png": (30, 60, 240), "sub/d.png": (180, 180, 20)}


class Setup:
    def __init__(self, folder: Path, client: Client, encoded: list[int]) -> None:
        self.folder, self.client, self.encoded = folder, client, encoded

    def search(self, tags: str, mode: str = "any", top_n: int = 3, folder: str | None = None, uploads=None):
        return self.client.predict(str(self.folder) if folder is None else folder, uploads, tags, mode, top_n,
                                   api_name="/search")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("search") / "photos"
    for name, rgb in COLORS.items():
        solid(folder / name, rgb)
    half = np.zeros((40, 40, 3), np.uint8)
    half[:, :20] = (255, 0, 0)  # red left half, blue right half
    half[:, 20:] = (0, 0, 255)
    Image.fromarray(half).save(folder / "half.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    tagger = color_tagger()
    encoded: list[int] = []
    encode = tagger._encode_pixels  # every forward pass of the tagger goes through it

    def counting(pixels, with_maps=False):
        if not with_maps:  # indexing; maps (with_maps=True) are drawn per shown result
            encoded.append(pixels.shape[0])
        return encode(pixels, with_maps=with_maps)

    tagger._encode_pixels = counting  # type: ignore[method-assign]
    with gr.Blocks(analytics_enabled=False) as app:
        with gr.Tab("Search"):
            build_search_tab(lambda: tagger, [folder])
    app.queue()
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield Setup(folder, Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl"))), encoded)
    finally:
        app.close()


def test_search_folder_gallery_and_heat_maps(setup: Setup) -> None:
    matches, maps, notes = setup.search("red", top_n=3)
    names = [m["caption"].split(" · ", 1)[1] for m in matches]
    assert names == ["a.png", "sub/d.png", "half.png"]  # mean red 250, 180, 127.5 (b: 120, c: 30)
    assert all(Path(m["image"]).is_file() for m in matches)
    assert float(matches[0]["caption"].split(" · ")[0]) == pytest.approx(250 / 255, abs=2e-3)
    assert len(maps) == 3 and all("principal vector k=0" in m["caption"] for m in maps)
    assert "broken.jpg" in notes and "Searched 5 photos" in notes
    assert sum(setup.encoded) == 5
    # the half photo's map of the vector that matched "red" is bright where the red is
    assert maps[2]["caption"].startswith("half.png")
    heat = np.asarray(Image.open(maps[2]["image"]).convert("L"), dtype=float)
    assert heat[:, : heat.shape[1] // 2].mean() > heat[:, heat.shape[1] // 2:].mean() + 20

    # a second search reuses the index: nothing new is encoded
    matches, _, notes = setup.search("blue, grey, purple", mode="all", top_n=2)
    assert sum(setup.encoded) == 5
    assert "purple" in notes and "Not in vocabulary" in notes
    assert [m["caption"].split(" · ", 1)[1] for m in matches] == ["c.png", "half.png"]  # tie at grey: by path
    # a new photo is picked up by the next search, and only it is encoded
    solid(setup.folder / "z.png", (0, 0, 255))
    matches, _, _ = setup.search("blue", top_n=1)
    assert matches[0]["caption"].endswith("z.png") and sum(setup.encoded) == 6


def test_search_uploads(setup: Setup, tmp_path: Path) -> None:
    up = [solid(tmp_path / "u1.png", (10, 250, 10)), solid(tmp_path / "u2.png", (10, 20, 30))]
    # uploads are searched instead of the chosen folder
    matches, maps, notes = setup.search("green", top_n=5, uploads=[handle_file(str(p)) for p in up])
    assert [m["caption"].split(" · ", 1)[1] for m in matches] == ["u1.png", "u2.png"]
    assert "Searched 2 photos" in notes and len(maps) == 2


@pytest.mark.parametrize("tags, kwargs, message", [
    ("", {}, "Type at least one tag"),
    ("purple, teal", {}, "none of the tags"),
    ("red", {"top_n": 0}, "minimum"),
    ("red", {"folder": "/etc"}, "/etc"),
])
def test_bad_requests_show_a_message(setup: Setup, tags: str, kwargs: dict, message: str) -> None:
    with pytest.raises(Exception) as info:
        setup.search(tags, **kwargs)
    assert message.lower() in str(info.value).lower()
    assert "Traceback" not in str(info.value)

"""The Search tab on a folder above the approximate index's threshold (lowered with
SDL_TAGGER_ANN_MIN_PHOTOS), through gradio_client on a real server holding only that tab.

The folder holds an index that ``python -m sdl_core index`` wrote (with its approximate
sidecar); the tab starts from it, keeps the approximate part up to date in memory as photos
come, and shows what exact search shows. The toy colour model makes the order known.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import gradio as gr
import pytest
from gradio_client import Client

from demo.search_tab import build_search_tab
from sdl_core.search import DEFAULT_INDEX_NAME, load_index, query_space, search, update_index
from sdl_core.search.ann import MIN_PHOTOS_ENV, sidecar_path
from tests.core.test_search import color_tagger, solid
from tests.demo.conftest import free_port

REDS = {f"r{i:02d}.png": (250 - 12 * i, 40 + 5 * i, 30) for i in range(10)}  # r00 the reddest


@pytest.fixture(scope="module")
def tab(tmp_path_factory) -> Iterator[tuple[Client, Path, list[int]]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MIN_PHOTOS_ENV, "6")
        folder = tmp_path_factory.mktemp("big") / "photos"
        for name, rgb in REDS.items():
            solid(folder / name, rgb)
        tagger = color_tagger()
        index, _ = update_index(folder, tagger)
        index.save(folder / DEFAULT_INDEX_NAME)  # what `python -m sdl_core index` leaves in the folder
        assert index.ann is not None and sidecar_path(folder / DEFAULT_INDEX_NAME).is_file()
        encoded: list[int] = []
        encode = tagger._encode_pixels

        def counting(pixels, with_maps=False):
            encoded.extend([] if with_maps else [pixels.shape[0]])
            return encode(pixels, with_maps=with_maps)

        tagger._encode_pixels = counting  # type: ignore[method-assign]
        with gr.Blocks(analytics_enabled=False) as app:
            build_search_tab(lambda: tagger, [folder])
        app.queue()
        _, url, _ = app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                               quiet=True)
        try:
            yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl"))), folder, encoded
        finally:
            app.close()


def names(matches: list[dict]) -> list[str]:
    return [m["caption"].split(" · ", 1)[1] for m in matches]


def test_search_tab_uses_the_approximate_index(tab) -> None:
    client, folder, encoded = tab
    matches, maps, notes = client.predict(str(folder), None, "red", "any", 3, api_name="/search")
    assert names(matches) == ["r00.png", "r01.png", "r02.png"] and len(maps) == 3
    assert "Searched 10 photos" in notes and "approximate index named" in notes
    assert encoded == []  # started from the folder's index: nothing encoded again

    solid(folder / "zz.png", (255, 0, 0))  # a new photo: encoded once, entered into the approximate index
    matches, _, notes = client.predict(str(folder), None, "red", "any", 1, api_name="/search")
    assert names(matches) == ["zz.png"] and sum(encoded) == 1 and "Searched 11 photos" in notes
    matches, _, notes = client.predict(str(folder), None, "red, green", "all", 4, api_name="/search")
    assert sum(encoded) == 1 and "approximate index named" in notes
    assert len(load_index(folder / DEFAULT_INDEX_NAME)) == 10  # the tab never writes the folder's index
    index, _ = update_index(folder, color_tagger(), load_index(folder / DEFAULT_INDEX_NAME))
    exact = search(dataclasses.replace(index, ann=None), ["red", "green"], query_space(index), top_n=4, mode="all")
    assert names(matches) == [h.path for h in exact.hits]

"""Fixtures for the demo: a toy checkpoint in the WordLlama space (so typed words embed),
and real servers launched in-process on a free port.

The toy server is module-scoped; the default-model server is shared by the session
(the client and browser tests both use it).
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest

from sdl_core.checkpoint import save_checkpoint
from sdl_core.vocab import Vocabulary
from sdl_core.wordvec import WORDLLAMA, load_word_space
from tests.conftest import TOY_TAGS, make_sdl_model, make_vocab

#: The toy model's unseen tags (starred in the page).
TOY_UNSEEN = ("boat", "house")
TOY_K = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_toy_checkpoint(path: Path, k: int = TOY_K) -> Path:
    """A random-weight SDL model (timm test_resnet) whose vocabulary lives in WordLlama."""
    space = load_word_space("wordllama")
    vocab = Vocabulary.from_tags(TOY_TAGS, space, seen=[t for t in TOY_TAGS if t not in TOY_UNSEEN])
    model = make_sdl_model(k=k, d=WORDLLAMA.dim, space=WORDLLAMA)
    return save_checkpoint(model, vocab, path)


@pytest.fixture(scope="session")
def toy_checkpoint(tmp_path_factory) -> Path:
    return make_toy_checkpoint(tmp_path_factory.mktemp("demo-model") / "toy.safetensors")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, toy_checkpoint: Path) -> Path:
    """A models/ folder with a second good checkpoint (K=2, a fixed word table: typed words
    outside it cannot be embedded) and a broken one."""
    folder = tmp_path_factory.mktemp("models")
    save_checkpoint(make_sdl_model(k=2), make_vocab(unseen=TOY_UNSEEN), folder / "table_k2.safetensors")
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    return folder


class Server:
    """A launched app: its URL, the Blocks, and a gradio_client on it."""

    def __init__(self, app, url: str, downloads: Path) -> None:
        from gradio_client import Client
        self.app = app
        self.url = url
        self.client = Client(url, verbose=False, download_files=str(downloads))

    def close(self) -> None:
        self.app.close()


def launch_server(model: str, models_dir: Path | None, tmp: Path) -> Server:
    from demo.app import build_app, launch
    app = build_app(model, models_dir, json_root=tmp / "json")
    _, url, _ = launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
    return Server(app, url, tmp / "downloads")


@pytest.fixture(scope="module")
def toy_server(toy_checkpoint: Path, models_dir: Path, tmp_path_factory) -> Iterator[Server]:
    server = launch_server(str(toy_checkpoint), models_dir, tmp_path_factory.mktemp("toy-server"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def default_server(tmp_path_factory) -> Iterator[Server]:
    server = launch_server("default", None, tmp_path_factory.mktemp("default-server"))
    yield server
    server.close()

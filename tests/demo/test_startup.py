"""Start-up: the page is served before the model has loaded; requests wait for the load;
a model that fails to load in the background reaches the user (page and CLI) as its message."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from gradio_client import handle_file
from safetensors.torch import save_file

import demo.cli
from demo.app import EXAMPLES_DIR
from demo.cli import EXIT_USAGE, main
from demo.models import TaggerCache
from sdl_core.errors import CheckpointError
from tests.demo.conftest import TOY_K, free_port, launch_server

COFFEE = EXAMPLES_DIR / "coffee.jpg"


def tag(server, model: str, tags: str = "boat"):
    return server.client.predict(handle_file(str(COFFEE)), tags, False, 5, model, api_name="/tag")


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    """A readable safetensors file that is not one of our checkpoints: it passes the quick
    header check at start-up and fails only when the model is loaded."""
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    return path


def test_a_request_sent_before_the_model_is_ready_waits_for_it(toy_checkpoint, tmp_path, monkeypatch):
    gate = threading.Event()
    load = TaggerCache._load

    def held_load(self, value):  # the startup load cannot finish until the request is queued
        gate.wait(120)
        return load(self, value)

    monkeypatch.setattr(TaggerCache, "_load", held_load)
    server = launch_server(str(toy_checkpoint), None, tmp_path)
    try:
        startup = server.app.tagger_cache.startup
        assert startup is not None and not startup.done()  # launch started the load; the page is up
        job = server.client.submit(handle_file(str(COFFEE)), "boat", False, 5, str(toy_checkpoint.resolve()),
                                   api_name="/tag")
        time.sleep(1.0)
        assert not job.done() and not startup.done()  # waiting, not refused
        gate.set()
        page, _, maps, _, tag_maps, _ = job.result(timeout=120)
        assert "*boat*" in page and len(maps) == len(tag_maps) == TOY_K
        assert startup.result(timeout=60) is server.app.tagger_cache.get()  # loaded once, shared
    finally:
        gate.set()
        server.close()


def test_a_model_that_fails_to_load_in_the_background_shows_its_message(foreign, tmp_path):
    server = launch_server(str(foreign), None, tmp_path)
    try:
        with pytest.raises(Exception) as info:  # sent at once: it waits for the failing load, then reports it
            tag(server, str(foreign.resolve()))
        assert "foreign.safetensors: not an SDL tagger checkpoint" in str(info.value)
        assert "Traceback" not in str(info.value)
        with pytest.raises(CheckpointError, match="not an SDL tagger checkpoint"):
            server.app.tagger_cache.startup.result(timeout=60)
        with pytest.raises(Exception, match="not an SDL tagger checkpoint"):
            server.client.predict(str(foreign.resolve()), api_name="/about")
    finally:
        server.close()


def test_cli_stops_with_one_error_line_when_the_startup_model_fails_to_load(foreign, capsys):
    assert main(["--model", str(foreign), "--port", str(free_port())], env={}) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: foreign.safetensors: not an SDL tagger checkpoint")
    assert not any("Traceback" in line for line in err)


def test_cli_refuses_an_unreadable_checkpoint_before_serving(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")

    def must_not_launch(*args, **kwargs):
        raise AssertionError("the server was started for an unreadable checkpoint")

    monkeypatch.setattr("demo.app.launch", must_not_launch)
    assert demo.cli.main(["--model", str(broken), "--port", str(free_port())], env={}) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: broken.safetensors: not a readable safetensors checkpoint") and err.count("\n") == 1

"""The demo with ``SDL_TAGGER_MODEL`` naming the authors' model: downloaded from a loopback mirror
at start-up and used through gradio_client; with the mirror down, the page still comes up, on
the offline default, and says why (checked in a real browser where Chromium is installed)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from tests.conftest import ROOT, make_photo, needs_reference
from tests.demo.conftest import free_port
from tests.mirror import PTH, MirrorServer, Route, write_random_official_pth

NAME = "sdl_tresnet_m.nus_wide"
DEFAULT = "conse_effnet_lite0.wordllama"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def official_pth(tmp_path_factory) -> Path:
    if not (ROOT.parent / "shared" / "reference" / "zs_sdl").is_dir():
        pytest.skip("../shared/reference/zs_sdl (the authors' data files) is not present")
    return write_random_official_pth(tmp_path_factory.mktemp("official") / PTH)


def start_demo(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """``python -m demo`` on a free port with ``env``; returns once the page answers."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("SDL_TAGGER_")}
    full.update(GRADIO_SERVER_PORT=str(port), PYTHONPATH=str(ROOT), SDL_TAGGER_CACHE=str(tmp_path / "cache"), **env)
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--models-dir", str(tmp_path)], cwd=ROOT, env=full,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"the demo did not come up: {(tmp_path / 'demo.log').read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    proc.kill()  # does nothing once it has exited


def startup(client: Client) -> tuple[str, str]:
    """(notice text, model the page runs) from the page-load event's API (it returns updates;
    the notice is Markdown with escapes)."""
    notice, menu = client.predict(api_name="/startup")
    return (notice.get("value") or "").replace("\\", ""), menu["value"]


def tag(client: Client, photo: Path, tags: str) -> dict:
    """Rank only ``tags`` through the page's API with no model named (the one the page runs); the JSON."""
    _, json_file, *_ = client.predict(handle_file(str(photo)), tags, True, 5, None, api_name="/tag")
    return json.loads(Path(json_file).read_text())


@needs_reference
def test_startup_model_by_name_downloads_from_the_mirror_and_tags(official_pth, tmp_path):
    photo = tmp_path / "photo.jpg"
    make_photo(160, 120, seed=5).save(photo)
    with MirrorServer().serve_official(official_pth) as mirror:
        proc, url = start_demo(tmp_path, SDL_TAGGER_MODEL=NAME, SDL_TAGGER_MIRROR=mirror.url)
        try:
            client = Client(url, verbose=False, download_files=str(tmp_path / "dl"))
            result = tag(client, photo, "moose, reindeer")  # waits for the download and the conversion
            assert result["model"] == NAME
            approximate = {t["tag"]: t["approximate"] for t in result["tags"]}
            assert approximate == {"moose": False, "reindeer": True}  # reindeer: through the bridge
            notice, model = startup(client)
            assert model == NAME and not notice
            assert mirror.requests.count(PTH) == 1
        finally:
            stop(proc)
    assert (tmp_path / "cache" / "pretrained" / f"{NAME}.safetensors").is_file()


def test_mirror_down_serves_the_default_and_says_why_on_the_page(tmp_path):
    with socket.socket() as sock:  # a loopback port nobody listens on: the mirror is down
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}"
    photo = tmp_path / "photo.jpg"
    make_photo(seed=6).save(photo)
    proc, url = start_demo(tmp_path, SDL_TAGGER_MODEL=NAME, SDL_TAGGER_MIRROR=down)
    try:
        client = Client(url, verbose=False, download_files=str(tmp_path / "dl"))
        notice, model = startup(client)
        assert model == DEFAULT
        assert f"{NAME} could not be loaded" in notice and "cannot connect to 127.0.0.1" in notice
        assert DEFAULT in notice
        assert tag(client, photo, "espresso")["model"] == DEFAULT
        assert proc.poll() is None  # still serving
        if CHROMIUM.exists():
            from playwright.sync_api import sync_playwright
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
                page = browser.new_page()
                page.goto(url)
                shown = page.locator("#sdl-notice")
                shown.wait_for(state="visible", timeout=60_000)
                page.wait_for_function("() => document.querySelector('#sdl-notice').innerText.includes('could not')",
                                       timeout=60_000)
                assert "could not be loaded" in shown.inner_text() and DEFAULT in shown.inner_text()
                browser.close()
    finally:
        stop(proc)


def test_an_unusable_sdl_tagger_model_still_gives_a_page(tmp_path):
    """In-process: the app is built on the default with a notice; a bad --model stays an error."""
    from demo.app import build_app
    from demo.cli import _build, build_parser
    from sdl_core.errors import ModelNotFoundError

    env = {"SDL_TAGGER_MODEL": "no-such-model"}
    args = build_parser(env).parse_args(["--models-dir", str(tmp_path)])
    app = _build(build_app, args, env)
    assert app.tagger_cache.default == DEFAULT
    assert app.tagger_cache.notice.startswith("SDL_TAGGER_MODEL=no-such-model cannot be used")
    bad = argparse.Namespace(**{**vars(args), "model": "no-such-model"})
    with pytest.raises(ModelNotFoundError):
        _build(build_app, bad, {})


def test_the_menu_marks_a_model_that_is_not_cached(tmp_path, monkeypatch):
    from demo.models import TaggerCache, model_choices
    monkeypatch.setenv("SDL_TAGGER_CACHE", str(tmp_path))
    cache = TaggerCache(model_choices("default", None))
    labels = dict((value, label) for label, value in cache.labels())
    assert labels[NAME] == f"{NAME} (download 136 MB on first use)"
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / f"{NAME}.safetensors").write_bytes(b"cached")
    assert dict((v, lab) for lab, v in cache.labels())[NAME] == f"{NAME} (cached)"


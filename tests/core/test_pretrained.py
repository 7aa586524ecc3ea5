"""The authors' model by name: downloaded once from a loopback mirror, checked, converted, cached.

The mirror serves the authors' real data files (../shared) and a random-weight ``.pth``
in their key layout. Every command here is the real one (``python -m sdl_core tag``);
every bad input must end in one ``error:`` line, exit 2, and a cache with nothing in it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdl_core import pretrained
from sdl_core.errors import ModelNotFoundError, OfflineError
from tests.conftest import ROOT, make_photo, needs_reference
from tests.mirror import DATA_FILES, NUS_WIDE, PTH, MirrorServer, Route, write_random_official_pth

pytestmark = needs_reference
NAME = "sdl_tresnet_m.nus_wide"


class RunsCode:
    """Pickles as a call of os.system: a .pth holding it must be refused, never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="session")
def official_pth(tmp_path_factory) -> Path:
    """~135 MB, written once per session."""
    return write_random_official_pth(tmp_path_factory.mktemp("official") / PTH)


@pytest.fixture(scope="session")
def bad_pths(tmp_path_factory, official_pth) -> dict[str, Path]:
    import torch
    folder = tmp_path_factory.mktemp("bad-pth")
    truncated = folder / "truncated.pth"
    with official_pth.open("rb") as fh:
        truncated.write_bytes(fh.read(20_000_000))
    evil = folder / "evil.pth"
    torch.save({"model": RunsCode(folder / "pwned"), "num_classes": 1006}, evil)
    return {"truncated": truncated, "evil": evil, "marker": folder / "pwned"}


@pytest.fixture
def mirror(official_pth):
    with MirrorServer().serve_official(official_pth) as server:
        yield server


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    make_photo(160, 120, seed=3).save(path)
    return path


def settings(mirror: MirrorServer, cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDL_TAGGER_")}
    return {**env, "PYTHONPATH": str(ROOT), "SDL_TAGGER_MIRROR": mirror.url, "SDL_TAGGER_CACHE": str(cache),
            **extra}


def run(args: list[str], env: dict[str, str], timeout: int = 300, wrap: list[str] = ()):
    command = [*wrap, sys.executable, "-m", "sdl_core", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def tag(photo: Path, model: str = NAME, *more: str) -> list[str]:
    return ["tag", photo, "--model", model, "--tags", "moose, reindeer", "--json", "--top-k", "0", *more]


def files_in(cache: Path) -> list[str]:
    """Every file in the cache but the lock files (which hold nothing)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]


def test_tag_downloads_converts_caches_then_runs_offline(mirror, photo, tmp_path):
    cache = tmp_path / "cache"
    first = run(tag(photo), settings(mirror, cache))
    assert first.returncode == 0, first.stderr
    assert sorted(mirror.requests) == sorted([PTH, *DATA_FILES])  # each file once
    assert [f for f in files_in(cache) if not f.startswith("onnx/")] == [f"pretrained/{NAME}.safetensors"]
    result = json.loads(first.stdout)
    assert result["model"] == NAME
    tags = {t["tag"]: t for t in result["results"][0]["tags"]}
    moose = tags["moose"]  # typed, and one of the authors' 1006 tags: its own exact vector
    assert moose["typed"] and moose["seen"] is True and moose["approximate"] is False
    reindeer = tags["reindeer"]  # not one of them: a vector through the WordLlama bridge, flagged
    assert reindeer["typed"] and reindeer["approximate"] is True and isinstance(reindeer["score"], float)
    assert result["results"][0]["not_in_vocabulary"] == []

    again = run(tag(photo, "sdl_nus_wide"), settings(mirror, cache, SDL_TAGGER_OFFLINE="1"))
    assert again.returncode == 0, again.stderr
    assert len(mirror.requests) == 4  # no network the second time
    assert json.loads(again.stdout)["results"] == result["results"]


def test_offline_without_cache_names_the_manual_way(mirror, photo, tmp_path):
    out = run(tag(photo), settings(mirror, tmp_path / "cache", SDL_TAGGER_OFFLINE="1"))
    assert out.returncode == 2
    (line,) = error_lines(out.stderr)
    assert "SDL_TAGGER_OFFLINE is set" in line and "import-official" in line
    assert mirror.requests == [] and files_in(tmp_path / "cache") == []


BAD_INPUTS = {
    "http 404": ({PTH: Route(status=404)}, "HTTP 404"),
    "http 500": ({"classes.pickle": Route(status=500)}, "HTTP 500"),
    "truncated pth": ({PTH: "truncated"}, "not the published model.*NUS_mtresnet_224.pth.*central directory"),
    "connection cut": ({PTH: "cut"}, "broke off before the whole file arrived"),
    "html page": ({PTH: Route(b"<!DOCTYPE html>\n<html><title>Error</title></html>")}, "sent a web page"),
    "data checksum": ({"wordvec_array.pickle": "tampered"}, "wordvec_array.pickle.*checksum mismatch"),
    "server hangs": ({PTH: Route(hang=True)}, r"no answer from 127\.0\.0\.1:\d+ within 2 s"),
    "pth runs code": ({PTH: "evil"}, "refused or unreadable with weights_only=True.*unsupported GLOBAL posix.system"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_leaves_nothing(case, mirror, bad_pths, official_pth, photo, tmp_path):
    changes, expected = BAD_INPUTS[case]
    for name, change in changes.items():
        if change == "tampered":
            data = bytearray((NUS_WIDE / name).read_bytes())
            data[-1] ^= 1
            change = Route(bytes(data))
        elif change == "cut":
            change = Route(official_pth, cut_at=30_000_000)
        elif isinstance(change, str):
            change = Route(bad_pths[change])
        mirror.routes[name] = change
    cache = tmp_path / "cache"
    start = time.monotonic()
    out = run(tag(photo), settings(mirror, cache, SDL_TAGGER_TIMEOUT="2"))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    (line,) = error_lines(out.stderr)
    assert re.search(expected, line), line
    assert files_in(cache) == []
    assert not bad_pths["marker"].exists()
    if case == "server hangs":
        assert time.monotonic() - start < 60


def _namespace_works() -> bool:
    probe = ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && mount -o remount,ro /mnt"]
    try:
        return shutil.which("unshare") is not None and subprocess.run(probe, capture_output=True,
                                                                     timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_namespace = pytest.mark.skipif(not _namespace_works(), reason="cannot mount a small or read-only folder here "
                                     "(needs unprivileged user namespaces: unshare -rm)")


@needs_namespace
@pytest.mark.parametrize("case, mount, expected", [
    ("read-only cache", "mount -t tmpfs tmpfs {c} && mount -o remount,ro {c}", "the file system is read-only"),
    ("full disk", "mount -t tmpfs -o size=40m tmpfs {c}", "the disk is full"),
])
def test_unwritable_cache_is_one_line(case, mount, expected, mirror, photo, tmp_path):
    """A real read-only folder and a real full disk: a tmpfs mounted in a private namespace."""
    cache = tmp_path / "cache"
    cache.mkdir()
    script = mount.format(c=cache) + ' && exec "$@"'
    out = run(tag(photo), settings(mirror, cache), wrap=["unshare", "-rm", "sh", "-c", script, "sh"])
    assert out.returncode == 2, out.stderr
    (line,) = error_lines(out.stderr)
    assert expected in line and "SDL_TAGGER_CACHE" in line and "Traceback" not in out.stderr
    assert files_in(cache) == []  # the tmpfs is gone with the namespace; the folder under it stayed empty


FETCH = "from sdl_core.pretrained import ensure_pretrained; print(ensure_pretrained('sdl_nus_wide', progress=False))"


def fetcher(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FETCH], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_processes_share_one_download(mirror, official_pth, tmp_path):
    mirror.routes[PTH] = Route(official_pth, bytes_per_s=40e6)  # ~3.5 s: the two runs overlap
    env = settings(mirror, tmp_path / "cache")
    procs = [fetcher(env), fetcher(env)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] and Path(outs[0][0].strip()).is_file()
    assert mirror.requests.count(PTH) == 1  # the second process waited, then used the first one's file
    assert any("waiting" in err for _, err in outs)
    assert files_in(tmp_path / "cache") == [f"pretrained/{NAME}.safetensors"]


def test_interrupted_download_leaves_nothing_and_the_next_one_completes(mirror, official_pth, photo, tmp_path):
    mirror.routes[PTH] = Route(official_pth, bytes_per_s=10e6)
    cache = tmp_path / "cache"
    env = settings(mirror, cache)
    for sig in (signal.SIGINT, signal.SIGKILL):  # Ctrl-C in the real command; a kill mid-download
        command = [sys.executable, "-m", "sdl_core", *map(str, tag(photo))] if sig == signal.SIGINT \
            else [sys.executable, "-c", FETCH]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while mirror.sent.get(PTH, 0) < 5_000_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (130, -signal.SIGKILL), err
        assert not pretrained.cached_path(NAME).is_file() and f"{NAME}.safetensors" not in str(files_in(cache))
        mirror.sent.clear()
        if sig == signal.SIGINT:
            assert files_in(cache) == []
    # a killed process cannot clean up: its staging folder waits for the next download, which removes it
    assert any(".partial" in f for f in files_in(cache))
    mirror.routes[PTH] = Route(official_pth)
    done = fetcher(env)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert files_in(cache) == [f"pretrained/{NAME}.safetensors"]


# --- the table, without downloads --------------------------------------------------

def test_names_aliases_and_menu_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_TAGGER_CACHE", str(tmp_path))
    assert pretrained.resolve_pretrained("sdl_nus_wide").name == NAME
    assert pretrained.resolve_pretrained("default") is None and pretrained.checkpoint_for("x.safetensors") is None
    assert NAME in pretrained.list_pretrained()
    entry = pretrained.get_pretrained(NAME)
    assert 130e6 < entry.download_bytes < 140e6
    assert pretrained.describe("sdl_nus_wide") == f"{NAME} (download 136 MB on first use)"
    with pytest.raises(ModelNotFoundError, match="no pretrained model named 'nope'"):
        pretrained.get_pretrained("nope")


def test_a_cached_model_loads_everywhere_with_no_network(tmp_path, monkeypatch, capsys):
    """Tagger.from_pretrained, tag, index, search and models find the cached file; nothing listens
    at the mirror, so any download would fail."""
    from sdl_core.checkpoint import save_checkpoint
    from sdl_core.cli import main
    from sdl_core.tagger import Tagger
    from tests.conftest import make_sdl_model, make_vocab

    monkeypatch.setenv("SDL_TAGGER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SDL_TAGGER_MIRROR", "http://127.0.0.1:9")
    monkeypatch.delenv("SDL_TAGGER_OFFLINE", raising=False)
    cached = save_checkpoint(make_sdl_model(), make_vocab(), pretrained.cached_path(NAME))  # a stand-in
    assert pretrained.ensure_pretrained("sdl_nus_wide") == cached
    assert Tagger.from_pretrained("sdl_nus_wide").name == "toy_test_resnet_k3"
    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo(seed=1).save(photos / "a.jpg")
    assert main(["index", str(photos), "--model", "sdl_nus_wide", "--no-progress"]) == 0
    assert main(["search", str(photos), "cat", "--model", NAME, "--json"]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    assert f"{NAME} (cached) (alias sdl_nus_wide)" in capsys.readouterr().out
    cached.unlink()
    monkeypatch.setenv("SDL_TAGGER_OFFLINE", "yes")
    with pytest.raises(OfflineError, match="import-official"):
        pretrained.ensure_pretrained(NAME)

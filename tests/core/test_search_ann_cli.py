"""``python -m sdl_core index`` / ``search`` on a folder above the approximate index's threshold
(lowered with SDL_TAGGER_ANN_MIN_PHOTOS), through real subprocesses: the commands build,
update and use the approximate index without being asked, and find what exact search finds."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from sdl_core import cli
from sdl_core.checkpoint import save_checkpoint
from sdl_core.search import DEFAULT_INDEX_NAME, load_index, query_space, search
from sdl_core.search.ann import MIN_PHOTOS_ENV, sidecar_path
from tests.conftest import ROOT, make_photo, make_sdl_model, make_vocab


def run(*args: str, threshold: str = "5") -> subprocess.CompletedProcess:
    env = {**os.environ, MIN_PHOTOS_ENV: threshold}
    return subprocess.run([sys.executable, "-m", "sdl_core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=env)


def exact_paths(index_path: Path, tags: list[str], mode: str, top_n: int) -> list[str]:
    index = load_index(index_path)
    exact = dataclasses.replace(index, ann=None)
    return [h.path for h in search(exact, tags, query_space(index), top_n=top_n, mode=mode).hits]


def test_index_and_search_use_the_approximate_index(tmp_path: Path, capsys, monkeypatch) -> None:
    ckpt = save_checkpoint(make_sdl_model(k=3, size=32, seed=7), make_vocab(), tmp_path / "toy.safetensors")
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(8):
        make_photo(40, 40, seed=30 + i).save(root / f"p{i}.jpg")
    proc = run("index", str(root), "--model", str(ckpt), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    out = root / DEFAULT_INDEX_NAME
    assert "8 photos (8 added" in proc.stdout and f"{sidecar_path(out)}: approximate index of 24 vectors" in proc.stdout
    index = load_index(out)
    assert index.ann is not None and index.ann.photos == 8

    proc = run("search", str(root), "dog, cat", "--json", "--mode", "all", "--top-n", "4")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["approximate"] is True and data["searched"] == 8
    assert [r["relative_path"] for r in data["results"]] == exact_paths(out, ["dog", "cat"], "all", 4)

    # an update: one photo gone, one new; the approximate index follows, ids stay
    (root / "p2.jpg").unlink()
    make_photo(40, 40, seed=99).save(root / "new.jpg")
    proc = run("index", str(root), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "1 added, 0 updated, 1 removed, 7 unchanged" in proc.stdout and "approximate index of 24" in proc.stdout
    index = load_index(out)
    by_path = dict(zip((e.path for e in index.entries), index.ids.tolist()))
    assert index.ann is not None and by_path["p3.jpg"] == 3 and by_path["new.jpg"] == 8
    monkeypatch.setenv(MIN_PHOTOS_ENV, "5")
    for tags, mode in ((["dog"], "any"), (["sky", "tree", "boat"], "any"), (["sky", "tree", "boat"], "all")):
        assert cli.main(["search", str(root), ", ".join(tags), "--json", "--mode", mode, "--top-n", "3"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["approximate"] and [r["relative_path"] for r in data["results"]] == exact_paths(out, tags,
                                                                                                     mode, 3)

    # a sidecar that does not belong to the index: search reads every vector and says so
    sidecar_path(out).write_bytes(b"SDL-ANN\n" + b"\x00" * 64)
    proc = run("search", str(root), "dog", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["approximate"] is False
    assert "approximate index not used" in proc.stderr and "Traceback" not in proc.stderr
    assert cli.main(["index", str(root), "--no-progress"]) == 0  # ... and the next `index` rebuilds it
    assert "approximate index of 24 vectors" in capsys.readouterr().out and load_index(out).ann is not None


def test_a_bad_threshold_is_one_line(tmp_path: Path) -> None:
    ckpt = save_checkpoint(make_sdl_model(k=3, size=32, seed=7), make_vocab(), tmp_path / "toy.safetensors")
    root = tmp_path / "photos"
    root.mkdir()
    make_photo(40, 40, seed=1).save(root / "a.jpg")
    proc = run("index", str(root), "--model", str(ckpt), "--no-progress", threshold="lots")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {MIN_PHOTOS_ENV} must be a whole number of photos "
                                                "(1 or more), got 'lots'"]

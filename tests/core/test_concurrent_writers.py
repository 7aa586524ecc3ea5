"""Concurrent writers: two ``sdl_core index`` runs on one folder, and several processes
exporting the same ONNX graph into one shared cache (what two demos starting at once do).

An index run holds a file lock for its whole read-update-write: a second run fails at
once with one clear line, and the index on disk is always a whole one. ONNX graphs are
renamed into place whole, so concurrent exporters never leave a partial graph.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sdl_core import cli, onnx_backend
from sdl_core.checkpoint import save_checkpoint
from sdl_core.search import DEFAULT_INDEX_NAME, SearchIndexError, load_index
from sdl_core.files import exclusive
from tests.conftest import ROOT, make_photo, make_sdl_model, make_vocab
from tests.disks import leftovers

BUSY = "another process is writing the search index"


@pytest.fixture
def setup(tmp_path) -> tuple[Path, Path]:
    ckpt = save_checkpoint(make_sdl_model(k=2, size=32), make_vocab(), tmp_path / "toy.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        make_photo(48, 40, seed=i).save(photos / f"p{i:02d}.jpg")
    return ckpt, photos


def test_second_index_run_fails_clearly_while_one_holds_the_lock(setup, capsys) -> None:
    ckpt, photos = setup
    index_file = photos / DEFAULT_INDEX_NAME
    with exclusive(index_file, "search index", SearchIndexError):
        assert cli.main(["index", str(photos), "--model", str(ckpt), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {BUSY}") and err.count("\n") == 1, err
        assert not index_file.exists()
    assert cli.main(["index", str(photos), "--model", str(ckpt), "--no-progress"]) == 0  # free again


def test_two_index_processes_at_once(setup) -> None:
    """Started together: each one finishes its index or says the other is writing it; the
    index on disk is whole and lists every photo; no temporary file is left."""
    ckpt, photos = setup
    command = [sys.executable, "-m", "sdl_core", "index", str(photos), "--model", str(ckpt), "--no-progress",
               "--batch-size", "1"]
    procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0, results
    for code, out, err in results:
        assert code == 0 or (code == 2 and BUSY in err and "Traceback" not in err), (code, out, err)
    index = load_index(photos)
    assert [e.path for e in index.entries] == [f"p{i:02d}.jpg" for i in range(12)]
    assert leftovers(photos) == []


EXPORTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from sdl_core.tagger import Tagger
    go = Path(sys.argv[3])
    Path(sys.argv[3] + ".ready." + str(__import__("os").getpid())).touch()
    while not go.exists():  # every process waits here, so they export at the same moment
        time.sleep(0.01)
    tagger = Tagger.from_pretrained(sys.argv[2])
    print(type(tagger.tag(sys.argv[4], top_k=3).tags[0].score).__name__)
""")


def test_demos_starting_together_share_the_onnx_cache(setup, tmp_path, monkeypatch) -> None:
    """Two processes load the same model at once into an empty shared cache (as two demos
    starting together do): both tag, exactly one whole graph is cached, and it is what the
    next load uses (no export)."""
    pytest.importorskip("onnxruntime")
    ckpt, photos = setup
    cache = tmp_path / "shared-cache"
    go = tmp_path / "go"
    env = {**os.environ, "SDL_TAGGER_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    photo = str(photos / "p00.jpg")
    procs = [subprocess.Popen([sys.executable, "-c", EXPORTER, str(ROOT), str(ckpt), str(go), photo], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.monotonic() + 180
    while len(list(tmp_path.glob("go.ready.*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)  # both have imported torch and wait at the start line
    go.touch()
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    assert all(code == 0 and out.strip() == "float" for code, out, _ in results), results
    graphs = list((cache / "onnx").glob("*.onnx"))
    assert len(graphs) == 1 and leftovers(cache) == [], list((cache / "onnx").iterdir())
    monkeypatch.setenv("SDL_TAGGER_CACHE", str(cache))

    def no_export(*_args):
        raise AssertionError("exported again: the cached graph was not usable")

    monkeypatch.setattr(onnx_backend, "export_graph", no_export)
    model = make_sdl_model(k=2, size=32)
    runner = onnx_backend.onnx_features(model.trunk.eval(), 32)
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(runner(pixels), model.trunk.forward_features(pixels), atol=1e-4)
    assert list((cache / "onnx").glob("*.onnx")) == graphs

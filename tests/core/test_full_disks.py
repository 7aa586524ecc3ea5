"""Full and read-only disks: checkpoints, search indexes and the ONNX graph cache.

Each write ends in one clear ``StorageError``/``SearchIndexError`` line (or, for the
ONNX cache, in running without caching), never leaves a temporary or partial file,
and never damages the file that was there. Real disks: a small tmpfs filled up or
remounted read-only (root on Linux; skipped with the reason elsewhere). The same
promises are also checked everywhere with a simulated ENOSPC.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from sdl_core import cli, files
from sdl_core.checkpoint import save_checkpoint
from sdl_core.errors import StorageError
from sdl_core.onnx_backend import onnx_features
from sdl_core.search import DEFAULT_INDEX_NAME, SearchIndexError, load_index
from tests.conftest import make_photo, make_sdl_model, make_vocab
from tests.disks import fill, leftovers, read_only, small_disk


def _photos(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        make_photo(40, 40, seed=i).save(folder / f"p{i}.jpg", quality=80)


@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(make_sdl_model(k=2, size=32), make_vocab(), tmp_path_factory.mktemp("ckpt") / "t.safetensors")


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- simulated: runs everywhere --------------------------------------------------------------

def test_simulated_full_disk_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "x.bin"
    files.write_bytes(target, b"old")
    monkeypatch.setattr(files.os, "fsync", _no_space)
    with pytest.raises(StorageError, match=r"cannot write the file .*x.bin: the disk is full \(the existing file"):
        files.write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_simulated_full_disk_checkpoint_and_index(tmp_path, monkeypatch, toy_ckpt) -> None:
    photos = tmp_path / "photos"
    _photos(photos, 3)
    assert cli.main(["index", str(photos), "--model", str(toy_ckpt), "--no-progress"]) == 0
    before = load_index(photos).entries
    _photos(photos, 1, start=3)
    monkeypatch.setattr(files.os, "fsync", _no_space)
    with pytest.raises(StorageError, match="the disk is full"):
        save_checkpoint(make_sdl_model(k=2, size=32), make_vocab(), tmp_path / "new.safetensors")
    assert cli.main(["index", str(photos), "--no-progress"]) == 2
    assert load_index(photos).entries == before
    assert not (tmp_path / "new.safetensors").exists() and leftovers(tmp_path) == []


# --- real small disks --------------------------------------------------------------------------

def test_full_disk_index_and_checkpoint(tmp_path, toy_ckpt, capsys) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        photos = disk / "photos"
        _photos(photos, 4)
        assert cli.main(["index", str(photos), "--model", str(toy_ckpt), "--no-progress"]) == 0
        index_file = photos / DEFAULT_INDEX_NAME
        before, data = load_index(index_file).entries, index_file.read_bytes()
        _photos(photos, 2, start=4)
        fill(disk)
        capsys.readouterr()
        assert cli.main(["index", str(photos), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "the disk is full (the existing file is unchanged)" in err, err
        assert "--out" in err and "Traceback" not in err
        assert index_file.read_bytes() == data and load_index(index_file).entries == before
        with pytest.raises(StorageError, match="checkpoint .*: the disk is full"):
            save_checkpoint(make_sdl_model(k=2, size=32), make_vocab(), disk / "model.safetensors")
        assert not (disk / "model.safetensors").exists()
        assert leftovers(disk) == []


def test_read_only_disk_index_and_checkpoint(tmp_path, toy_ckpt, capsys) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        photos = disk / "photos"
        _photos(photos, 3)
        assert cli.main(["index", str(photos), "--model", str(toy_ckpt), "--no-progress"]) == 0
        data = (photos / DEFAULT_INDEX_NAME).read_bytes()
        read_only(disk)
        capsys.readouterr()
        assert cli.main(["index", str(photos), "--rebuild", "--model", str(toy_ckpt), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "read-only" in err and "Traceback" not in err, err
        assert (photos / DEFAULT_INDEX_NAME).read_bytes() == data
        # the index on a read-only disk is still searchable, and another --out still works
        assert cli.main(["search", str(photos), "cat"]) == 0
        out = tmp_path / "new-folder" / "elsewhere.safetensors"  # a folder that does not exist yet
        assert cli.main(["index", str(photos), "--out", str(out), "--model", str(toy_ckpt), "--no-progress"]) == 0
        assert len(load_index(out)) == 3
        with pytest.raises(StorageError, match="read-only"):
            save_checkpoint(make_sdl_model(k=2, size=32), make_vocab(), disk / "model.safetensors")
        with pytest.raises(SearchIndexError, match="read-only"):
            load_index(out).save(photos / DEFAULT_INDEX_NAME)


@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_onnx_cache_on_a_full_or_read_only_disk(tmp_path, monkeypatch, caplog, trouble) -> None:
    """The graph still runs (from memory) and gives torch's features; nothing is cached, nothing is left."""
    pytest.importorskip("onnxruntime")
    trunk = make_sdl_model(size=32, seed=3).trunk.eval()
    with small_disk(tmp_path / "cache", "256k") as disk:
        monkeypatch.setenv("SDL_TAGGER_CACHE", str(disk))
        (disk / "onnx").mkdir()
        if trouble == "full":
            fill(disk)
        else:
            read_only(disk)
        caplog.set_level("INFO", logger="sdl_core.onnx_backend")
        runner = onnx_features(trunk, 32)
        assert runner is not None
        pixels = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(runner(pixels), trunk.forward_features(pixels), atol=1e-4)
        assert list((disk / "onnx").iterdir()) == [] and leftovers(disk) == []
        reason = "the disk is full" if trouble == "full" else "read-only"
        assert any("cannot cache the ONNX graph" in r.message and reason in r.message for r in caplog.records)

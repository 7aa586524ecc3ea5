"""The Ray engine's Parquet shards, without Ray: naming, planning, resuming, reading each photo once,
the job manifest, the sources a job reads, and the engine options' errors."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="the Ray engine's requirements (requirements-ray.txt) are not installed")

from sdl_core import cli  # noqa: E402
from sdl_core.engines import EngineError, require_ray  # noqa: E402
from sdl_core.engines.shards import (MANIFEST, open_job, pending, plan, read_results, shard_files,  # noqa: E402
                                     shard_name, shard_size, shard_table, vectors_of, write_shard)
from sdl_core.engines.sources import Item, fetch, index_source, read_list_file, tag_items  # noqa: E402
from sdl_core.errors import ImageError  # noqa: E402
from sdl_core.checkpoint import save_checkpoint  # noqa: E402
from tests.conftest import make_photo, make_sdl_model, make_vocab  # noqa: E402

K, D = 2, 3


def rows_for(keys: list[str], mtime: int = 1, failed: tuple[str, ...] = ()) -> tuple[list[dict], np.ndarray]:
    rows = [{"image": key, "size": 10, "mtime_ns": mtime, "error": f"{key}: broken" if key in failed else None}
            for key in keys]
    vectors = np.stack([np.full((K, D), float(len(key)) + mtime, np.float32) for key in keys])
    return rows, vectors


def write(folder: Path, keys: list[str], mtime: int = 1, failed: tuple[str, ...] = ()) -> Path:
    rows, vectors = rows_for(keys, mtime, failed)
    return write_shard(folder, shard_name(keys), shard_table(rows, vectors, with_tags=False))


def test_names_and_plans_are_deterministic():
    assert shard_name(["a", "b"]) == shard_name(["a", "b"]) != shard_name(["b", "a"])
    assert shard_name(["a", "b"]).startswith("part-") and shard_name(["a", "b"]).endswith(".parquet")
    assert shard_size(1000, 2) == 125 and shard_size(10**6, 8) == 256 and shard_size(3, 4) == 1
    assert shard_size(1000, 2, requested=7) == 7
    items = [Item(f"p{i}", f"/x/p{i}", i, i) for i in range(5)]
    rows = plan(items, 2)
    assert [r["keys"] for r in rows] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert rows[0]["shard"] == shard_name(["p0", "p1"]) and rows[2]["locations"] == ["/x/p4"]
    assert rows[1]["sizes"] == [2, 3] and rows[1]["mtimes"] == [2, 3]


def test_each_photo_is_read_once_and_resuming_skips_finished_photos(tmp_path: Path):
    write(tmp_path, ["a", "b"], failed=("b",))
    write(tmp_path, ["b", "c"], failed=("b",))  # b again (a shard of another plan): read once
    write(tmp_path, ["c"], mtime=5)  # c changed on disk since: a newer version
    table = read_results(tmp_path)
    assert table.column("image").to_pylist() == ["a", "b", "c"]
    assert table.column("mtime_ns").to_pylist() == [1, 1, 5]
    assert table.column("error").to_pylist() == [None, "b: broken", None]
    with pytest.raises(ValueError, match="without an error"):
        vectors_of(table)
    np.testing.assert_array_equal(vectors_of(table.filter(table.column("error").is_null()))[:, 0, 0], [2.0, 6.0])
    items = [Item("c", "/c", 10, 1), Item("a", "/a", 10, 1), Item("z", "/z", 10, 1)]
    picked = read_results(tmp_path, items)
    assert picked.column("image").to_pylist() == ["c", "a"]  # in the items' order, versions as given
    np.testing.assert_array_equal(vectors_of(picked), np.full((2, K, D), 2.0))
    assert [item.key for item in pending(items, tmp_path)] == ["z"]
    assert [item.key for item in pending([Item("a", "/a", 10, 9)], tmp_path)] == ["a"]  # changed since
    with pytest.raises(EngineError, match="no result shards"):
        read_results(tmp_path / "empty")


def test_a_rewritten_shard_replaces_itself(tmp_path: Path):
    first = write(tmp_path, ["a", "b"])
    again = write(tmp_path, ["a", "b"])
    assert first == again and shard_files(tmp_path) == [first]
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left
    (tmp_path / "part-0000.parquet").write_bytes(b"not parquet")
    with pytest.raises(EngineError, match="not a readable result shard"):
        read_results(tmp_path)


def test_the_manifest_keeps_other_jobs_apart(tmp_path: Path):
    open_job(tmp_path, {"kind": "tag", "top_k": 3}, discard_other=False)
    write(tmp_path, ["a"])
    open_job(tmp_path, {"kind": "tag", "top_k": 3}, discard_other=False)  # the same job: resumed
    assert len(shard_files(tmp_path)) == 1
    with pytest.raises(EngineError, match=r"another job \(differs in: top_k\).*--out"):
        open_job(tmp_path, {"kind": "tag", "top_k": 5}, discard_other=False)
    open_job(tmp_path, {"kind": "tag", "top_k": 5}, discard_other=True)  # a private work folder: start over
    assert shard_files(tmp_path) == [] and json.loads((tmp_path / MANIFEST).read_text())["top_k"] == 5
    foreign = tmp_path / "foreign"
    write(foreign, ["a"])
    with pytest.raises(EngineError, match="no _job.json"):
        open_job(foreign, {"kind": "tag"}, discard_other=False)


def test_sources_folders_list_files_and_uris(tmp_path: Path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    make_photo(seed=1).save(photos / "a.jpg")
    make_photo(seed=2).save(photos / "sub" / "b.png")
    (photos / "notes.txt").write_text("not a photo")
    items = tag_items(str(photos))
    assert [i.key for i in items] == [str(photos / "a.jpg"), str(photos / "sub" / "b.png")]
    assert items[0].size == (photos / "a.jpg").stat().st_size and Path(items[1].location).is_absolute()
    assert tag_items(str(photos / "a.jpg")) == [items[0]]  # one photo, as the local `tag` takes it
    listing = tmp_path / "list.txt"
    uri = (photos / "a.jpg").as_uri()
    listing.write_text(f"# my photos\nphotos/a.jpg\n\n{uri}\nphotos/a.jpg\nmissing.jpg\n", encoding="utf-8")
    assert read_list_file(listing) == ["photos/a.jpg", uri, "missing.jpg"]
    keys = tag_items(str(listing))
    assert [(i.key, i.location, i.size) for i in keys][1:] == [(uri, uri, -1),
                                                                ("missing.jpg", str(tmp_path / "missing.jpg"), -1)]
    assert fetch(uri, tmp_path / "scratch").read_bytes() == (photos / "a.jpg").read_bytes()
    with pytest.raises(ImageError, match="no such file"):
        fetch((photos / "gone.jpg").as_uri(), tmp_path / "scratch")
    with pytest.raises(ImageError, match="cannot read"):
        fetch("nosuchscheme://host/x.jpg", tmp_path / "scratch")
    (tmp_path / "index.txt").write_text("photos/a.jpg\nphotos/sub/b.png\n", encoding="utf-8")
    root, entries = index_source(str(tmp_path / "index.txt"))
    assert root == photos.resolve() and [e.path for e in entries] == ["a.jpg", "sub/b.png"]
    assert index_source(str(photos)) == (photos, None)
    with pytest.raises(EngineError, match="is a URI"):
        index_source(str(listing))
    for bad, message in ((b"", "no photos listed"), (b"\xff\xfe", "not UTF-8")):
        (tmp_path / "bad.txt").write_bytes(bad)
        with pytest.raises(EngineError, match=message):
            tag_items(str(tmp_path / "bad.txt"))
    with pytest.raises(EngineError, match="no such folder or list file"):
        tag_items(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="no photos in this folder"):
        tag_items(str(tmp_path / "empty"))


@pytest.mark.parametrize("argv, message", [
    (["tag", "x.jpg", "--engine", "ray", "--out", "r", "--json"], "--json: only with the local engine"),
    (["tag", "x.jpg", "--engine", "ray", "--out", "r", "--write-xmp"], "--write-xmp: only with the local engine"),
    (["tag", "x.jpg", "--engine", "ray"], "name their folder with --out DIR"),
    (["tag", "x.jpg", "--out", "r", "--workers", "2"], "--workers, --out: only with --engine ray"),
    (["index", "nowhere", "--address", "1.2.3.4:6379"], "--address: only with --engine ray"),
    (["index", "nowhere", "--engine", "ray"], "nowhere: no such folder or list file"),
])
def test_engine_options_are_checked_before_any_work(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_missing_ray_is_one_line_naming_the_requirements_file(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(EngineError, match=r"pip install -r requirements-ray\.txt"):
        require_ray()
    make_photo().save(tmp_path / "a.jpg")
    assert cli.main(["index", str(tmp_path), "--engine", "ray", "--model", "nope-model"]) == 2
    assert "nope-model" in capsys.readouterr().err  # the model is checked first (no cluster for a typo) ...
    ckpt = save_checkpoint(make_sdl_model(size=32), make_vocab(), tmp_path / "toy.safetensors")
    assert cli.main(["tag", str(tmp_path / "a.jpg"), "--engine", "ray", "--out", str(tmp_path / "r"),
                     "--model", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err == "error: --engine ray needs Ray Data (ray is not installed): pip install -r requirements-ray.txt\n"


def test_a_worker_failure_is_named_by_its_own_error_line():
    from sdl_core.engines.ray_job import _cause
    wrapped = ValueError('ray::MapWorker(MapBatches(ShardWorker)).submit() (pid=1)\n  File "x.py", line 3\n'
                         "sdl_core.errors.CheckpointError: toy.safetensors: no such file\n\nThe above exception was "
                         "the direct cause of the following exception:\nray.exceptions.UserCodeException: UDF failed")
    assert _cause(wrapped) == "sdl_core.errors.CheckpointError: toy.safetensors: no such file"
    assert _cause(RuntimeError("plain")) == "plain"


def test_an_address_nothing_answers_on_is_one_line_at_once(tmp_path: Path, capsys):
    pytest.importorskip("ray", reason="requirements-ray.txt is not installed")
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ckpt = save_checkpoint(make_sdl_model(size=32), make_vocab(), tmp_path / "toy.safetensors")
    make_photo().save(tmp_path / "a.jpg")
    assert cli.main(["tag", str(tmp_path / "a.jpg"), "--model", str(ckpt), "--engine", "ray", "--out",
                     str(tmp_path / "r"), "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the Ray cluster at 127.0.0.1:{port}: ") and "ray start --head" in err

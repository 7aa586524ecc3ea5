"""``tag`` and ``index --engine ray`` on a local Ray cluster (2 CPUs, one per module): the same
vectors, tags, index and error lines as the local engine; a killed worker retried with no photo
lost or doubled; a job that stopped part-way resumed from its finished shards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray engine's requirements (requirements-ray.txt) are not installed")

import pyarrow.parquet as pq  # noqa: E402

from sdl_core import cli  # noqa: E402
from sdl_core.checkpoint import save_checkpoint  # noqa: E402
from sdl_core.cli.engine import work_folder  # noqa: E402
from sdl_core.engines.shards import read_results, shard_files, vectors_of  # noqa: E402
from sdl_core.engines.worker import FAULT_ENV  # noqa: E402
from sdl_core.search import load_index  # noqa: E402
from sdl_core.tagger import Tagger  # noqa: E402
from tests.conftest import ROOT, make_photo, make_sdl_model, make_vocab  # noqa: E402

pytestmark = pytest.mark.ray
PHOTOS = 9


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (starting Ray costs ~10 s on 2 cores); its workers import
    this checkout. Yields the address other processes join it at."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield context.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, folder): PHOTOS photos, one in a subfolder, and a broken one."""
    folder = tmp_path_factory.mktemp("ray")
    ckpt = save_checkpoint(make_sdl_model(k=3, size=32, seed=5), make_vocab(), folder / "toy.safetensors")
    photos = folder / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(PHOTOS):
        make_photo(40 + i, 40, seed=10 + i).save(photos / ("sub" if i == 4 else "") / f"p{i}.jpg")
    (photos / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return ckpt, photos


def local_vectors(ckpt: Path, paths: list[str]) -> np.ndarray:
    tagger = Tagger.from_pretrained(str(ckpt))
    return np.concatenate([e.vectors.numpy() for _, e in tagger.encode_files(paths, 4) if e is not None])


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(("error:", "unreadable:"))]


def test_tag_job_matches_the_local_engine_and_resumes(cluster, toy, tmp_path, capsys):
    ckpt, photos = toy
    request = ["--model", str(ckpt), "--tags", "dog, spaceship", "--top-k", "3", "--min-score", "0.04"]
    code, out, _ = run_main(["tag", str(photos), *request, "--json"], capsys)
    local = {r["image"]: r for r in json.loads(out)["results"]}
    local_errors = [f"error: {e['error']}" for e in json.loads(out)["errors"]]  # the lines it prints without --json
    results = tmp_path / "results"
    argv = ["tag", str(photos), *request, "--engine", "ray", "--out", str(results), "--shard-size", "2"]
    code, out, err = run_main(argv, capsys)
    assert code == 1, err  # the broken photo: reported as the local engine reports it
    assert error_lines(err) == local_errors and "bad.png" in local_errors[0]
    assert out.strip() == f"{results}: {PHOTOS + 1} photos, {PHOTOS} tagged, 1 failed"
    assert f"ray: {PHOTOS + 1} photos on 2 workers (cpu): 0 from finished shards, {PHOTOS + 1} encoded in 5 new" in err
    table = read_results(results)
    done = table.filter(table.column("error").is_null())
    assert sorted(done.column("image").to_pylist()) == sorted(local)
    np.testing.assert_allclose(vectors_of(done), local_vectors(ckpt, done.column("image").to_pylist()), atol=1e-4)
    for row in done.select(["image", "tags", "typed", "not_in_vocabulary"]).to_pylist():
        want = local[row["image"]]
        assert [t["tag"] for t in row["tags"]] == [t["tag"] for t in want["tags"]]
        np.testing.assert_allclose([t["score"] for t in row["tags"]], [t["score"] for t in want["tags"]], atol=1e-5)
        assert [(t["tag"], t["rank"]) for t in row["typed"]] == [(t["tag"], t["rank"]) for t in want["typed"]]
        assert row["not_in_vocabulary"] == want["not_in_vocabulary"] == ["spaceship"]

    # interrupted after some shards: only the missing photos run again, the finished shards stay as they are
    shards = shard_files(results)
    lost = shards[:2]
    lost_photos = sum(pq.read_metadata(path).num_rows for path in lost)
    kept = {path: path.stat().st_mtime_ns for path in shards[2:]}
    for path in lost:
        path.unlink()
    code, out, err = run_main(argv, capsys)
    assert code == 1 and f"{PHOTOS + 1 - lost_photos} from finished shards, {lost_photos} encoded" in err
    assert {path: path.stat().st_mtime_ns for path in shards[2:]} == kept
    assert read_results(results).equals(table)
    code, out, err = run_main(argv[:-4] + argv[-2:] + ["--top-k", "2"] + argv[-4:-2], capsys)  # other settings
    assert code == 2 and "holds the results of another job (differs in: top_k)" in err


def test_killed_worker_is_retried_without_losing_or_doubling_photos(cluster, toy, tmp_path, capsys, monkeypatch):
    """A list file (paths, a file:// URI, a missing photo) and a vocabulary file, while a worker dies."""
    ckpt, photos = toy
    names = sorted(p.relative_to(photos.parent).as_posix() for p in photos.rglob("*.*"))
    uri = (photos / "p0.jpg").as_uri()
    listing = photos.parent / "list.txt"
    listing.write_text("\n".join([uri] + [n for n in names if n != "photos/p0.jpg"] + ["missing.jpg"]) + "\n",
                       encoding="utf-8")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("cat\ndog\nboat\n", encoding="utf-8")
    marker = tmp_path / "killed"
    # the worker ends its process right after writing the shard holding p3.jpg: Ray restarts it and
    # runs that shard again, which rewrites the same file
    monkeypatch.setenv(FAULT_ENV, f"exit-once:p3.jpg:{marker}")
    results = tmp_path / "results"
    code, out, err = run_main(["tag", str(listing), "--model", str(ckpt), "--vocab", str(vocab), "--engine", "ray",
                               "--out", str(results), "--shard-size", "2"], capsys)
    assert marker.exists(), "the fault never fired"
    assert code == 1 and out.strip().endswith(f"{PHOTOS + 2} photos, {PHOTOS} tagged, 2 failed"), err
    assert error_lines(err)[1] == "error: missing.jpg: no such file"
    raw = [image for path in shard_files(results) for image in pq.read_table(path).column("image").to_pylist()]
    assert sorted(raw) == sorted(set(raw)) and len(raw) == PHOTOS + 2  # every photo exactly once on disk
    table = read_results(results)
    done = table.filter(table.column("error").is_null())
    paths = [str(photos / "p0.jpg") if name == uri else str(photos.parent / name)
             for name in done.column("image").to_pylist()]
    np.testing.assert_allclose(vectors_of(done), local_vectors(ckpt, paths), atol=1e-4)
    assert {t["tag"] for tags in done.column("tags").to_pylist() for t in tags} <= {"cat", "dog", "boat"}


def test_index_job_makes_the_local_index_and_resumes_after_a_failure(cluster, toy, tmp_path, capsys, monkeypatch):
    ckpt, photos = toy
    local_out, ray_out = tmp_path / "local.safetensors", tmp_path / "ray.safetensors"
    code, out, local_err = run_main(["index", str(photos), "--model", str(ckpt), "--out", str(local_out),
                                     "--no-progress"], capsys)
    assert code == 1
    argv = ["index", str(photos), "--model", str(ckpt), "--out", str(ray_out), "--no-progress", "--engine", "ray",
            "--shard-size", "1"]
    monkeypatch.setenv(FAULT_ENV, "raise:p8.jpg")  # the job fails part-way (the last photo in path order)
    code, out, err = run_main(argv, capsys)
    assert code == 2 and "the Ray job failed (1 shard): RuntimeError: test fault on p8.jpg." in err
    assert "run the same command again to resume" in err and not ray_out.exists()
    finished = sum(pq.read_metadata(path).num_rows for path in shard_files(work_folder(ray_out)))
    # Ray Data stops the job at the failure: the shards still in flight then may or may not have finished
    # (on a loaded machine some have not), but the finished ones are kept and only the rest is redone.
    assert 1 <= finished <= PHOTOS
    monkeypatch.delenv(FAULT_ENV)
    code, out, err = run_main(argv, capsys)
    assert code == 1 and error_lines(err) == error_lines(local_err)
    assert f"{finished} from finished shards, {PHOTOS + 1 - finished} encoded" in err
    assert f"{PHOTOS} photos ({PHOTOS} added" in out and not work_folder(ray_out).exists()
    local, distributed = load_index(local_out), load_index(ray_out)
    assert distributed.entries == local.entries and distributed.identity == local.identity
    np.testing.assert_allclose(distributed.vectors.numpy(), local.vectors.numpy(), atol=1e-3)  # float16 stored
    assert distributed.failed == local.failed


def test_cli_joins_a_running_cluster_with_address(cluster, toy, tmp_path):
    """The real command in its own process, joining the cluster by address; a list file of photos."""
    ckpt, photos = toy
    listing = tmp_path / "photos.txt"
    chosen = sorted(photos.rglob("p*.jpg"))[:4]
    listing.write_text("".join(f"{path}\n" for path in chosen), encoding="utf-8")
    out = tmp_path / "index.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(FAULT_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "sdl_core", "index", str(listing), "--model", str(ckpt),
                           "--engine", "ray", "--address", cluster, "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 photos (4 added" in proc.stdout and "Traceback" not in proc.stderr
    index = load_index(out)
    assert index.root == photos.resolve() and [index.full_path(e) for e in index.entries] == chosen
    np.testing.assert_allclose(index.vectors.numpy(), local_vectors(ckpt, [str(p) for p in chosen]), atol=1e-3)

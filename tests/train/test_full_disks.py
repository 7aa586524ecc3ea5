"""``train fit --out`` on a full or a read-only disk: one ``error:`` line and exit code 2,
no temporary or partial file, and the files the run wrote before the disk filled up
stay whole (a small real tmpfs; skipped with the reason where it cannot be mounted)."""
from __future__ import annotations

import json

import pytest

from tests.disks import fill, leftovers, read_only, small_disk
from train.cli import main


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    data = tmp_path_factory.mktemp("synth")
    assert main(["synth", str(data), "--images", "40", "--size", "48", "--seed", "1"]) == 0
    return data


def fit_args(data, colour_vec, out, cache) -> list[str]:
    return ["fit", "--data", str(data / "train"), "--val-data", str(data / "val"), "--unseen",
            str(data / "unseen.txt"), "--word-space", str(colour_vec), "--head-only", "--image-size", "48",
            "--k", "3", "--epochs", "2", "--out", str(out), "--cache-dir", str(cache)]


def test_fit_on_a_disk_that_fills_up(synth, colour_vec, tmp_path, capsys) -> None:
    """The run's small files fit, its checkpoint does not (a 1 MB disk; the model is ~14 MB)."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        fill(disk, leave=200_000)
        assert main(fit_args(synth, colour_vec, disk / "run", disk / "cache")) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]  # the rest: progress bars
        assert len(errors) == 1 and errors[0].startswith("error: cannot write the checkpoint"), err
        assert "the disk is full" in errors[0] and "Traceback" not in err
        assert not (disk / "run" / "best.safetensors").exists() and leftovers(disk) == []
        json.loads((disk / "run" / "config.json").read_text())  # written before the disk filled: whole


def test_fit_on_a_read_only_disk(synth, colour_vec, tmp_path, capsys) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        read_only(disk)
        assert main(fit_args(synth, colour_vec, disk / "run", tmp_path / "cache")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: cannot create the run folder {disk / 'run'}: the file system is read-only"]
        assert list(disk.iterdir()) == []

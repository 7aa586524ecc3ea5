"""The real ``python -m train ...`` commands, run as subprocesses."""
from __future__ import annotations

import json

from sdl_core.cli import main as sdl_main
from tests.train.conftest import run_cli
from train.cli import main


def test_synth_fit_head_only_evaluate_and_tag(colour_vec, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["synth", str(data), "--images", "60", "--size", "48", "--seed", "3"]) == 0
    assert (data / "train" / "tags.csv").is_file() and (data / "unseen.txt").is_file()

    run = tmp_path / "run"
    proc = run_cli("-m", "train", "fit", "--data", str(data / "train"), "--val-data", str(data / "val"),
                   "--unseen", str(data / "unseen.txt"), "--word-space", str(colour_vec), "--head-only",
                   "--image-size", "48", "--k", "3", "--epochs", "3", "--out", str(run),
                   "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote" in proc.stdout and (run / "best.safetensors").is_file()
    assert "extracting features" in proc.stderr and "epoch 3/3" in proc.stderr  # progress bars
    assert len((run / "log.jsonl").read_text().splitlines()) == 3

    out = tmp_path / "eval.json"
    proc = run_cli("-m", "train", "evaluate", "--checkpoint", str(run / "last.safetensors"), "--data",
                   str(data / "test"), "--random-baseline", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ZSL" in proc.stdout and "GZSL" in proc.stdout and "random scores" in proc.stdout
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"zsl", "gzsl"} and result["results"]["zsl"]["labels"] == 4
    assert {"mAP", "P@3", "R@3", "F1@3", "P@5", "R@5", "F1@5"} <= set(result["results"]["gzsl"])

    image = sorted((data / "test").glob("*.jpg"))[0]
    capsys.readouterr()
    assert sdl_main(["tag", str(image), "--model", str(run / "last.safetensors"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"][0]["tags"]) == 10


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, colour_data, colour_vec):
    cases = [(["fit", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r1")], "no such file"),
             (["fit", "--data", str(colour_data["train"]), "--word-space", str(colour_vec), "--unseen", "ruby",
               "--out", str(tmp_path / "r2"), "--best-metric", "nope"], "--best-metric"),
             (["evaluate", "--checkpoint", str(tmp_path / "none.safetensors"), "--data", str(colour_data["test"])],
              "no such checkpoint"),
             (["smoke", "--device", "cpu", "--amp", "on"], "needs --device cuda"),
             (["synth", str(tmp_path / "s"), "--images", "2"], "--images")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1, err


def test_smoke_entry_point_on_cpu(tmp_path):
    """What gpu_smoke.sh runs, with a tiny backbone for two steps."""
    out = tmp_path / "smoke.json"
    proc = run_cli("-m", "train", "smoke", "--backbone", "test_resnet", "--steps", "2", "--warmup", "1",
                   "--batch-size", "2", "--image-size", "32", "--tags", "20", "--dim", "16", "--k", "2",
                   "--device", "cpu", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 2 and result["images_per_s"] > 0 and result["peak_memory_mb"] > 0
    assert result["amp"] is False and result["device"] == "cpu"

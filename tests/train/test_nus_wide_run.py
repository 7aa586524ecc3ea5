"""Training and evaluating on the miniature NUS-WIDE tree, through the real commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdl_core.checkpoint import load_checkpoint
from sdl_core.images import to_tensor
from sdl_core.scoring import score_tags
from tests.train.conftest import run_cli
from train.cli import main
from train.fit import FitOptions, fit
from train.metrics import evaluate_zsl_gzsl, results_to_dict
from train.nus_wide import read_nus_wide


def _direct_results(checkpoint, nus_tree) -> dict:
    """The protocol computed by hand: every present, readable test image with a label,
    scored by the checkpoint itself over its vocabulary (no cache, no head split)."""
    from sdl_core.images import load_image
    from sdl_core.errors import ImageError
    model, vocab = load_checkpoint(checkpoint)
    data = read_nus_wide(nus_tree.root, "test")
    usable = data.usable("any")
    assert vocab.tags == list(data.split.tags)
    pixels, targets = [], []
    for path, target in zip(usable.paths, usable.targets):
        try:
            pixels.append(to_tensor([load_image(path)], model.config.preprocess)[0])
            targets.append(target)
        except ImageError:
            continue
    with torch.no_grad():
        scores, _ = score_tags(model.eval().encode(torch.stack(pixels)).vectors, torch.from_numpy(vocab.vectors))
    return results_to_dict(evaluate_zsl_gzsl(scores.double(), torch.from_numpy(np.array(targets)), vocab.seen))


def test_head_only_fit_then_evaluate_with_the_command(nus_tree, nus_vec, tmp_path):
    root, cache = nus_tree.root, tmp_path / "cache"
    run = tmp_path / "run_k3"
    proc = run_cli("-m", "train", "fit", "--data", f"nus-wide:{root}", "--val-data", f"nus-wide:{root}",
                   "--word-space", str(nus_vec), "--head-only", "--backbone", "test_resnet", "--pretrained", "none",
                   "--image-size", "48", "--k", "3", "--epochs", "4", "--out", str(run), "--cache-dir", str(cache))
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((run / "config.json").read_text())
    train_truth = nus_tree.splits["train"]
    assert config["data"]["nus_wide"]["train"]["missing"] == len(train_truth.missing)
    assert config["data"]["seen_tags"] == 12 and config["data"]["unseen_tags"] == 4
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["val_zsl_mAP"] is not None  # validation on the test list has the concepts

    out = tmp_path / "eval.json"
    proc = run_cli("-m", "train", "-v", "evaluate", "--checkpoint", str(run / "best.safetensors"), "--data",
                   f"nus-wide:{root}", "--out", str(out), "--cache-dir", str(cache))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "extracting features" in proc.stderr and "(0 computed" not in proc.stderr
    assert "paper" in proc.stdout and "25.9" in proc.stdout and "18.5" in proc.stdout
    result = json.loads(out.read_text())
    test_truth = nus_tree.splits["test"]
    images = result["images"]
    assert images["listed"] == len(test_truth.names) and images["missing"] == len(test_truth.missing)
    assert images["unreadable"] == len(test_truth.corrupt)
    assert images["evaluated"] == images["listed"] - images["missing"] - images["unreadable"] - images["no_any_label"]
    direct = _direct_results(run / "best.safetensors", nus_tree)
    for setting in ("zsl", "gzsl"):
        for metric, value in direct[setting].items():
            assert result["results"][setting][metric] == pytest.approx(value, abs=1e-5), (setting, metric)
    assert result["paper"]["zsl"]["mAP"] == 0.259 and result["tags_without_vector"] == []

    # another head (K=2) on the same backbone: the backbone does not run again
    fit(FitOptions(data=f"nus-wide:{root}", vectors=str(nus_vec), out=str(tmp_path / "run_k2"), head_only=True,
                   backbone="test_resnet", pretrained="none", image_size=48, k=2, epochs=1, cache_dir=str(cache),
                   progress=False, workers=0))
    proc = run_cli("-m", "train", "-v", "evaluate", "--checkpoint", str(tmp_path / "run_k2" / "last.safetensors"),
                   "--data", f"nus-wide:{root}:test", "--cache-dir", str(cache), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(0 computed" in proc.stderr and "skipping unreadable" not in proc.stderr


def test_evaluate_a_registered_model(nus_tree, tmp_path, capsys):
    """Any model sdl_core loads: the offline default (ConSE) ranks the tags embedded in its space."""
    out = tmp_path / "default.json"
    assert main(["evaluate", "--checkpoint", "default", "--data", f"nus-wide:{nus_tree.root}", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "ZSL" in printed and "GZSL" in printed and "unreadable" in printed
    result = json.loads(out.read_text())
    assert result["model"].startswith("conse") and result["results"]["zsl"]["labels"] == 3
    assert result["images"]["unreadable"] == len(nus_tree.splits["test"].corrupt)
    assert main(["evaluate", "--checkpoint", "no_such_model", "--data", f"nus-wide:{nus_tree.root}"]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_full_fit_one_step_with_the_papers_augmentation(nus_tree, nus_vec, tmp_path):
    out = tmp_path / "full"
    result = fit(FitOptions(data=f"nus-wide:{nus_tree.root}", val_data=f"nus-wide:{nus_tree.root}",
                            vectors=str(nus_vec), out=str(out), backbone="test_resnet", pretrained="none", k=2,
                            image_size=32, epochs=1, steps_per_epoch=1, batch_size=4, workers=0, progress=False,
                            crop_scale=1.0, flip=False, cutout_box=0.5, cutout=0.0, ema=0.9, lr=1e-3))
    row = result.history[0]
    assert row["step"] == 1 and row["train_images"] == 4 and np.isfinite(row["train_loss"])
    assert row["val_gzsl_F1@3"] is not None and row["val_zsl_mAP"] is not None
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["cutout_box"] == 0.5 and config["options"]["flip"] is False
    assert set(config["data"]["nus_wide"]) == {"train", "val_test"}
    model, vocab = load_checkpoint(out / "best.safetensors")
    assert len(vocab) == 16 and int((~vocab.seen).sum()) == 4

"""Training end to end: head-only zero-shot learning, full fine-tuning, resume, DDP."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from sdl_core import Tagger
from sdl_core.checkpoint import load_checkpoint
from tests.conftest import make_sdl_model
from tests.train.conftest import ROOT, run_cli
from train.backbones import head_vectors, pooled_features
from train.errors import RunError
from train.evaluate import evaluate_checkpoint
from train.features import cached_features
from train.fit import FitOptions, fit
from train.synthetic import UNSEEN_COLOURS


def test_head_only_learns_unseen_colours(colour_data, colour_vec, tmp_path):
    """Seen colour words train the head; unseen ones are ranked well above random."""
    opts = FitOptions(data=str(colour_data["train"]), val_data=str(colour_data["val"]), split=str(colour_data["unseen"]),
                      vectors=str(colour_vec), out=str(tmp_path / "run"), head_only=True, image_size=64, k=3,
                      epochs=30, cache_dir=str(tmp_path / "cache"), progress=False, seed=0, best_metric="gzsl_mAP")
    result = fit(opts)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    best_epoch = max(result.history, key=lambda r: r["val_gzsl_mAP"])["epoch"]
    assert best_epoch > 1
    assert result.best is not None and result.best.is_file() and (tmp_path / "run" / "last.safetensors").is_file()
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    evaluation = evaluate_checkpoint(result.best, colour_data["test"], with_random=True)
    zsl, rand = evaluation.results["zsl"], evaluation.random["zsl"]
    gzsl, rand_g = evaluation.results["gzsl"], evaluation.random["gzsl"]
    print(f"ZSL mAP {zsl.map:.3f} vs random {rand.map:.3f}; GZSL mAP {gzsl.map:.3f} vs random {rand_g.map:.3f}")
    assert zsl.labels == 4 and zsl.images == evaluation.images
    assert zsl.map > rand.map + 0.1
    assert gzsl.map > rand_g.map + 0.1  # (GZSL F1@k is not: seen tags outscore unseen ones, as in the paper)
    tagger = Tagger.from_pretrained(result.best)
    assert sorted(tagger.vocabulary.unseen_tags) == sorted(UNSEEN_COLOURS)
    tags = tagger.tag(sorted(colour_data["test"].glob("*.jpg"))[0], top_k=3)
    assert len(tags) == 3


def test_head_vectors_equal_encode_and_features_are_cached(tmp_path, photo_path):
    model = make_sdl_model(k=2, d=8, size=32)
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(head_vectors(model, pooled_features(model, pixels)), model.encode(pixels).vectors,
                              atol=1e-5)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    args = dict(model=model, pretrained=None, seed=0, cache_dir=tmp_path / "cache", device=torch.device("cpu"),
                progress=False)
    feats, ok = cached_features(paths=[photo_path, bad], **args)
    assert ok.tolist() == [True, False] and feats.shape == (2, model.num_features)

    def refuse(*_a, **_k):
        raise AssertionError("features should come from the cache")
    model.backbone.forward_features = refuse
    again, ok2 = cached_features(paths=[photo_path], **args)
    assert ok2.tolist() == [True] and torch.equal(again[0], feats[0])


def _full_opts(colour_data, colour_vec, out, **kw):
    base = dict(data=str(colour_data["train"]), val_data=str(colour_data["val"]), split=str(colour_data["unseen"]),
                vectors=str(colour_vec), out=str(out), backbone="test_resnet", pretrained="none", k=2,
                image_size=32, epochs=2, batch_size=8, steps_per_epoch=2, lr=1e-3, workers=0, progress=False,
                ema=0.9, clip_grad=1.0)
    base.update(kw)
    return FitOptions(**base)


def test_full_training_end_to_end_and_resume(colour_data, colour_vec, tmp_path):
    out = tmp_path / "full"
    result = fit(_full_opts(colour_data, colour_vec, out, epochs=1))
    for name in ("config.json", "log.csv", "log.jsonl", "best.safetensors", "last.safetensors", "state.pt"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["backbone"] == "test_resnet" and config["data"]["unseen_tags"] == 4
    assert config["options"]["lr"] == 1e-3 and config["amp"] is False
    row = result.history[0]
    assert row["train_images"] == 16 and np.isfinite(row["train_loss"]) and "val_gzsl_F1@3" in row
    model, vocab = load_checkpoint(out / "last.safetensors")
    assert torch.equal(model.state_dict()["head.weight"], result.model.state_dict()["head.weight"])
    tagger = Tagger.from_pretrained(out / "best.safetensors")
    assert len(tagger.tag(sorted(colour_data["test"].glob("*.jpg"))[0], top_k=5)) == 5

    with pytest.raises(RunError, match="--resume"):
        fit(_full_opts(colour_data, colour_vec, out, epochs=2))
    resumed = fit(_full_opts(colour_data, colour_vec, out, epochs=2, resume=True))
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[0] == result.history[0] and resumed.history[1]["step"] == 4
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3
    with pytest.raises(RunError, match="another model config"):
        fit(_full_opts(colour_data, colour_vec, out, epochs=3, k=3, resume=True))


def test_full_training_with_augmentation_repeats_under_its_seed(colour_data, colour_vec, tmp_path):
    """RandAugment draws from Python's random: the seed must fix it too (two runs, one result)."""
    timing = ("seconds", "images_per_s")
    runs = [fit(_full_opts(colour_data, colour_vec, tmp_path / f"run{i}", epochs=1, randaugment=9, cutout=0.5,
                           cutout_box=0.5)) for i in range(2)]
    rows = [{k: v for k, v in run.history[0].items() if k not in timing} for run in runs]
    assert rows[0] == rows[1]
    assert all(torch.equal(v, runs[1].model.state_dict()[k]) for k, v in runs[0].model.state_dict().items())


def test_ddp_two_processes_identical_weights_rank0_writes(colour_data, colour_vec, tmp_path):
    proc = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   str(ROOT / "tests" / "train" / "ddp_worker.py"), str(colour_data["train"]), str(colour_vec),
                   str(colour_data["unseen"]), str(tmp_path), timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert (tmp_path / "run_rank0" / "last.safetensors").is_file()
    assert not (tmp_path / "run_rank1").exists()
    config = json.loads((tmp_path / "run_rank0" / "config.json").read_text())
    assert config["world_size"] == 2
    model, _ = load_checkpoint(tmp_path / "run_rank0" / "last.safetensors")
    assert all(torch.equal(model.state_dict()[k], w0[k]) for k in w0)


def test_run_errors(colour_data, colour_vec, tmp_path):
    with pytest.raises(RunError, match="no CUDA"):
        fit(_full_opts(colour_data, colour_vec, tmp_path / "a", device="cuda"))
    with pytest.raises(RunError, match="--k"):
        fit(_full_opts(colour_data, colour_vec, tmp_path / "b", k=0))
    with pytest.raises(RunError, match="no packaged weights"):
        fit(_full_opts(colour_data, colour_vec, tmp_path / "c", pretrained="packaged"))
    with pytest.raises(RunError, match="no such backbone weights"):
        fit(_full_opts(colour_data, colour_vec, tmp_path / "d", pretrained=str(tmp_path / "none.pth")))
    assert sys.platform  # the messages above are what the CLI prints on one line

"""``python -m train push RUN_DIR OWNER/REPO`` against a loopback stand-in for the Hub."""
from __future__ import annotations

import json
import os

import pytest

from sdl_core.hub import CHECKPOINT_FILE
from tests.hub_standin import HubStandIn
from tests.train.conftest import ROOT, run_cli
from train.cli import main

TOKEN = "hf_test_token"


@pytest.fixture(scope="module")
def run_dir(colour_data, colour_vec, tmp_path_factory):
    """A real (tiny, head-only) training run: the card is written from what fit writes."""
    out = tmp_path_factory.mktemp("push") / "run"
    args = ["fit", "--data", str(colour_data["train"]), "--val-data", str(colour_data["val"]),
            "--unseen", str(colour_data["unseen"]), "--word-space", str(colour_vec), "--head-only",
            "--image-size", "48", "--k", "3", "--epochs", "3", "--out", str(out), "--no-progress",
            "--cache-dir", str(out.parent / "features")]
    assert main(args) == 0
    return out


@pytest.fixture
def standin():
    with HubStandIn(token=TOKEN) as server:
        yield server


def hub_env(standin, tmp_path, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=standin.url, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    if token:
        env["HF_TOKEN"] = token
    return env


def test_push_uploads_the_best_checkpoint_with_a_card_from_the_run(run_dir, standin, tmp_path):
    proc = run_cli("-m", "train", "push", str(run_dir), "alice/colours", env=hub_env(standin, tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hf-hub:alice/colours" in proc.stdout
    repo = standin.repos["alice/colours"]
    assert repo.files[CHECKPOINT_FILE] == (run_dir / "best.safetensors").read_bytes()

    card = repo.files["README.md"].decode()
    config = json.loads((run_dir / "config.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: r["val_gzsl_F1@3"])
    data = config["data"]
    assert card.startswith("---\nlibrary_name: sdl-tagger\n")
    assert f"{data['seen_tags'] + data['unseen_tags']} tags: {data['seen_tags']} seen in training, " \
           f"{data['unseen_tags']} unseen" in card
    assert f"`{data['word_space']}` ({data['dim']}-d)" in card
    assert f"at epoch {best['epoch']} of 3" in card
    gzsl = f"| GZSL | {100 * best['val_gzsl_mAP']:.1f} | {100 * best['val_gzsl_F1@3']:.1f} |"
    assert gzsl in card
    assert 'Tagger.from_pretrained("hf-hub:alice/colours")' in card

    again = run_cli("-m", "train", "push", str(run_dir), "alice/colours", "--message", "again",
                    env=hub_env(standin, tmp_path))
    assert again.returncode == 0, again.stderr[-2000:]  # an existing repository gets a new commit


def test_push_refusals_are_one_line(run_dir, standin, tmp_path):
    cases = [((str(run_dir), "alice/colours"), hub_env(standin, tmp_path, token="wrong"), "set HF_TOKEN"),
             ((str(tmp_path), "alice/colours"), hub_env(standin, tmp_path), "no best.safetensors")]
    for args, env, message in cases:
        proc = run_cli("-m", "train", "push", *args, env=env)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert standin.repos == {}

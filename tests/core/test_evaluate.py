"""evaluate-dev: predictions in the scorer's format, metrics printed, clear error without a dev set."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdl_core import cli
from sdl_core.evaluate import EvalSetError, load_dev_set
from tests.conftest import EVAL, needs_eval


def test_missing_eval_dir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(EvalSetError, match="no dev evaluation set"):
        load_dev_set(tmp_path)
    assert cli.main(["evaluate-dev", "--eval-dir", str(tmp_path / "nowhere")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: no dev evaluation set") and "Traceback" not in err


@needs_eval
def test_evaluate_dev_prints_metrics_and_writes_predictions(tmp_path, capsys):
    out = tmp_path / "preds.json"
    assert cli.main(["evaluate-dev", "--eval-dir", str(EVAL), "--out", str(out)]) == cli.EXIT_OK
    text = capsys.readouterr().out
    summary = text.strip().splitlines()[-2]  # the scorer's summary line, then "predictions written"
    assert summary.startswith("mAP=") and "typedRetAUC=" in summary
    metrics = dict(part.split("=") for part in summary.split())
    # Well above the seeded random predictions (mAP .33, F1@3 .00, typed AUCs ~.5).
    assert float(metrics["mAP"]) > 0.5 and float(metrics["F1@3"]) > 0.25
    assert float(metrics["typedRetAUC"]) > 0.6

    dev = load_dev_set(EVAL)
    preds = json.loads(out.read_text())
    assert set(preds) == set(dev.labels)
    needed = {t.lower() for t in dev.tags()}
    for scores in preds.values():
        assert needed <= set(scores)  # NUS-81 + every photo's typed tags, on every photo


def test_the_dev_folder_comes_from_the_environment_or_shared_eval(tmp_path, monkeypatch, capsys):
    from sdl_core.cli.evaluate import default_eval_dir
    assert default_eval_dir({}) == Path("..") / "shared" / "eval"  # from the checkout's root, as in the README
    monkeypatch.setenv("SDL_EVAL_DIR", str(tmp_path / "elsewhere"))
    assert cli.main(["evaluate-dev"]) == cli.EXIT_USAGE
    assert f"no dev evaluation set at {tmp_path / 'elsewhere'}" in capsys.readouterr().err

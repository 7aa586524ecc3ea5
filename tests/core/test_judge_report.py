"""tools/judge_report.py: numbers from a person's ok/wrong/absurd judgement of top-10 tags."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, load_tool

jr = load_tool("judge_report")

JUDGED = {
    "a.jpg": [["sky", "ok"], ["*lake*", "ok"], ["giraffe", "absurd"], ["*fog*", "wrong"]],
    "b.jpg": [["dog", "wrong"], ["*grass*", "ok"], ["cat", "ok"], ["ball", "absurd"]],
}


def _write(tmp_path: Path, data: object, name: str = "judged.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_summary_counts_precision_absurd_and_unseen(tmp_path):
    numbers = jr.summarize(jr.load_judgements(_write(tmp_path, JUDGED)), k=10)
    assert numbers.photos == 2 and numbers.precision == pytest.approx(4 / 8)
    assert numbers.absurd_count == 2 and numbers.absurd_share == pytest.approx(2 / 8)
    assert numbers.absurd_top3_photos == 1  # giraffe is third on a.jpg; ball is fourth on b.jpg
    assert numbers.unseen_per_photo == pytest.approx(3 / 2) and numbers.unseen_ok_per_photo == pytest.approx(1.0)
    assert jr.summarize(jr.load_judgements(_write(tmp_path, JUDGED)), k=2).absurd_count == 0


def test_template_from_tag_json_marks_unseen_and_waits_for_verdicts(tmp_path):
    tagged = {"results": [{"image": "/x/a.jpg", "tags": [{"tag": "sky", "seen": False}, {"tag": "dog", "seen": True}]}]}
    template = jr.template(_write(tmp_path, tagged, "tags.json"))
    assert template == {"a.jpg": [["*sky*", "?"], ["dog", "?"]]}
    assert json.loads(jr.dumps(template)) == template
    assert jr.summarize(jr.load_judgements(_write(tmp_path, template))).pending == 2


@pytest.mark.parametrize("bad", [[], {"a.jpg": [["sky"]]}, {"a.jpg": [["sky", "maybe"]]}])
def test_malformed_judgements_are_refused(tmp_path, bad):
    with pytest.raises(jr.JudgementError):
        jr.load_judgements(_write(tmp_path, bad))


def test_cli_reports_and_errors_in_one_line(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "judge_report.py")]
    ok = subprocess.run(tool + ["report", str(_write(tmp_path, JUDGED))], capture_output=True, text=True, check=True)
    assert "P@10=0.500" in ok.stdout and "absurd=2 (25.0%)" in ok.stdout
    bad = subprocess.run(tool + ["report", str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


@pytest.mark.parametrize("name", ["judged_dev_before.json", "judged_dev_after.json"])
def test_shipped_dev_judgements_are_complete(name):
    judged = jr.load_judgements(ROOT / "docs" / "quality" / name)
    assert len(judged) == 12 and all(len(rows) == 10 for rows in judged.values())
    assert jr.summarize(judged).pending == 0

"""The short variant of ``benchmarks/soak.py`` (the 20-minute soak is a benchmark, not a test).

One minute, four visitors, the demo's cache age set to 20 s so that old temporary files
must be seen removed within the run. Every goal of the benchmark must be met, and every
kind of visitor action must have happened.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.soak_clients import ACTIONS
from tests.conftest import ROOT

pytestmark = pytest.mark.soak


def test_short_soak_meets_every_goal(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "1", "--clients", "4",
                           "--cache-max-age", "20", "--json", "--models-dir", str(tmp_path / "models")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = json.dumps({k: v for k, v in report.items() if k != "samples"})
    assert proc.returncode == 0, summary
    assert all(report["goals_met"].values()), summary
    assert report["failed_good_requests"] == 0 and report["bad_requests_without_their_message"] == 0, summary
    assert report["rss_growth_mb"] < 200, summary
    assert report["temp_oldest_file_s"] <= report["temp_files_age_limit_s"], report["samples"]
    assert set(report["by_action"]) == set(ACTIONS), report["by_action"]
    assert report["good_requests"] > 20 and report["requests_per_s"] > 0
    assert len(report["samples"]) >= 10 and (tmp_path / "models" / "soak_toy.safetensors").is_file()


def test_sweep_slack_stretches_with_the_load_per_core() -> None:
    from benchmarks.soak import SWEEP_SLACK_S, sweep_slack
    assert sweep_slack([0.3, 1.9], 2) == SWEEP_SLACK_S  # not beyond the cores: the fixed slack
    assert sweep_slack([1.0, 4.26, 3.4], 2) == round(SWEEP_SLACK_S * 2.13, 1)
    assert sweep_slack([], 2) == SWEEP_SLACK_S

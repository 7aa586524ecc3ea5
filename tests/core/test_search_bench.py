"""``benchmarks/bench_search.py --json`` run small (the README's table is its 1,000,000-photo run)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_search_rows() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_search.py"), "--photos", "3000",
                           "--queries", "4", "--repeats", "1", "--exact-sizes", "1000", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {row["key"]: row for row in data["rows"]}
    assert set(rows) == {"k3-d256-mean", "k7-d300-max"}
    for row in rows.values():
        assert row["photos"] == 3000 and row["shape"] in ("K=3 D=256 mean", "K=7 D=300 max")
        for case in ("1_tag", "3_tags_any", "3_tags_all"):
            assert row[f"median_ms_{case}"] > 0 and 0.95 <= row[f"recall_at_20_{case}"] <= 1.0
        assert row["recall_at_20"] == min(row["recall_at_20_any"], row["recall_at_20_all"])
        assert row["build_s"] >= row["train_s"] and row["index_bytes"] > 0 and row["ann_bytes"] > 0
        assert row["rss_mb_search_process"] > 0 and row["met"] == (row["median"] <= 20 and row["recall_at_20"] >= 0.95)
    assert [r["photos"] for r in data["exact"]] == [1000, 1000]

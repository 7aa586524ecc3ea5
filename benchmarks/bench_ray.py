"""The Ray engine's throughput next to the local CLI's: ``python benchmarks/bench_ray.py [--photos 64] [--json]``.

One folder (JPEGs cut from the demo's examples by ``bench.py``'s ``make_photos``), the default
model, each command a subprocess timed whole (imports, model, photos), the cases interleaved
round by round so machine load hits them alike; the median of ``--repeats`` rounds:

- ``local``: ``tag FOLDER --json`` (the default engine);
- ``ray, own cluster``: ``tag FOLDER --engine ray --out DIR``, which starts Ray on this machine;
- ``ray, running cluster``: the same joining a cluster started beforehand (``--address``), as on
  a real cluster: what the job itself costs;
- ``ray, resumed``: the last again on the same ``--out``: every shard finished, nothing runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import make_photos  # noqa: E402


def timed(argv: list[str]) -> tuple[float, float | None]:
    """(the whole command's seconds, the Ray job's own seconds as its `ray: ...` line reports them)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sdl_core", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"`sdl_core {' '.join(argv[:4])} ...` exited with {proc.returncode}: {proc.stderr[-2000:]}")
    job = re.search(r"^ray: .*\((\d+\.\d) s\)$", proc.stderr, re.MULTILINE)
    return time.perf_counter() - start, float(job.group(1)) if job else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import ray
    work = Path(tempfile.mkdtemp(prefix="sdl-bench-ray-"))
    folder = work / "photos"
    folder.mkdir()
    make_photos(folder, args.photos)
    address = ray.init(include_dashboard=False, logging_level="ERROR").address_info["address"]
    times: dict[str, list[tuple[float, float | None]]] = {}
    try:
        for round_ in range(args.repeats):
            out = work / f"results-{round_}"
            cases = {"local": ["tag", str(folder), "--json"],
                     "ray, own cluster": ["tag", str(folder), "--engine", "ray", "--out", str(out / "own")],
                     "ray, running cluster": ["tag", str(folder), "--engine", "ray", "--address", address,
                                              "--out", str(out / "running")]}
            names = list(cases)[round_ % 3:] + list(cases)[:round_ % 3]
            for name in names:
                times.setdefault(name, []).append(timed(cases[name]))
            times.setdefault("ray, resumed", []).append(timed(cases["ray, running cluster"]))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, values in times.items():
        whole = statistics.median(w for w, _ in values)
        jobs = [j for _, j in values if j is not None]
        rows.append({"case": name, "seconds": whole, "photos": args.photos, "photos_per_s": args.photos / whole,
                     "job_seconds": statistics.median(jobs) if jobs else None, "runs": len(values)})
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2))
        return
    print(f"{args.photos} photos, {os.cpu_count()} CPUs, median of {args.repeats}: the whole command (subprocess), "
          "and the Ray job alone (actors starting, then the shards)")
    for row in rows:
        job = f"   job {row['job_seconds']:6.1f} s" if row["job_seconds"] is not None else ""
        print(f"{row['case']:<24} {row['seconds']:7.1f} s  {row['photos_per_s']:6.1f} photos/s{job}")


if __name__ == "__main__":
    main()

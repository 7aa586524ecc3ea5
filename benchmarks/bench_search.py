"""Photo search numbers: query time and recall of the approximate index against exact search,
its build time, size and memory; optionally indexing speed with a real model.

    python benchmarks/bench_search.py --json                      # 100,000 photos, both shapes
    nice python benchmarks/bench_search.py --photos 1000000 --json  # the README's table
    python benchmarks/bench_search.py --indexing --jpegs 48       # + a real model on 640x480 JPEGs

Synthetic principal vectors (``benchmarks/search_data.py``: photos whose vectors point at
their tags' word vectors; ``--data isotropic`` for structureless ones) for two shapes: the
default model's (K=3, D=256, mean) and the authors' SDL (K=7, D=300, max). The world has 300
scenes at 1,000,000 photos and proportionally fewer below (``--scenes``), so every collection
size has as many photos per scene. For each shape: the index with its approximate part is
built, saved, loaded again (what ``search`` does), then queried with 1 and 3 tags; recall@20 is
the share of exact search's 20 best photos found. One row per shape (``--json``: one object).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import search_data  # noqa: E402
from sdl_core.search import SearchIndex, load_index, search, update_index  # noqa: E402
from sdl_core.search.ann import ApproxIndex, _new_index, list_count, sidecar_path  # noqa: E402
from sdl_core.search.calibrate import calibrate  # noqa: E402
from sdl_core.search.query import combine, embed_query, tag_scores, top_rows  # noqa: E402

SHAPES = {"k3-d256-mean": (3, 256, "mean"), "k7-d300-max": (7, 300, "max")}
TARGETS = {"median_ms": 20.0, "recall_at_20": 0.95}
CASES = (("1_tag", 1, "any"), ("3_tags_any", 3, "any"), ("3_tags_all", 3, "all"))


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def search_process_mb(path: Path, tags: list[str]) -> float:
    """RSS of a fresh process that loads the index and searches once (what ``search`` holds)."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import psutil\n"
            "from benchmarks.search_data import query_space\nfrom sdl_core.search import load_index, search\n"
            f"index = load_index({str(path)!r}); search(index, {tags!r}, query_space(index))\n"
            "print(psutil.Process().memory_info().rss / 2**20)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=3600)
    return float(out.stdout.strip().splitlines()[-1])


def exact_top(index: SearchIndex, tags: list[str], space, mode: str) -> set[str]:
    """The 20 best photos by exact search (every vector read), as paths."""
    _, vectors, _ = embed_query(tags, index.vocabulary, space)
    w = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    per_tag = index.mean_vectors() @ w.t() if index.reduction == "mean" else tag_scores(index.vectors, w, "max")
    return {index.entries[r].path for r in top_rows(combine(per_tag, mode)[0], 20).tolist()}


def timed_search(index: SearchIndex, tags: list[str], space, mode: str, repeats: int) -> tuple[float, set[str], int]:
    """(median seconds, the 20 paths found, photos scored)."""
    result = search(index, tags, space, top_n=20, mode=mode)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = search(index, tags, space, top_n=20, mode=mode)
        times.append(time.perf_counter() - start)
    return statistics.median(times), {h.path for h in result.hits}, result.scored


def bench_shape(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    k, dim, reduction = SHAPES[name]
    scenes = args.scenes or max(4, round(search_data.SCENES * args.photos / 1_000_000))
    world = search_data.world(dim, scenes=scenes)
    start = time.perf_counter()
    vectors = search_data.principal_vectors(args.photos, k, world, args.data)
    generate_s = time.perf_counter() - start
    index = search_data.search_index(vectors, world, reduction, name=name)
    start = time.perf_counter()  # what `index` does, step by step: learn the lists, add the entries, check
    means = _new_index(index.vectors, means=True) if reduction == "mean" else None
    ann = ApproxIndex(k, dim, reduction, _new_index(index.vectors, means=False), means, 0)
    train_s = time.perf_counter() - start
    ann.add(index.vectors, index.ids)
    ann.trained_on = ann.entries
    add_s = time.perf_counter() - start - train_s
    calibrated = calibrate(ann, index.vectors, index.ids, index.vocabulary.vectors)
    index.ann = ann
    build_s = time.perf_counter() - start
    lists, scan = list_count(ann.entries), ann.scan
    rss_built = rss_mb()
    path = workdir / f"{name}.safetensors"
    start = time.perf_counter()
    index.save(path)
    save_s = time.perf_counter() - start
    del index, vectors, ann
    search_process = search_process_mb(path, [world.tags[0]])  # before this process loads it again
    start = time.perf_counter()
    index = load_index(path)
    load_s = time.perf_counter() - start
    rss_loaded = rss_mb()
    space = search_data.query_space(index)
    exact_index = dataclasses.replace(index, ann=None)
    row: dict = {"photos": args.photos, "shape": f"K={k} D={dim} {reduction}", "key": name, "data": args.data,
                 "scenes": scenes, "lists": lists, "generate_s": round(generate_s, 1),
                 "build_s": round(build_s, 1), "train_s": round(train_s, 1), "add_s": round(add_s, 1),
                 "scan": scan, "calibration_share": round(calibrated, 3),
                 "save_s": round(save_s, 1), "load_s": round(load_s, 1),
                 "index_bytes": path.stat().st_size, "ann_bytes": sidecar_path(path).stat().st_size,
                 "rss_mb_built": round(rss_built), "rss_mb_loaded": round(rss_loaded)}
    row["bytes_per_photo"] = round((row["index_bytes"] + row["ann_bytes"]) / args.photos)
    row["rss_mb_search_process"] = round(search_process)
    for case, size, mode in CASES:
        times, exact_times, recalls, scored = [], [], [], []
        for tags in search_data.queries(world, args.queries, size):
            took, found, n = timed_search(index, tags, space, mode, args.repeats)
            start = time.perf_counter()
            truth = exact_top(exact_index, tags, space, mode)
            exact_times.append(time.perf_counter() - start)
            times.append(took)
            scored.append(n)
            recalls.append(len(found & truth) / len(truth))
        row[f"median_ms_{case}"] = round(1000 * statistics.median(times), 2)
        row[f"p90_ms_{case}"] = round(1000 * float(np.percentile(times, 90)), 2)
        row[f"exact_median_ms_{case}"] = round(1000 * statistics.median(exact_times), 1)
        row[f"recall_at_20_{case}"] = round(float(np.mean(recalls)), 4)
        row[f"worst_recall_at_20_{case}"] = round(min(recalls), 2)
        row[f"scored_{case}"] = round(float(np.mean(scored)))
        print(f"[{name}] {case}: median {row[f'median_ms_{case}']} ms (exact {row[f'exact_median_ms_{case}']} ms), "
              f"recall@20 {row[f'recall_at_20_{case}']}", file=sys.stderr, flush=True)
    row["median"] = max(row[f"median_ms_{case}"] for case, _, _ in CASES)
    row["recall_at_20"] = min(row[f"recall_at_20_{case}"] for case, _, _ in CASES)
    row["recall_at_20_any"] = min(row["recall_at_20_1_tag"], row["recall_at_20_3_tags_any"])
    row["recall_at_20_all"] = row["recall_at_20_3_tags_all"]
    row["targets"] = TARGETS
    row["met"] = row["median"] <= TARGETS["median_ms"] and row["recall_at_20"] >= TARGETS["recall_at_20"]
    row["rss_mb_peak"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    for extra in (path, sidecar_path(path)):
        extra.unlink()
    return row


def bench_exact(name: str, photos: int, args: argparse.Namespace) -> dict:
    """Exact search as a folder below the threshold has it (float32 in memory, every vector read)."""
    k, dim, reduction = SHAPES[name]
    world = search_data.world(dim, scenes=max(4, round(search_data.SCENES * photos / 1_000_000)))
    vectors = torch.from_numpy(search_data.principal_vectors(photos, k, world, args.data)).float()
    index = search_data.search_index(vectors, world, reduction, name=name)
    space = search_data.query_space(index)
    row: dict = {"photos": photos, "shape": f"K={k} D={dim} {reduction}", "key": f"exact-{name}"}
    for case, size, mode in CASES:
        times = [timed_search(index, tags, space, mode, args.repeats)[0]
                 for tags in search_data.queries(world, min(args.queries, 10), size)]
        row[f"median_ms_{case}"] = round(1000 * statistics.median(times), 2)
    print(f"[exact {name} {photos:,}] {row}", file=sys.stderr, flush=True)
    return row


def bench_indexing(model: str, jpegs: int, batch_size: int, workdir: Path) -> dict:
    """A real model over generated 640x480 JPEGs: decode, resize, forward, and a re-index."""
    from PIL import Image

    from sdl_core.tagger import Tagger
    tagger = Tagger.from_pretrained(model)
    folder = workdir / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640] / 480.0
    for i in range(jpegs):
        a, b, c = rng.uniform(0, 6, 3)
        img = np.stack([np.sin(a * xx + i), np.cos(b * yy), np.sin(c * (xx + yy))], -1) * 100 + 128
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"photo_{i:04d}.jpg", quality=90)
    update_index(folder, tagger, files=[], batch_size=batch_size)  # warm-up: first forward pass
    start = time.perf_counter()
    index, _ = update_index(folder, tagger, batch_size=batch_size)
    took = time.perf_counter() - start
    start = time.perf_counter()
    _, again = update_index(folder, tagger, index, batch_size=batch_size)
    reindex = time.perf_counter() - start
    size = index.save(workdir / "real.safetensors").stat().st_size
    return {"model": tagger.name, "jpegs": jpegs, "images_per_s": round(jpegs / took, 1),
            "reindex_unchanged_ms": round(1000 * reindex, 1), "unchanged": again.unchanged,
            "bytes_per_photo": round(size / len(index)), "batch_size": batch_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000, help="photos in each synthetic index")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--data", default="tagged", choices=search_data.KINDS)
    parser.add_argument("--scenes", type=int, help="scenes of the synthetic world (default: 300 per million)")
    parser.add_argument("--queries", type=int, default=30, help="queries per case (1 tag; 3 tags any; 3 tags all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per query")
    parser.add_argument("--exact-sizes", type=int, nargs="*", default=[],
                        help="also time exact search (float32, as below the threshold) at these photo counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--indexing", action="store_true", help="also index generated JPEGs with a real model")
    parser.add_argument("--model", default="default")
    parser.add_argument("--jpegs", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if args.photos < 100:
        parser.error("--photos must be at least 100")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_shape(name, args, Path(tmp)) for name in args.shapes]
        exact = [bench_exact(name, photos, args) for name in args.shapes for photos in args.exact_sizes]
        indexing = bench_indexing(args.model, args.jpegs, args.batch_size, Path(tmp)) if args.indexing else None
    machine = {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average":
               [round(x, 1) for x in os.getloadavg()], "processor": platform.processor() or platform.machine(),
               "python": platform.python_version(), "wall_s": round(time.perf_counter() - started)}
    if args.json:
        json.dump({"machine": machine, "rows": rows, "exact": exact, "indexing": indexing}, sys.stdout, indent=2)
        print()
        return 0
    print(" ".join(f"{k}={v}" for k, v in machine.items()))
    for row in rows:
        print(f"{row['shape']}, {row['photos']:,} photos: median {row['median']} ms (1 tag "
              f"{row['median_ms_1_tag']}, 3 any {row['median_ms_3_tags_any']}, 3 all {row['median_ms_3_tags_all']}; "
              f"exact {row['exact_median_ms_1_tag']}), recall@20 any {row['recall_at_20_any']} all "
              f"{row['recall_at_20_all']}, build {row['build_s']} s, {row['bytes_per_photo']} bytes/photo, "
              f"RSS {row['rss_mb_search_process']} MB; targets met: {row['met']}")
    for row in exact:
        print(f"exact search, {row['shape']}, {row['photos']:,} photos: 1 tag {row['median_ms_1_tag']} ms, "
              f"3 any {row['median_ms_3_tags_any']} ms, 3 all {row['median_ms_3_tags_all']} ms")
    if indexing:
        print(f"indexing: {indexing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

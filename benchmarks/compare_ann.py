"""Which approximate-search library for the photo index: the measurements behind the choice.

    python benchmarks/compare_ann.py --vectors 400000 --dim 300      # tagged and isotropic data

Task: the first stage of a max-over-K search, inner product between a tag's word vector and
every principal vector (``benchmarks/search_data.py`` makes both). For each candidate it prints
build time (2 threads), the index's size, the median single-query time (1 thread) and recall:
``r@20`` = share of the exact top-20 vectors among the 20 returned, ``r20@64`` = among 64 returned
(what an exact re-score of 64 candidates recovers). Libraries that are not installed are skipped.
Each candidate runs in its own process: faiss and usearch in one process crash (their C++
runtimes clash).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import search_data  # noqa: E402

Search = Callable[[np.ndarray, int], np.ndarray]  # (query (D,), count) -> ids


def exact_top(vectors: np.ndarray, queries: np.ndarray, count: int) -> np.ndarray:
    scores = np.concatenate([queries @ vectors[s:s + 65536].astype(np.float32).T
                             for s in range(0, len(vectors), 65536)], axis=1)
    return np.argsort(-scores, axis=1, kind="stable")[:, :count]


def usearch_builds(vectors: np.ndarray, params: dict) -> tuple[Search, int, Callable[[int], None]]:
    from usearch.index import Index
    index = Index(ndim=vectors.shape[1], metric="ip", dtype=params["dtype"], connectivity=params["m"],
                  expansion_add=params["ef_add"])
    index.add(np.arange(len(vectors)), vectors, threads=2)

    def set_ef(ef: int) -> None:
        index.expansion_search = ef

    return (lambda q, c: index.search(q, c, threads=1).keys), index.serialized_length, set_ef


def faiss_builds(vectors: np.ndarray, params: dict) -> tuple[Search, int, Callable[[int], None]]:
    import faiss
    faiss.omp_set_num_threads(2)
    index = faiss.index_factory(vectors.shape[1], params["factory"], faiss.METRIC_INNER_PRODUCT)
    data = vectors.astype(np.float32)
    if not index.is_trained:
        sample = data[np.random.default_rng(0).choice(len(data), min(len(data), 100_000), replace=False)]
        index.train(sample)
    if "HNSW" in params["factory"]:
        faiss.downcast_index(index).hnsw.efConstruction = params["ef_add"]
    index.add(data)
    size = faiss.serialize_index(index).size
    inner = faiss.extract_index_ivf(index) if "IVF" in params["factory"] else faiss.downcast_index(index)

    def set_ef(ef: int) -> None:
        if "IVF" in params["factory"]:
            inner.nprobe = ef
        else:
            inner.hnsw.efSearch = ef

    def search(q: np.ndarray, count: int) -> np.ndarray:
        faiss.omp_set_num_threads(1)
        return index.search(q[None].astype(np.float32), count)[1][0]

    return search, size, set_ef


CANDIDATES = {
    "usearch HNSW M16 f16": (usearch_builds, {"dtype": "f16", "m": 16, "ef_add": 128}, (32, 64, 128, 256)),
    "usearch HNSW M16 i8 (normalises: cosine only)": (usearch_builds, {"dtype": "i8", "m": 16, "ef_add": 128},
                                                      (64, 128)),
    "faiss HNSW32 f32": (faiss_builds, {"factory": "HNSW32", "ef_add": 128}, (32, 64, 128, 256)),
    "faiss HNSW32 SQ8": (faiss_builds, {"factory": "HNSW32_SQ8", "ef_add": 128}, (64, 128, 256)),
    "faiss IVF1024 SQ8": (faiss_builds, {"factory": "IVF1024,SQ8"}, (8, 16, 32, 64)),
    "faiss IVF1024 SQfp16": (faiss_builds, {"factory": "IVF1024,SQfp16"}, (16, 32, 64)),
}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return len(set(found.tolist()) & set(truth.tolist())) / len(truth)


def measure(name: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> None:
    builder, params, efs = CANDIDATES[name]
    try:
        start = time.perf_counter()
        search, size, set_ef = builder(vectors, params)
    except ImportError as exc:
        print(f"  {name}: skipped ({exc})")
        return
    build = time.perf_counter() - start
    for ef in efs:
        set_ef(ef)
        times, r20, r64 = [], [], []
        for q, t in zip(queries, truth):
            start = time.perf_counter()
            found = search(q, 20)
            times.append(time.perf_counter() - start)
            r20.append(recall(found, t))
            r64.append(recall(search(q, 64), t))
        print(f"  {name:46s} build {build:6.1f} s  {size / len(vectors):5.0f} B/vector  ef/nprobe {ef:4d}: "
              f"median {1000 * statistics.median(times):6.2f} ms  r@20 {np.mean(r20):.3f}  r20@64 {np.mean(r64):.3f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--kinds", nargs="+", default=list(search_data.KINDS), choices=search_data.KINDS)
    parser.add_argument("--only", help="the one candidate to measure (default: each in its own process)")
    args = parser.parse_args()
    if args.only is None:
        for name in CANDIDATES:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", name], check=False)
        return 0
    world = search_data.world(args.dim)
    for kind in args.kinds:
        vectors = search_data.principal_vectors(args.vectors, 1, world, kind)[:, 0]
        picked = [world.tags.index(q[0]) for q in search_data.queries(world, args.queries, 1)]
        queries = world.vectors[picked]
        truth = exact_top(vectors, queries, 20)
        print(f"{kind}: {args.vectors:,} vectors, D={args.dim}, {args.queries} single-tag queries", flush=True)
        measure(args.only, vectors, queries, truth)
    return 0


if __name__ == "__main__":
    sys.exit(main())

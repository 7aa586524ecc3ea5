"""Which approximate-search library for the photo index: the measurements behind the choice.

    nice python benchmarks/compare_ann.py --photos 40000          # K=7, D=300: 280,000 vectors

The task is the first stage of a max-over-K search: inner products between a tag's word
vector and every principal vector (synthetic, ``benchmarks/search_data.py``, with as many
photos per scene as a 1,000,000-photo collection). Per candidate: build time (all cores),
bytes per vector, and with one thread the median time of a shallow query (80 vectors, what
``any`` needs) and of a deep one (10,000 vectors, what ``all`` needs), with recall = the share
of the exact best 20 (shallow) or 2,000 (deep) found. Each candidate runs in its own process
(FAISS and usearch in one process crash: their C++ runtimes clash); missing libraries are skipped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from benchmarks import search_data  # noqa: E402

Search = Callable[[np.ndarray, int], np.ndarray]  # (query (D,), count) -> ids
REMOVES = {"usearch": "yes (marks, then compacts)", "faiss HNSW": "no", "faiss IVF": "yes"}


def usearch_index(vectors: np.ndarray, dtype: str) -> tuple[Search, int]:
    from usearch.index import Index
    index = Index(ndim=vectors.shape[1], metric="ip", dtype=dtype, connectivity=16, expansion_add=64)
    scale = 64 / float(np.abs(vectors).max()) if dtype == "e4m3" else 1.0  # e4m3 holds up to 448
    index.add(np.arange(len(vectors)), vectors * np.float32(scale))

    def search(query: np.ndarray, count: int) -> np.ndarray:
        index.expansion_search = count
        return index.search(query * np.float32(scale), count, threads=1).keys

    return search, index.serialized_length


def faiss_index(vectors: np.ndarray, kind: str) -> tuple[Search, int]:
    import faiss
    pad = -vectors.shape[1] % 16  # FAISS's SIMD code wants a multiple of 16 dimensions
    data = np.ascontiguousarray(np.pad(vectors, ((0, 0), (0, pad))))
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(data.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
    else:
        lists = int(2 * math.sqrt(len(data)))
        index = faiss.index_factory(data.shape[1], f"IVF{lists},SQ8", faiss.METRIC_INNER_PRODUCT)
        index.train(data[np.linspace(0, len(data) - 1, 40 * lists).astype(int)])
        faiss.extract_index_ivf(index).nprobe = max(16, math.ceil(20_000 * lists / len(data)))
    index.add(data)

    def search(query: np.ndarray, count: int) -> np.ndarray:
        faiss.omp_set_num_threads(1)
        if kind == "hnsw":
            index.hnsw.efSearch = count
        return index.search(np.pad(query, (0, pad))[None], count)[1][0]

    return search, faiss.serialize_index(index).size


CANDIDATES = {
    "usearch HNSW M16 f16": lambda v: usearch_index(v, "f16"),
    "usearch HNSW M16 e4m3 (8-bit float)": lambda v: usearch_index(v, "e4m3"),
    "faiss HNSW32 float32": lambda v: faiss_index(v, "hnsw"),
    "faiss IVF 2sqrt(n) lists, SQ8": lambda v: faiss_index(v, "ivf"),
}


def measure(name: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    try:
        start = time.perf_counter()
        search, size = CANDIDATES[name](vectors)
        build = time.perf_counter() - start
    except ImportError as exc:
        return {"candidate": name, "skipped": str(exc)}
    row = {"candidate": name, "vectors": len(vectors), "build_s": round(build, 1),
           "bytes_per_vector": round(size / len(vectors)),
           "removes": next((v for k, v in REMOVES.items() if name.startswith(k)), "?")}
    for label, count, top in (("shallow", 80, 20), ("deep", 10_000, 2_000)):
        times, recalls = [], []
        for query, best in zip(queries, truth):
            start = time.perf_counter()
            found = search(query, count)
            times.append(time.perf_counter() - start)
            recalls.append(len(set(found.tolist()) & set(best[:top].tolist())) / top)
        row[f"{label}_median_ms"] = round(1000 * statistics.median(times), 2)
        row[f"{label}_recall"] = round(float(np.mean(recalls)), 3)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40_000, help="photos (K=7 vectors each)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--only", help="the one candidate to measure (default: each in its own process)")
    args = parser.parse_args()
    if args.only is None:
        for name in CANDIDATES:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", name], check=False)
        return 0
    world = search_data.world(300, scenes=max(4, round(search_data.SCENES * args.photos / 1_000_000)))
    vectors = search_data.principal_vectors(args.photos, 7, world).reshape(-1, 300).astype(np.float32)
    queries = world.vectors[[world.tags.index(q[0]) for q in search_data.queries(world, args.queries, 1)]]
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :2000]
    print(json.dumps(measure(args.only, vectors, queries, truth)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

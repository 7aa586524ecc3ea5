"""Photo search numbers: indexing speed, query latency on a large index, index size.

    python benchmarks/bench_search.py                  # default model, 48 photos, 100,000-photo index
    python benchmarks/bench_search.py --model ckpt.safetensors --photos 96 --n 100000

Indexing runs the real model on generated 640x480 JPEGs (decode + resize + forward).
Query latency is measured on a synthetic index of --n photos with the model's K, D and
reduction (vectors drawn at random, stored as the index stores them), plus the authors'
SDL shape (K=7, D=300, max) for comparison. Prints one line per number.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdl_core.config import ModelConfig, WordSpaceInfo  # noqa: E402
from sdl_core.search import (FileEntry, ModelIdentity, SearchIndex, load_index, query_space,  # noqa: E402
                             search, update_index)
from sdl_core.tagger import Tagger  # noqa: E402
from sdl_core.vocab import Vocabulary  # noqa: E402
from sdl_core.wordvec import TableSpace, unit_rows  # noqa: E402

QUERIES = [["dog"], ["beach"], ["sunset", "boat"], ["cup", "table", "coffee"]]


def make_photos(folder: Path, count: int) -> None:
    """Smooth colour fields with noise, saved as JPEG (realistic decode cost)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640] / 480.0
    for i in range(count):
        a, b, c = rng.uniform(0, 6, 3)
        img = np.stack([np.sin(a * xx + i), np.cos(b * yy), np.sin(c * (xx + yy))], -1) * 100 + 128
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"photo_{i:04d}.jpg", quality=90)


def bench_indexing(tagger: Tagger, photos: int, batch_size: int, workdir: Path) -> None:
    folder = workdir / "photos"
    folder.mkdir()
    make_photos(folder, photos)
    update_index(folder, tagger, files=[], batch_size=batch_size)  # warm-up: first forward pass
    start = time.perf_counter()
    index, report = update_index(folder, tagger, batch_size=batch_size)
    took = time.perf_counter() - start
    print(f"indexing: {photos} photos (640x480 JPEG) in {took:.2f} s = {photos / took:.1f} images/s "
          f"(batch {batch_size}, {torch.get_num_threads()} threads)")
    start = time.perf_counter()
    _, again = update_index(folder, tagger, index, batch_size=batch_size)
    print(f"re-index, nothing changed: {1000 * (time.perf_counter() - start):.1f} ms "
          f"({again.unchanged} unchanged, {again.encoded} encoded)")
    path = index.save(workdir / "real.safetensors")
    print(f"index size, real folder: {path.stat().st_size / len(index):.0f} bytes per photo "
          f"({len(index)} photos, K={tagger.config.k}, D={tagger.config.d})")


def synthetic_index(n: int, config: ModelConfig, vocab: Vocabulary, seed: int = 0) -> SearchIndex:
    gen = torch.Generator().manual_seed(seed)
    vectors = torch.nn.functional.normalize(torch.randn(n, config.k, config.d, generator=gen), dim=-1)
    vectors = vectors.half().float()  # as stored
    entries = [FileEntry(f"{i // 1000:03d}/IMG_{i:06d}.jpg", 2_000_000 + i, 1_700_000_000_000_000_000 + i)
               for i in range(n)]
    identity = ModelIdentity(config.name or "synthetic", config.to_json(), "synthetic")
    return SearchIndex(Path(tempfile.gettempdir()), identity, entries, vectors, vocab)


def bench_queries(index: SearchIndex, space, repeats: int, label: str, workdir: Path) -> None:
    path = index.save(workdir / f"synthetic-{label}.safetensors")
    start = time.perf_counter()
    loaded = load_index(path)
    load_s = time.perf_counter() - start
    print(f"[{label}] index of {len(index):,} photos: {path.stat().st_size / len(index):.0f} bytes per photo, "
          f"{path.stat().st_size / 2**20:.0f} MiB, loads in {load_s:.2f} s")
    for tags in QUERIES:
        for mode in ("any", "all") if len(tags) > 1 else ("any",):
            search(loaded, tags, space, top_n=20, mode=mode)  # warm-up (word vectors cached)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                search(loaded, tags, space, top_n=20, mode=mode)
                times.append(time.perf_counter() - start)
            print(f"[{label}] query {', '.join(tags)!r} ({mode}): median {1000 * statistics.median(times):.1f} ms, "
                  f"min {1000 * min(times):.1f} ms over {repeats}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--photos", type=int, default=48, help="photos to index for the speed test")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n", type=int, default=100_000, help="photos in the synthetic index")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-indexing", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    tagger = Tagger.from_pretrained(args.model)
    print(f"model {tagger.name}: K={tagger.config.k}, D={tagger.config.d}, reduction {tagger.config.reduction}, "
          f"word space {tagger.config.word_space.name} (loaded in {time.perf_counter() - start:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if not args.skip_indexing:
            bench_indexing(tagger, args.photos, args.batch_size, workdir)
        index = synthetic_index(args.n, tagger.config, tagger.vocabulary)
        bench_queries(index, query_space(index), args.repeats, f"{tagger.name}", workdir)
        del index
        sdl_space = WordSpaceInfo("synthetic-300", 300)
        tags = sorted({t for q in QUERIES for t in q})
        vocab = Vocabulary(tags, unit_rows(np.random.default_rng(1).normal(size=(len(tags), 300))),
                           np.ones(len(tags), bool))
        sdl = ModelConfig(kind="sdl", backbone="tresnet_m", k=7, word_space=sdl_space, reduction="max",
                          name="sdl-shape K=7 D=300 max")
        index = synthetic_index(args.n, sdl, vocab)
        bench_queries(index, TableSpace(sdl_space, vocab.tags, vocab.vectors), args.repeats, "sdl K=7 D=300 max",
                      workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

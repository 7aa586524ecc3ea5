"""Synthetic principal vectors and queries for the search benchmarks and tests.

Two kinds, both deterministic for a seed and generated in blocks (a million photos with
K=7, D=300 is 4.2 GB even as float16):

- ``tagged`` (the default): what a tagging model's principal vectors look like. Tags have
  unit word vectors (random); they belong to scenes (300 scenes of 10 tags; every tag in at
  least one), and scenes are as popular as Zipf's law says (s=1, offset 5). A photo shows one
  scene and 2 + Poisson(2) of its tags; its K principal vectors share those tags out (vector k
  gets tags k, k+K, ...; with fewer tags than K they repeat), and each points at the sum of its
  tags' word vectors with a cosine drawn from U(0.35, 0.75), the rest a random direction (SDL
  trains each principal vector towards the word vectors of the image's tags). Queries name
  tags of one scene, as people type tags that occur together.
- ``isotropic``: unit vectors uniform on the sphere, no structure at all (the worst case for
  any approximate index: no vector is much nearer a query than a random one).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from sdl_core.config import ModelConfig, WordSpaceInfo
from sdl_core.search import FileEntry, ModelIdentity, SearchIndex
from sdl_core.vocab import Vocabulary
from sdl_core.wordvec import TableSpace

KINDS = ("tagged", "isotropic")
CHUNK = 8192
SCENES = 300
SCENE_TAGS = 10


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _zipf(n: int) -> np.ndarray:
    weight = 1.0 / (np.arange(n) + 5.0)
    return weight / weight.sum()


@dataclass(frozen=True)
class World:
    """Tags (names, (n_tags, D) unit word vectors) and scenes ((SCENES, SCENE_TAGS) tag numbers)."""

    tags: list[str]
    vectors: np.ndarray
    scenes: np.ndarray
    popularity: np.ndarray  # of the scenes

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def world(dim: int, scenes: int = SCENES, seed: int = 0) -> World:
    """Tags and scenes; fewer scenes (and 2/3 as many tags) make a denser world, e.g. a small
    collection where each scene has as many photos as in a large one."""
    rng = np.random.default_rng([seed, 1])
    n_tags = scenes * SCENE_TAGS * 2 // 3
    vectors = unit(rng.standard_normal((n_tags, dim))).astype(np.float32)
    order = rng.permutation(n_tags)
    rows = []
    for i in range(scenes):  # every tag in one scene, then more tags until each scene has SCENE_TAGS
        own = order[i::scenes]
        others = rng.choice(np.setdiff1d(np.arange(n_tags), own), SCENE_TAGS - len(own), replace=False)
        rows.append(np.concatenate([own, others]))
    return World([f"tag{i:04d}" for i in range(n_tags)], vectors, np.stack(rows), _zipf(scenes))


def principal_chunks(n: int, k: int, w: World, kind: str = "tagged", seed: int = 0,
                     chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """(m, k, D) float16 blocks of principal vectors for photos 0..n-1, block by block."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        rng = np.random.default_rng([seed, 2, start])
        noise = unit(rng.standard_normal((m, k, w.dim), dtype=np.float32))
        if kind == "isotropic":
            yield noise.astype(np.float16)
            continue
        scene = rng.choice(len(w.scenes), size=m, p=w.popularity)
        count = np.minimum(2 + rng.poisson(2.0, m), SCENE_TAGS)
        picks = np.argsort(rng.random((m, SCENE_TAGS)), axis=1)  # a random order of each scene's tags
        tags = w.scenes[scene[:, None], picks]  # the first `count` are the photo's
        direction = np.zeros((m, k, w.dim), np.float32)
        vector = np.arange(k)[None, :]
        few = (count <= k)[:, None]
        for j in range(int(count.max())):
            # with at most k tags vector v gets tag v mod count (tags repeat), else tag j goes to vector j mod k
            owner = np.where(few, vector % count[:, None] == j, (j < count)[:, None] & (vector == j % k))
            direction += owner[:, :, None] * w.vectors[tags[:, j]][:, None, :]
        cos = rng.uniform(0.35, 0.75, (m, k, 1)).astype(np.float32)
        yield unit(cos * unit(direction) + np.sqrt(1 - cos ** 2) * noise).astype(np.float16)


def principal_vectors(n: int, k: int, w: World, kind: str = "tagged", seed: int = 0) -> np.ndarray:
    """All (n, k, D) float16 principal vectors, written block by block into one array."""
    out = np.empty((n, k, w.dim), np.float16)
    start = 0
    for block in principal_chunks(n, k, w, kind, seed):
        out[start:start + len(block)] = block
        start += len(block)
    return out


def queries(w: World, count: int, size: int, seed: int = 0) -> list[list[str]]:
    """``count`` queries of ``size`` distinct tags of one scene (scenes drawn by popularity)."""
    rng = np.random.default_rng([seed, 3, size])
    scenes = rng.choice(len(w.scenes), size=count, p=w.popularity)
    return [[w.tags[t] for t in rng.choice(w.scenes[s], size=size, replace=False)] for s in scenes]


def search_index(vectors: np.ndarray | torch.Tensor, w: World, reduction: str, name: str = "synthetic") -> SearchIndex:
    """A search index over synthetic (N, K, D) principal vectors (kept as given: float16 stays
    float16), with the world's tags as the model's vocabulary; photo i is ``NNN/IMG_i.jpg``."""
    vectors = torch.as_tensor(vectors)
    n, k, dim = vectors.shape
    config = ModelConfig(kind="sdl", backbone="tresnet_m", k=k, word_space=WordSpaceInfo(f"{name}-{dim}", dim),
                         reduction=reduction, name=name)
    entries = [FileEntry(f"{i // 1000:04d}/IMG_{i:07d}.jpg", 2_000_000 + i, 1_700_000_000_000_000_000 + i)
               for i in range(n)]
    vocab = Vocabulary(w.tags, w.vectors, np.ones(len(w.tags), bool))
    identity = ModelIdentity(name, config.to_json(), f"{name}-fingerprint")
    return SearchIndex(Path(tempfile.gettempdir()), identity, entries, vectors, vocab)


def query_space(index: SearchIndex) -> TableSpace:
    """The world's tags as a word space (what a search embeds typed tags with)."""
    return TableSpace(index.identity.word_space, index.vocabulary.tags, index.vocabulary.vectors)

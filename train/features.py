"""Pooled backbone features for head-only training, computed once and cached on disk.

A cache file holds the features of one starting backbone (architecture + weights +
preprocessing); inside it, each image is keyed by its resolved path, size and
modification time, so an edited photo is recomputed and a new one is added.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize
from tqdm import tqdm

from sdl_core import cache
from sdl_core.config import PreprocessConfig
from sdl_core.errors import ImageError, StorageError
from sdl_core.files import write_bytes
from sdl_core.images import load_image, to_tensor
from sdl_core.model import SDLModel

from .backbones import pooled_features, short_hash, weights_identity

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where pooled features are cached: ``features/`` under the project's cache root
    (``SDL_TAGGER_CACHE``, else the user cache folder); the older ``SDL_CACHE_DIR`` still wins."""
    legacy = os.environ.get("SDL_CACHE_DIR")
    return Path(legacy) if legacy else cache.cache_dir(cache.FEATURES)


def image_key(path: Path) -> str:
    """Identity of an image file's content as far as the file system tells."""
    resolved = path.resolve()
    stat = resolved.stat()
    return hashlib.sha1(f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()


def cache_file(cache_dir: Path, model: SDLModel, pretrained: str | None, seed: int) -> Path:
    """One cache file per starting backbone: architecture, weights and preprocessing."""
    backbone = model.config.backbone
    identity = json.dumps({"backbone": backbone, "weights": weights_identity(pretrained, backbone, seed),
                           "preprocess": json.loads(model.config.to_json())["preprocess"]}, sort_keys=True)
    return cache_dir / f"{backbone}-{short_hash(identity)}.safetensors"


def _read_cache(path: Path) -> tuple[dict[str, torch.Tensor], set[str]]:
    """(features by image key, keys of images found unreadable) of a cache file."""
    if not path.is_file():
        return {}, set()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            keys = json.loads(meta["keys"])
            unreadable = set(json.loads(meta.get("unreadable", "[]")))
            features = fh.get_tensor("features")
    except (SafetensorError, OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        log.warning("ignoring an unreadable feature cache %s (%s)", path.name, exc)
        return {}, set()
    return dict(zip(keys, features)), unreadable


def _write_cache(path: Path, cached: dict[str, torch.Tensor], unreadable: set[str], dim: int) -> None:
    """Whole or not at all; a cache that cannot be written (full or read-only disk) is only a warning."""
    features = torch.stack(list(cached.values())) if cached else torch.zeros(0, dim)
    data = serialize({"features": features.contiguous()},
                     metadata={"keys": json.dumps(list(cached)), "unreadable": json.dumps(sorted(unreadable))})
    try:
        write_bytes(path, data, "feature cache")
    except StorageError as exc:
        log.warning("features not cached: %s", exc)


class _Pixels(torch.utils.data.Dataset):
    """(index, pixels, readable) per image: decoding runs in DataLoader workers."""

    def __init__(self, paths: Sequence[Path], preprocess: PreprocessConfig) -> None:
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, bool]:
        try:
            return i, to_tensor([load_image(self.paths[i])], self.preprocess)[0], True
        except ImageError as exc:
            log.warning("skipping unreadable image: %s", exc)
            size = self.preprocess.size
            return i, torch.zeros(3, size, size), False


def _key(path: Path) -> str | None:
    try:
        return image_key(path)
    except OSError:
        return None  # a missing file: no features, never an error


@torch.inference_mode()
def cached_rows(file: Path, paths: Sequence[Path], compute: Callable[[torch.Tensor], torch.Tensor],
                preprocess: PreprocessConfig, dim: int, device: torch.device, batch_size: int = 32,
                workers: int = 0, progress: bool = True, amp: bool = False, save_every: int = 20_000
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``compute(pixels)`` (B, dim) for every image, from the cache ``file`` where it is
    there; the rest are computed (DataLoader with ``workers``; saved every ``save_every``
    images, so an interrupted run keeps its work). Returns (M, dim) rows and a mask (M,) of
    the images that could be read (missing and unreadable ones are zeros and False)."""
    cached, unreadable = _read_cache(file)
    keys = [_key(p) for p in paths]
    todo = [i for i, k in enumerate(keys) if k is not None and k not in cached and k not in unreadable]
    if todo:
        loader = torch.utils.data.DataLoader(_Pixels([paths[i] for i in todo], preprocess), batch_size=batch_size,
                                             num_workers=workers, pin_memory=device.type == "cuda")
        bar = tqdm(total=len(todo), desc="extracting features", unit="img", disable=not progress, dynamic_ncols=True)
        unsaved = 0
        for index, pixels, readable in loader:
            if readable.any():
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                    rows = compute(pixels[readable].to(device, non_blocking=True)).float().cpu()
                for j, row in zip(index[readable].tolist(), rows):
                    cached[keys[todo[j]]] = row.clone()
            unreadable.update(keys[todo[j]] for j in index[~readable].tolist())
            unsaved += len(index)
            bar.update(len(index))
            if unsaved >= save_every:
                _write_cache(file, cached, unreadable, dim)
                unsaved = 0
        bar.close()
        if unsaved:
            _write_cache(file, cached, unreadable, dim)
    ok = torch.tensor([k is not None and k in cached for k in keys], dtype=torch.bool)
    rows = torch.zeros(len(keys), dim)
    for row, (key, good) in enumerate(zip(keys, ok.tolist())):
        if good:
            rows[row] = cached[key]
    log.info("features: %d images (%d computed, %d from %s)", len(keys), len(todo), len(keys) - len(todo), file)
    return rows, ok


def cached_features(model: SDLModel, paths: Sequence[Path], pretrained: str | None, seed: int, cache_dir: Path,
                    device: torch.device, batch_size: int = 32, progress: bool = True, workers: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (M, C) of the starting backbone for ``paths`` and a mask (M,) of the
    images that could be read."""
    model.eval()
    return cached_rows(cache_file(cache_dir, model, pretrained, seed), paths, lambda px: pooled_features(model, px),
                       model.config.preprocess, int(model.num_features), device, batch_size, workers, progress)

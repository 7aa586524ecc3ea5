"""Pooled backbone features for head-only training, computed once and cached on disk.

A cache file holds the features of one starting backbone (architecture + weights +
preprocessing); inside it, each image is keyed by its resolved path, size and
modification time, so an edited photo is recomputed and a new one is added.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize
from tqdm import tqdm

from sdl_core.errors import ImageError, StorageError
from sdl_core.images import load_image, to_tensor
from sdl_core.model import SDLModel
from sdl_core.storage import write_bytes_atomically

from .backbones import pooled_features, short_hash, weights_identity

log = logging.getLogger(__name__)


def image_key(path: Path) -> str:
    """Identity of an image file's content as far as the file system tells."""
    resolved = path.resolve()
    stat = resolved.stat()
    return hashlib.sha1(f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()


def cache_file(cache_dir: Path, model: SDLModel, pretrained: str | None, seed: int) -> Path:
    backbone = model.config.backbone
    identity = json.dumps({"backbone": backbone, "weights": weights_identity(pretrained, backbone, seed),
                           "preprocess": json.loads(model.config.to_json())["preprocess"]}, sort_keys=True)
    return cache_dir / f"{backbone}-{short_hash(identity)}.safetensors"


def _read_cache(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            keys = json.loads((fh.metadata() or {})["keys"])
            features = fh.get_tensor("features")
    except (SafetensorError, OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        log.warning("ignoring an unreadable feature cache %s (%s)", path.name, exc)
        return {}
    return dict(zip(keys, features))


def _write_cache(path: Path, cached: dict[str, torch.Tensor]) -> None:
    """Whole or not at all; a cache that cannot be written (full or read-only disk) is only a warning."""
    data = serialize({"features": torch.stack(list(cached.values())).contiguous()},
                     metadata={"keys": json.dumps(list(cached))})
    try:
        write_bytes_atomically(path, data, "feature cache")
    except StorageError as exc:
        log.warning("features not cached: %s", exc)


@torch.inference_mode()
def cached_features(model: SDLModel, paths: Sequence[Path], pretrained: str | None, seed: int, cache_dir: Path,
                    device: torch.device, batch_size: int = 32, progress: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (M, C) for ``paths`` and a mask (M,) of the images that could be read."""
    file = cache_file(cache_dir, model, pretrained, seed)
    cached = _read_cache(file)
    keys = [image_key(p) for p in paths]
    todo = [i for i, k in enumerate(keys) if k not in cached]
    if todo:
        model.eval()
        bar = tqdm(total=len(todo), desc="extracting features", unit="img", disable=not progress)
        for start in range(0, len(todo), batch_size):
            chunk, images = [], []
            for i in todo[start:start + batch_size]:
                try:
                    images.append(load_image(paths[i]))
                    chunk.append(i)
                except ImageError as exc:
                    log.warning("skipping unreadable image: %s", exc)
            if images:
                pixels = to_tensor(images, model.config.preprocess).to(device)
                for i, feat in zip(chunk, pooled_features(model, pixels).float().cpu()):
                    cached[keys[i]] = feat.clone()
            bar.update(len(todo[start:start + batch_size]))
        bar.close()
        if any(keys[i] in cached for i in todo):
            _write_cache(file, cached)
    ok = torch.tensor([k in cached for k in keys], dtype=torch.bool)
    dim = int(model.num_features)
    features = torch.stack([cached[k] if k in cached else torch.zeros(dim) for k in keys]) if keys \
        else torch.zeros(0, dim)
    log.info("features: %d images (%d computed, %d from %s)", len(keys), len(todo), len(keys) - len(todo), file)
    return features, ok

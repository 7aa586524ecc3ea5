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
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from sdl_core import cache
from sdl_core.errors import ImageError
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"features": torch.stack(list(cached.values())).contiguous()}, str(tmp),
              metadata={"keys": json.dumps(list(cached))})
    tmp.replace(path)


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
    features = torch.zeros(len(keys), dim)
    for row, key in enumerate(keys):
        if key in cached:
            features[row] = cached[key]
    log.info("features: %d images (%d computed, %d from %s)", len(keys), len(todo), len(keys) - len(todo), file)
    return features, ok

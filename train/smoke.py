"""A short throughput check of full training on synthetic data (what gpu_smoke.sh runs).

Random images and multi-hot targets over random unit tag vectors; the real model,
loss, optimiser, OneCycle schedule and AMP. Reports images/s after warm-up and peak
memory (GPU: allocated by torch; CPU: the process's peak resident size).
"""
from __future__ import annotations

import io
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from sdl_core.config import WordSpaceInfo
from sdl_core.model import SDLModel

from .backbones import make_config, preprocess_for
from .distributed import resolve_device
from .optim import Stepper, use_amp
from .synthetic import draw_image


@dataclass
class SmokeResult:
    """One throughput measurement, as ``gpu_smoke.sh`` writes it to JSON."""

    backbone: str
    device: str
    device_name: str
    amp: bool
    steps: int
    batch_size: int
    image_size: int
    images_per_s: float
    peak_memory_mb: float
    loss_first: float
    loss_last: float
    eval_images_per_s: float = 0.0
    ema: float = 0.0
    loader_images_per_s: float | None = None
    loader_workers: int = 0

    def to_dict(self) -> dict:
        """The JSON line ``python -m train smoke`` prints."""
        return asdict(self)


def run_smoke(backbone: str = "tresnet_m", steps: int = 300, batch_size: int = 32, image_size: int = 224, k: int = 7,
              dim: int = 300, tags: int = 925, device: str = "auto", amp: str = "auto", warmup: int = 10,
              lr: float = 1e-4, seed: int = 0, ema: float = 0.0, lam: float = 0.01, weight_decay: float = 3e-4
              ) -> SmokeResult:
    """Train ``steps`` steps on synthetic batches and measure speed and memory; then the
    inference speed (what validation and evaluation run at) on the same batches."""
    target = resolve_device(device)
    amp_on = use_amp(amp, target)
    generator = torch.Generator().manual_seed(seed)
    tag_vectors = torch.nn.functional.normalize(torch.randn(tags, dim, generator=generator), dim=1)
    pool = [(torch.rand(batch_size, 3, image_size, image_size, generator=generator),
             torch.rand(batch_size, tags, generator=generator) < 5.0 / tags) for _ in range(4)]
    pool = [(x.to(target), y.to(target)) for x, y in pool]
    torch.manual_seed(seed)
    config = make_config(backbone, k, WordSpaceInfo("smoke-random", dim), preprocess_for(backbone, image_size))
    model = SDLModel(config).to(target).train()
    stepper = Stepper(model, model, tag_vectors, lr, weight_decay, steps, lam, amp_on, target, ema=ema)
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    losses: list[float] = []
    warmup = min(warmup, max(steps - 1, 0))
    started = time.perf_counter()
    for step in range(steps):
        if step == warmup:
            _sync(target)
            started = time.perf_counter()
        x, y = pool[step % len(pool)]
        losses.append(float(stepper.step(x, y).loss.detach()))
    _sync(target)
    seconds = time.perf_counter() - started
    timed = steps - warmup
    eval_rate = _inference_rate(model, pool, amp_on, target, max(2, steps // 4))
    if target.type == "cuda":
        peak = torch.cuda.max_memory_allocated(target) / 2**20
        name = torch.cuda.get_device_name(target)
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = rss / 2**20 if sys.platform == "darwin" else rss / 1024
        name = "cpu"
    return SmokeResult(backbone, str(target), name, amp_on, steps, batch_size, image_size,
                       round(timed * batch_size / seconds, 2) if seconds > 0 else 0.0, round(peak, 1),
                       losses[0], losses[-1], eval_rate, ema)


@torch.inference_mode()
def _inference_rate(model: torch.nn.Module, pool: list, amp: bool, device: torch.device, batches: int) -> float:
    """Images/s of the forward pass alone (eval mode, AMP as in training), after one warm-up batch."""
    model.eval()
    started = time.perf_counter()
    for i in range(batches + 1):
        if i == 1:
            _sync(device)
            started = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            model(pool[i % len(pool)][0])
    _sync(device)
    seconds = time.perf_counter() - started
    return round(batches * pool[0][0].shape[0] / seconds, 2) if seconds > 0 else 0.0


class _JpegDecode(torch.utils.data.Dataset):
    """Decode + augment in-memory JPEGs (Flickr-sized): the data-loading side of a training step."""

    def __init__(self, blobs: list[bytes], transform: Callable, length: int) -> None:
        self.blobs, self.transform, self.length = blobs, transform, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(io.BytesIO(self.blobs[i % len(self.blobs)])) as img:
            return self.transform(img.convert("RGB"))


def loader_rate(transform: Callable, workers: int, batch_size: int = 32, images: int = 0, seed: int = 0) -> float:
    """Images/s that ``workers`` DataLoader processes decode and augment (500x375 JPEGs,
    the size of NUS-WIDE's Flickr downloads), after the first batch."""
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(16):
        buffer = io.BytesIO()
        draw_image([tuple(int(c) for c in rng.integers(0, 256, 3))], 375, rng).resize((500, 375)).save(
            buffer, "JPEG", quality=90)
        blobs.append(buffer.getvalue())
    total = images or batch_size * max(1, workers) * 8
    loader = torch.utils.data.DataLoader(_JpegDecode(blobs, transform, total), batch_size=batch_size,
                                         num_workers=workers)
    started, seen = time.perf_counter(), 0
    for i, batch in enumerate(loader):
        if i == 0:
            started = time.perf_counter()
            continue
        seen += batch.shape[0]
    seconds = time.perf_counter() - started
    return round(seen / seconds, 2) if seconds > 0 and seen else 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

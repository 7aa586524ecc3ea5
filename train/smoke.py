"""A short throughput check of full training on synthetic data (what gpu_smoke.sh runs).

Random images and multi-hot targets over random unit tag vectors; the real model,
loss, optimiser, OneCycle schedule and AMP. Reports images/s after warm-up and peak
memory (GPU: allocated by torch; CPU: the process's peak resident size).
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch

from sdl_core.config import WordSpaceInfo
from sdl_core.model import SDLModel

from .backbones import make_config, preprocess_for
from .distributed import resolve_device
from .optim import Stepper, use_amp


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

    def to_dict(self) -> dict:
        """The JSON line ``python -m train smoke`` prints."""
        return asdict(self)


def run_smoke(backbone: str = "tresnet_m", steps: int = 300, batch_size: int = 32, image_size: int = 224, k: int = 7,
              dim: int = 300, tags: int = 925, device: str = "auto", amp: str = "auto", warmup: int = 10,
              lr: float = 1e-4, seed: int = 0) -> SmokeResult:
    """Train ``steps`` steps on synthetic batches and measure speed and memory."""
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
    stepper = Stepper(model, model, tag_vectors, lr, 3e-4, steps, 0.01, amp_on, target)
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
    if target.type == "cuda":
        peak = torch.cuda.max_memory_allocated(target) / 2**20
        name = torch.cuda.get_device_name(target)
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = rss / 2**20 if sys.platform == "darwin" else rss / 1024
        name = "cpu"
    return SmokeResult(backbone, str(target), name, amp_on, steps, batch_size, image_size,
                       round(timed * batch_size / seconds, 2) if seconds > 0 else 0.0, round(peak, 1),
                       losses[0], losses[-1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

"""Processes and devices: one process, or one of torchrun's (DistributedDataParallel).

Under ``torchrun`` (RANK/WORLD_SIZE/LOCAL_RANK in the environment) each process takes
its local GPU and joins an NCCL group (gloo on CPU); with one process every helper
here is a no-op, so the training loop reads the same either way.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import distributed as dist
from torch import nn

from .errors import RunError


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank, how many there are, and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` = the GPU when there is one; under torchrun each process takes its local GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise RunError(f"--device {spec!r}: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError("--device cuda: no CUDA GPU is available here (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device_spec: str) -> Dist:
    """One process, or one of torchrun's (RANK/WORLD_SIZE/LOCAL_RANK in the environment)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, 0, resolve_device(device_spec))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device)


def teardown_distributed(ctx: Dist) -> None:
    """Wait for every rank, then leave the process group (so torchrun exits cleanly)."""
    if ctx.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: Dist) -> None:
    """Hold every rank here until all arrive (for example, until rank 0 has written a file)."""
    if ctx.world > 1:
        dist.barrier()


def all_sum(values: list[float], ctx: Dist) -> list[float]:
    """Element-wise sums over every rank (epoch totals for the log)."""
    if ctx.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def sync_buffers(model: nn.Module, ctx: Dist) -> None:
    """BatchNorm statistics drift per process; take rank 0's so every rank holds one model."""
    if ctx.world > 1:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def train_sampler(dataset: torch.utils.data.Dataset, ctx: Dist, seed: int) -> torch.utils.data.Sampler:
    """This rank's share of a shuffled dataset (DistributedSampler), or a seeded shuffle in one process."""
    if ctx.world > 1:
        return torch.utils.data.DistributedSampler(dataset, num_replicas=ctx.world, rank=ctx.rank, shuffle=True,
                                                   seed=seed)
    return torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))


def start_epoch(sampler: torch.utils.data.Sampler, seed: int, epoch: int,
                loader_seeds: torch.Generator | None = None, rank: int = 0) -> None:
    """Reshuffle for ``epoch`` and seed its augmentation, both fixed by seed, epoch and rank, so a
    run repeats under ``--seed`` and a resumed run replays the same epochs.

    Augmentation draws from Python's ``random`` and numpy (timm's RandAugment) and torch: all three
    are seeded here for loading in this process, and ``loader_seeds`` (the DataLoader's generator)
    gives its worker processes their seeds.
    """
    if isinstance(sampler, torch.utils.data.DistributedSampler):
        sampler.set_epoch(epoch)
    elif isinstance(sampler, torch.utils.data.RandomSampler) and sampler.generator is not None:
        sampler.generator.manual_seed(seed + epoch)
    value = (seed * 1_000_003 + epoch) * 1_009 + rank
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    if loader_seeds is not None:
        loader_seeds.manual_seed(value)


def wrap_ddp(model: nn.Module, ctx: Dist) -> nn.Module:
    """The model to call in training: itself, or wrapped for DDP when there are several ranks."""
    if ctx.world == 1:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

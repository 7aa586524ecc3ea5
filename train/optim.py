"""Optimisation: parameter groups, the OneCycle schedule, EMA weights, and one training step.

The authors' recipe: Adam with weight decay (not on biases or norm parameters) under a
OneCycle learning rate; AMP with a gradient scaler on CUDA; optional gradient clipping
and an exponential moving average of the weights.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator

import torch
from torch import nn

from .loss import LossOutput, sdl_loss

#: Share of the steps spent warming up to the peak learning rate.
WARMUP_FRACTION = 0.1


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only, not on biases or norm parameters."""
    decay, no_decay = [], []
    for _, param in module.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_fraction(total_steps: int) -> float:
    """10% warm-up, except where it would end exactly at step 0 (10 steps in all): torch's
    OneCycleLR then divides by zero, so the warm-up is stretched by half a step."""
    if total_steps * WARMUP_FRACTION == 1:
        return 1.5 / total_steps
    return WARMUP_FRACTION


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycle to a peak of ``lr`` over ``total_steps`` (at least one), warming up for the first 10%."""
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total,
                                               pct_start=warmup_fraction(total))


def use_amp(spec: str, device: torch.device) -> bool:
    """Mixed precision for ``--amp`` auto/on/off: ``auto`` means on a CUDA device."""
    return spec == "on" or (spec == "auto" and device.type == "cuda")


class EMA:
    """Exponential moving average of a model's weights (buffers are copied)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average a step (1 - decay) towards ``model``'s current weights."""
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.detach(), 1.0 - self.decay)
            else:
                ema_v.copy_(v)


@contextlib.contextmanager
def ema_weights(module: nn.Module, ema: EMA | None) -> Iterator[nn.Module]:
    """``module`` holds the EMA weights inside the block, and its live weights again after it."""
    if ema is None:
        yield module
        return
    live = {k: v.clone() for k, v in module.state_dict().items()}
    module.load_state_dict(ema.module.state_dict())
    try:
        yield module
    finally:
        module.load_state_dict(live)


class Stepper:
    """One optimisation step: AMP autocast + GradScaler on CUDA, clipping, OneCycle, EMA."""

    def __init__(self, module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], tag_vectors: torch.Tensor,
                 lr: float, weight_decay: float, total_steps: int, lam: float, amp: bool, device: torch.device,
                 clip_grad: float = 0.0, ema: float = 0.0) -> None:
        self.module, self.forward, self.lam = module, forward, lam
        self.tag_vectors = tag_vectors.to(device)
        self.device, self.amp, self.clip_grad = device, amp, clip_grad
        self.optimizer = torch.optim.Adam(param_groups(module, weight_decay), lr=lr)
        self.scheduler = one_cycle(self.optimizer, lr, total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self.ema = EMA(module, ema) if ema > 0 else None
        self.steps_done = 0

    @property
    def eval_module(self) -> nn.Module:
        """The weights to validate and save: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.module

    @property
    def lr(self) -> float:
        """The learning rate of the step about to be taken (for the log)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Forward, SDL loss (float32), backward, optimiser and schedule step; the loss for the log."""
        inputs, targets = inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            vectors = self.forward(inputs)
        out = sdl_loss(vectors.float(), self.tag_vectors, targets, lam=self.lam)
        self.scaler.scale(out.loss).backward()
        if self.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler.last_epoch + 1 < self.scheduler.total_steps:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.module)
        self.steps_done += 1
        return out

    def state_dict(self) -> dict:
        """Optimiser, schedule, scaler and EMA state, for ``state.pt``."""
        ema = self.ema.module.state_dict() if self.ema else None
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": ema, "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where :meth:`state_dict` left off."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.steps_done = int(state.get("steps_done", 0))

"""Training: full fine-tuning (GPU, AMP, DDP) and head-only training (CPU-friendly).

One loop for both: each epoch trains, validates on the held-out images (ZSL/GZSL
metrics), logs a row to ``log.csv`` / ``log.jsonl``, and writes ``last.safetensors``,
``best.safetensors`` (best GZSL F1@3) and ``state.pt`` (to resume). Checkpoints are
``sdl_core`` files: ``Tagger.from_pretrained(run_dir / "best.safetensors")`` loads them.

Under ``torchrun`` the run uses DistributedDataParallel (NCCL on GPUs, gloo on CPU);
only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from tqdm import tqdm

from sdl_core import cache
from sdl_core.checkpoint import save_checkpoint
from sdl_core.model import SDLModel
from sdl_core.vocab import Vocabulary

from .backbones import PACKAGED, build_sdl_model, head_vectors, make_config, preprocess_for
from .data import DataSpec, EvalTransform, ImageTagDataset, PreparedData, prepare_data, train_transform
from .errors import RunError
from .features import cached_features
from .loss import DEFAULT_LAMBDA, LossOutput, sdl_loss, tag_scores
from .metrics import evaluate_zsl_gzsl, format_table, results_to_dict

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
#: Metrics that can pick the best checkpoint (the authors used GZSL F1@3).
BEST_METRICS = tuple(f"{s}_{m}" for s in ("gzsl", "zsl") for m in ("F1@3", "F1@5", "mAP", "P@3", "R@3", "P@5", "R@5"))


@dataclass
class FitOptions:
    """Everything a run depends on; written resolved to ``config.json``."""

    data: str
    out: str
    vectors: str = "wordllama"
    val_data: str | None = None
    images_root: str | None = None
    split: str | None = None
    val_fraction: float = 0.1
    space_name: str | None = None
    backbone: str = "tf_efficientnet_lite0"
    k: int = 7
    pretrained: str | None = "auto"
    image_size: int | None = None
    resize: str = "squash"
    head_only: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 3e-4
    lam: float = DEFAULT_LAMBDA
    ema: float = 0.0
    clip_grad: float = 0.0
    amp: str = "auto"
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    steps_per_epoch: int | None = None
    crop_scale: float = 0.5
    randaugment: int = 9
    cutout: float = 0.5
    cache_dir: str | None = None
    save_every: int | None = None
    best_metric: str = "gzsl_F1@3"
    resume: bool = False
    progress: bool = True
    name: str = ""

    def resolved(self) -> "FitOptions":
        """Fill the mode-dependent defaults (authors' recipe for full training)."""
        head = self.head_only
        pretrained = self.pretrained
        if pretrained == "auto":
            pretrained = "packaged" if self.backbone in PACKAGED else None
        if pretrained == "none":
            pretrained = None
        return dataclasses.replace(
            self, pretrained=pretrained,
            epochs=self.epochs if self.epochs is not None else (30 if head else 10),
            batch_size=self.batch_size if self.batch_size is not None else (64 if head else 32),
            lr=self.lr if self.lr is not None else (2e-3 if head else 2.5e-5),
            save_every=self.save_every if self.save_every is not None else (10 if head else 1))

    def validate(self) -> None:
        checks = [(self.k >= 1, "--k must be >= 1"), (self.epochs is None or self.epochs >= 1, "--epochs must be >= 1"),
                  (self.batch_size is None or self.batch_size >= 1, "--batch-size must be >= 1"),
                  (self.lr is None or self.lr > 0, "--lr must be > 0"), (0 <= self.lam <= 1, "--lam must be in [0, 1]"),
                  (0 <= self.ema < 1, "--ema must be in [0, 1)"), (self.clip_grad >= 0, "--clip-grad must be >= 0"),
                  (0 <= self.val_fraction < 1, "--val-fraction must be in [0, 1)"),
                  (self.amp in ("auto", "on", "off"), "--amp must be auto, on or off"),
                  (0 < self.crop_scale <= 1, "--crop-scale must be in (0, 1]"),
                  (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "--steps-per-epoch must be >= 1"),
                  (self.save_every is None or self.save_every >= 1, "--save-every must be >= 1"),
                  (self.best_metric in BEST_METRICS, f"--best-metric must be one of {', '.join(BEST_METRICS)}")]
        for ok, message in checks:
            if not ok:
                raise RunError(message)


@dataclass
class FitResult:
    out: Path
    model: SDLModel
    vocab: Vocabulary
    history: list[dict] = field(default_factory=list)
    best: Path | None = None
    last: Path | None = None


# --- devices and processes -------------------------------------------------------------

@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
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


def _all_sum(values: list[float], ctx: Dist) -> list[float]:
    if ctx.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _sync_buffers(model: nn.Module, ctx: Dist) -> None:
    """BatchNorm statistics drift per process; take rank 0's so every rank holds one model."""
    if ctx.world > 1:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


# --- optimisation ----------------------------------------------------------------------

def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only, not on biases or norm parameters."""
    decay, no_decay = [], []
    for _, param in module.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class EMA:
    """Exponential moving average of a model's weights (buffers are copied)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.detach(), 1.0 - self.decay)
            else:
                ema_v.copy_(v)


class Stepper:
    """One optimisation step: AMP autocast + GradScaler on CUDA, clipping, OneCycle, EMA."""

    def __init__(self, module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], tag_vectors: torch.Tensor,
                 lr: float, weight_decay: float, total_steps: int, lam: float, amp: bool, device: torch.device,
                 clip_grad: float = 0.0, ema: float = 0.0) -> None:
        self.module, self.forward, self.lam = module, forward, lam
        self.tag_vectors = tag_vectors.to(device)
        self.device, self.amp, self.clip_grad = device, amp, clip_grad
        self.optimizer = torch.optim.Adam(param_groups(module, weight_decay), lr=lr)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=lr,
                                                             total_steps=max(1, total_steps), pct_start=0.1)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self.ema = EMA(module, ema) if ema > 0 else None
        self.steps_done = 0

    @property
    def eval_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.module

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> LossOutput:
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
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.module.state_dict() if self.ema else None,
                "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.steps_done = int(state.get("steps_done", 0))


# --- scoring -----------------------------------------------------------------------------

@torch.inference_mode()
def score_loader(model: SDLModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], tag_vectors: torch.Tensor,
                 device: torch.device, progress: bool = False, total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (M, N) of every image against every tag, and the targets, from (pixels, targets) batches."""
    model.eval()
    tag_vectors = tag_vectors.to(device)
    scores, targets = [], []
    for pixels, target in tqdm(batches, total=total, desc="scoring", unit="batch", disable=not progress, leave=False):
        vectors = model.encode(pixels.to(device)).vectors
        scores.append(tag_scores(vectors.float(), tag_vectors, model.config.reduction).cpu())
        targets.append(target.bool())
    if not scores:
        return torch.zeros(0, tag_vectors.shape[0]), torch.zeros(0, tag_vectors.shape[0], dtype=torch.bool)
    return torch.cat(scores), torch.cat(targets)


def validation_row(scores: torch.Tensor, targets: torch.Tensor, seen: np.ndarray) -> tuple[dict, dict]:
    """Flattened ``val_<setting>_<metric>`` values for the log, and the full results."""
    results = evaluate_zsl_gzsl(scores, targets, seen)
    row = {f"val_{setting}_{metric}": value for setting, values in results_to_dict(results).items()
           for metric, value in values.items() if metric not in ("images", "labels")}
    return row, results


# --- the run folder ------------------------------------------------------------------------

class RunFolder:
    """Files of one run. Every write is a no-op outside rank 0."""

    def __init__(self, out: Path, ctx: Dist) -> None:
        self.out, self.ctx = out, ctx

    def path(self, name: str) -> Path:
        return self.out / name

    def prepare(self, resume: bool) -> None:
        has_state = self.path(STATE_FILE).is_file()
        if resume and not has_state:
            raise RunError(f"--resume: {self.out} has no {STATE_FILE} to resume from")
        if not resume and (has_state or self.path("last.safetensors").exists()):
            raise RunError(f"{self.out} already holds a run: add --resume to continue it, or pick another --out")
        if self.ctx.main:
            self.out.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, data: dict) -> None:
        if self.ctx.main:
            tmp = self.path(name + ".tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
            tmp.replace(self.path(name))

    def write_log(self, history: list[dict]) -> None:
        if not self.ctx.main:
            return
        columns = list(dict.fromkeys(k for row in history for k in row))
        with self.path("log.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: ("" if row.get(k) is None else row.get(k)) for k in columns} for row in history)
        with self.path("log.jsonl").open("w") as fh:
            for row in history:
                fh.write(json.dumps(row) + "\n")

    def save_model(self, name: str, model: SDLModel, vocab: Vocabulary) -> Path:
        if self.ctx.main:
            save_checkpoint(model, vocab, self.path(name))
        return self.path(name)

    def save_state(self, state: dict) -> None:
        if self.ctx.main:
            tmp = self.path(STATE_FILE + ".tmp")
            torch.save(state, tmp)
            tmp.replace(self.path(STATE_FILE))

    def load_state(self) -> dict:
        try:
            return torch.load(self.path(STATE_FILE), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
            raise RunError(f"{self.path(STATE_FILE)}: cannot resume from it ({exc})") from None


# --- the run ---------------------------------------------------------------------------------

def fit(options: FitOptions) -> FitResult:
    """Train an SDL model as ``options`` say; returns the trained model and where it was written."""
    options.validate()
    opts = options.resolved()
    ctx = setup_distributed(opts.device)
    try:
        return _fit(opts, ctx)
    finally:
        if ctx.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _fit(opts: FitOptions, ctx: Dist) -> FitResult:
    if opts.head_only and ctx.world > 1:
        raise RunError("--head-only runs in one process (it is fast); start it with python, not torchrun")
    folder = RunFolder(Path(opts.out), ctx)
    folder.prepare(opts.resume)
    amp = opts.amp == "on" or (opts.amp == "auto" and ctx.device.type == "cuda")
    if amp and ctx.device.type != "cuda":
        raise RunError("--amp on needs a CUDA device")
    data = prepare_data(DataSpec(opts.data, opts.vectors, opts.val_data, opts.images_root, opts.split,
                                 opts.val_fraction, opts.seed, opts.space_name))
    preprocess = preprocess_for(opts.backbone, opts.image_size, opts.resize)
    config = make_config(opts.backbone, opts.k, data.word_space, preprocess, opts.name,
                         description=f"SDL (K={opts.k}) trained on {Path(opts.data).name}: "
                                     f"{int(data.vocab.seen.sum())} seen, {int((~data.vocab.seen).sum())} unseen tags")
    torch.manual_seed(opts.seed)
    model = build_sdl_model(config, opts.pretrained).to(ctx.device)
    summary = {"options": dataclasses.asdict(opts), "model": json.loads(config.to_json()), "data": data.summary(),
               "world_size": ctx.world, "device": str(ctx.device), "amp": amp}
    if ctx.main:
        log.info("data: %s", data.summary())
    folder.write_json("config.json", summary)
    if ctx.world > 1:
        dist.barrier()  # the run folder exists before anyone goes on
    run = _HeadOnlyRun(opts, ctx, data, model) if opts.head_only else _FullRun(opts, ctx, data, model, amp)
    return run.train(folder, config.to_json())


class _Run:
    """The epoch loop shared by both modes; subclasses say how to step and how to score."""

    def __init__(self, opts: FitOptions, ctx: Dist, data: PreparedData, model: SDLModel) -> None:
        self.opts, self.ctx, self.data, self.model = opts, ctx, data, model
        self.seen_vectors = torch.from_numpy(data.vocab.vectors[data.seen_index])
        self.all_vectors = torch.from_numpy(data.vocab.vectors)
        self.stepper: Stepper

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def epoch_batches(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def validation_scores(self, model: SDLModel) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def trained_state(self) -> dict:
        return self.model.state_dict()

    def load_trained_state(self, state: dict) -> None:
        self.model.load_state_dict(state)

    @contextlib.contextmanager
    def exported(self) -> Iterator[SDLModel]:
        """The network to validate and save: the EMA copy when EMA is on."""
        yield self.stepper.eval_module  # type: ignore[misc]

    def train(self, folder: RunFolder, config_json: str) -> FitResult:
        opts, ctx = self.opts, self.ctx
        history: list[dict] = []
        best_value, start = -math.inf, 0
        if opts.resume:
            state = folder.load_state()
            if state.get("config") != config_json or state.get("tags") != self.data.vocab.tags:
                raise RunError(f"--resume: {opts.out} was trained with another model config or vocabulary")
            self.load_trained_state(state["model"])
            self.stepper.load_state_dict(state["stepper"])
            history, best_value, start = list(state["history"]), float(state["best_value"]), int(state["epoch"])
            if ctx.main:
                log.info("resuming after epoch %d of %d", start, opts.epochs)
        result = FitResult(Path(opts.out), self.model, self.data.vocab, history)
        for epoch in range(start, int(opts.epochs)):
            row = self._train_epoch(epoch)
            _sync_buffers(self.model, ctx)
            with self.exported() as eval_model:
                if ctx.main and self.data.val is not None:
                    scores, targets = self.validation_scores(eval_model)
                    val_row, results = validation_row(scores, targets, self.data.vocab.seen)
                    row.update(val_row)
                    log.info("epoch %d validation:\n%s", epoch + 1, format_table(results))
                history.append(row)
                folder.write_log(history)
                value = row.get(f"val_{opts.best_metric}")
                if value is not None and value > best_value:
                    best_value = value
                    result.best = folder.save_model("best.safetensors", eval_model, self.data.vocab)
                checkpoint_now = epoch + 1 == opts.epochs or (epoch + 1) % int(opts.save_every) == 0
                if checkpoint_now:
                    result.last = folder.save_model("last.safetensors", eval_model, self.data.vocab)
            if checkpoint_now:
                folder.save_state({"epoch": epoch + 1, "model": self.trained_state(),
                                   "stepper": self.stepper.state_dict(), "history": history,
                                   "best_value": best_value, "config": config_json, "tags": self.data.vocab.tags})
            if ctx.world > 1:
                dist.barrier()
        if result.best is None and (folder.out / "best.safetensors").is_file():
            result.best = folder.out / "best.safetensors"
        if result.last is None and (folder.out / "last.safetensors").is_file():
            result.last = folder.out / "last.safetensors"
        with self.exported() as final:
            result.model = copy.deepcopy(final).eval()
        return result

    def _train_epoch(self, epoch: int) -> dict:
        opts, ctx = self.opts, self.ctx
        total = self.steps_per_epoch()
        loss_sum, used, skipped, images = 0.0, 0, 0, 0
        started = time.perf_counter()
        bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{opts.epochs}", unit="step",
                   disable=not (opts.progress and ctx.main), dynamic_ncols=True)
        for step, (inputs, targets) in enumerate(self.epoch_batches(epoch)):
            if step >= total:
                break
            out = self.stepper.step(inputs, targets)
            loss_sum += float(out.loss.detach()) * out.used
            used, skipped, images = used + out.used, skipped + out.skipped, images + inputs.shape[0]
            rate = images * ctx.world / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / max(used, 1):.4f}", img_s=f"{rate:.1f}", refresh=False)
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - started
        loss_sum, used, skipped, images = _all_sum([loss_sum, used, skipped, images], ctx)
        return {"epoch": epoch + 1, "step": self.stepper.steps_done, "lr": self.stepper.lr,
                "train_loss": loss_sum / used if used else None, "train_images": int(images),
                "skipped_images": int(skipped), "seconds": round(seconds, 3),
                "images_per_s": round(images / seconds, 2) if seconds > 0 else None}


class _FullRun(_Run):
    """Fine-tune backbone and head on augmented images (DDP under torchrun)."""

    def __init__(self, opts: FitOptions, ctx: Dist, data: PreparedData, model: SDLModel, amp: bool) -> None:
        super().__init__(opts, ctx, data, model)
        size = model.config.preprocess.size
        transform = train_transform(model.config.preprocess, opts.crop_scale, opts.randaugment, opts.cutout)
        self.train_set = ImageTagDataset(data.train, transform, size, columns=data.seen_index)
        if ctx.world > 1:
            self.sampler: torch.utils.data.Sampler = torch.utils.data.DistributedSampler(
                self.train_set, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=opts.seed)
        else:
            self.sampler = torch.utils.data.RandomSampler(self.train_set,
                                                          generator=torch.Generator().manual_seed(opts.seed))
        self.loader = torch.utils.data.DataLoader(self.train_set, batch_size=opts.batch_size, sampler=self.sampler,
                                                  num_workers=opts.workers, pin_memory=ctx.device.type == "cuda",
                                                  drop_last=False, persistent_workers=False)
        self.wrapped: nn.Module = model
        if ctx.world > 1:
            self.wrapped = nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.stepper = Stepper(model, self._forward, self.seen_vectors, opts.lr, opts.weight_decay,
                               opts.epochs * self.steps_per_epoch(), opts.lam, amp, ctx.device,
                               opts.clip_grad, opts.ema)

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        self.wrapped.train()
        return self.wrapped(pixels)

    def steps_per_epoch(self) -> int:
        n = len(self.loader)
        return min(n, self.opts.steps_per_epoch) if self.opts.steps_per_epoch else n

    def epoch_batches(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.sampler, torch.utils.data.DistributedSampler):
            self.sampler.set_epoch(epoch)
        elif isinstance(self.sampler, torch.utils.data.RandomSampler):
            self.sampler.generator.manual_seed(self.opts.seed + epoch)  # resumable order
        return self.loader

    def validation_scores(self, model: SDLModel) -> tuple[torch.Tensor, torch.Tensor]:
        val = self.data.val
        assert val is not None
        dataset = ImageTagDataset(val, EvalTransform(model.config.preprocess), model.config.preprocess.size)
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.opts.batch_size, num_workers=self.opts.workers)
        return score_loader(model, loader, self.all_vectors, self.ctx.device, self.opts.progress, len(loader))


class _HeadOnlyRun(_Run):
    """Frozen backbone: pooled features are computed once (and cached), then only the head trains."""

    def __init__(self, opts: FitOptions, ctx: Dist, data: PreparedData, model: SDLModel) -> None:
        super().__init__(opts, ctx, data, model)
        model.backbone.requires_grad_(False)
        model.eval()
        cache = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()
        extract = dict(model=model, pretrained=opts.pretrained, seed=opts.seed, cache_dir=cache, device=ctx.device,
                       batch_size=max(8, min(64, int(opts.batch_size))), progress=opts.progress)
        feats, ok = cached_features(paths=data.train.paths, **extract)
        self.features = feats[ok]
        self.targets = torch.from_numpy(data.train.targets[:, data.seen_index])[ok]
        self.val_features = self.val_targets = None
        if data.val is not None:
            vf, vok = cached_features(paths=data.val.paths, **extract)
            self.val_features, self.val_targets = vf[vok], torch.from_numpy(data.val.targets)[vok]
        self.generator = torch.Generator().manual_seed(opts.seed)
        self.stepper = Stepper(model.head, self._forward, self.seen_vectors, opts.lr, opts.weight_decay,
                               opts.epochs * self.steps_per_epoch(), opts.lam, False, ctx.device,
                               opts.clip_grad, opts.ema)

    def _forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return head_vectors(self.model, pooled)

    def steps_per_epoch(self) -> int:
        n = math.ceil(len(self.features) / int(self.opts.batch_size))
        return min(n, self.opts.steps_per_epoch) if self.opts.steps_per_epoch else n

    def epoch_batches(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        self.generator.manual_seed(self.opts.seed + epoch)
        order = torch.randperm(len(self.features), generator=self.generator)
        for start in range(0, len(order), int(self.opts.batch_size)):
            idx = order[start:start + int(self.opts.batch_size)]
            yield self.features[idx], self.targets[idx]

    @torch.inference_mode()
    def validation_scores(self, model: SDLModel) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.val_features is not None and self.val_targets is not None
        vectors = head_vectors(model, self.val_features.to(self.ctx.device))
        return tag_scores(vectors.float(), self.all_vectors.to(self.ctx.device)).cpu(), self.val_targets.bool()

    def trained_state(self) -> dict:
        return self.model.head.state_dict()

    def load_trained_state(self, state: dict) -> None:
        self.model.head.load_state_dict(state)

    @contextlib.contextmanager
    def exported(self) -> Iterator[SDLModel]:
        """The network with the EMA head swapped in (and the live head restored after)."""
        if self.stepper.ema is None:
            yield self.model
            return
        live = {k: v.clone() for k, v in self.model.head.state_dict().items()}
        self.model.head.load_state_dict(self.stepper.ema.module.state_dict())
        try:
            yield self.model
        finally:
            self.model.head.load_state_dict(live)


def default_cache_dir() -> Path:
    """Where pooled features are cached: ``features/`` under the project's cache root
    (``SDL_TAGGER_CACHE``, else the user cache folder); the older ``SDL_CACHE_DIR`` still wins."""
    legacy = os.environ.get("SDL_CACHE_DIR")
    return Path(legacy) if legacy else cache.cache_dir(cache.FEATURES)

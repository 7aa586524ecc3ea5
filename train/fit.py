"""Training: full fine-tuning (GPU, AMP, DDP) and head-only training (CPU-friendly).

One loop for both: each epoch trains, validates on the held-out images (ZSL/GZSL
metrics), logs a row to ``log.csv`` / ``log.jsonl``, and writes ``last.safetensors``,
``best.safetensors`` (best GZSL F1@3) and ``state.pt`` (to resume). Checkpoints are
``sdl_core`` files: ``Tagger.from_pretrained(run_dir / "best.safetensors")`` loads them.

Under ``torchrun`` the run uses DistributedDataParallel (NCCL on GPUs, gloo on CPU);
only rank 0 writes files. The pieces: :mod:`train.distributed` (processes),
:mod:`train.optim` (the step), :mod:`train.run_folder` (the files), :mod:`train.data`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import torch
from torch import nn
from tqdm import tqdm

from sdl_core.model import SDLModel
from sdl_core.scoring import score_tags
from sdl_core.vocab import Vocabulary

from .backbones import PACKAGED, build_sdl_model, head_vectors, make_config, preprocess_for
from .data import DataSpec, PreparedData, prepare_data
from .datasets import EvalTransform, ImageTagDataset, train_transform
from .distributed import (Dist, all_sum, barrier, setup_distributed, start_epoch, sync_buffers, teardown_distributed,
                          train_sampler, wrap_ddp)
from .errors import RunError
from .evaluate import score_loader, validation_row
from .features import cached_features, default_cache_dir
from .loss import DEFAULT_LAMBDA
from .metrics import format_table
from .optim import Stepper, ema_weights, use_amp
from .run_folder import BEST_FILE, LAST_FILE, RunFolder

log = logging.getLogger(__name__)

#: Metrics that can pick the best checkpoint (the authors used GZSL F1@3).
BEST_METRICS = tuple(f"{setting}_{metric}" for setting in ("gzsl", "zsl")
                     for metric in ("F1@3", "F1@5", "mAP", "P@3", "R@3", "P@5", "R@5"))

T = TypeVar("T")


def _mode_default(value: T | None, head_only: bool, head: T, full: T) -> T:
    """``value`` when it was given, else the default of the training mode."""
    if value is not None:
        return value
    return head if head_only else full


@dataclass
class FitOptions:
    """Everything a run depends on; written resolved to ``config.json``."""

    data: str
    out: str
    vectors: str = "wordllama"
    val_fraction: float = 0.1
    val_data: str | None = None
    images_root: str | None = None
    split: str | None = None
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
    flip: bool = True
    cutout_box: float = 0.0
    recipe: str | None = None
    cache_dir: str | None = None
    save_every: int | None = None
    best_metric: str = "gzsl_F1@3"
    resume: bool = False
    progress: bool = True
    name: str = ""

    def resolved(self) -> "FitOptions":
        """Fill the mode-dependent defaults (authors' recipe for full training)."""
        head = self.head_only
        pretrained = None if self.pretrained == "none" else self.pretrained
        if pretrained == "auto":
            pretrained = "packaged" if self.backbone in PACKAGED else None
        return dataclasses.replace(
            self, pretrained=pretrained, epochs=_mode_default(self.epochs, head, 30, 10),
            batch_size=_mode_default(self.batch_size, head, 64, 32), lr=_mode_default(self.lr, head, 2e-3, 2.5e-5),
            save_every=_mode_default(self.save_every, head, 10, 1))

    def validate(self) -> None:
        """Refuse impossible options with the flag to fix."""
        checks = [(self.k >= 1, "--k must be >= 1"),
                  (self.epochs is None or self.epochs >= 1, "--epochs must be >= 1"),
                  (self.batch_size is None or self.batch_size >= 1, "--batch-size must be >= 1"),
                  (self.lr is None or self.lr > 0, "--lr must be > 0"),
                  (0 <= self.lam <= 1, "--lam must be in [0, 1]"),
                  (0 <= self.ema < 1, "--ema must be in [0, 1)"),
                  (self.clip_grad >= 0, "--clip-grad must be >= 0"),
                  (0 <= self.val_fraction < 1, "--val-fraction must be in [0, 1)"),
                  (self.amp in ("auto", "on", "off"), "--amp must be auto, on or off"),
                  (0 < self.crop_scale <= 1, "--crop-scale must be in (0, 1]"),
                  (0 <= self.cutout_box <= 1, "--cutout-box must be in [0, 1]"),
                  (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "--steps-per-epoch must be >= 1"),
                  (self.save_every is None or self.save_every >= 1, "--save-every must be >= 1"),
                  (self.best_metric in BEST_METRICS, f"--best-metric must be one of {', '.join(BEST_METRICS)}")]
        for ok, message in checks:
            if not ok:
                raise RunError(message)


@dataclass
class FitResult:
    """The trained model (EMA weights when EMA is on), its run folder and its epoch log."""

    out: Path
    model: SDLModel
    vocab: Vocabulary
    history: list[dict] = field(default_factory=list)
    best: Path | None = None
    last: Path | None = None


# --- the run ---------------------------------------------------------------------------------

def fit(options: FitOptions) -> FitResult:
    """Train an SDL model as ``options`` say; returns the trained model and where it was written."""
    options.validate()
    opts = options.resolved()
    ctx = setup_distributed(opts.device)
    try:
        return _fit(opts, ctx)
    finally:
        teardown_distributed(ctx)


def _fit(opts: FitOptions, ctx: Dist) -> FitResult:
    """Check the options against the machine, prepare data, model and folder, then run the mode."""
    if opts.head_only and ctx.world > 1:
        raise RunError("--head-only runs in one process (it is fast); start it with python, not torchrun")
    folder = RunFolder(Path(opts.out), ctx)
    folder.prepare(opts.resume)
    amp = use_amp(opts.amp, ctx.device)
    if amp and ctx.device.type != "cuda":
        raise RunError("--amp on needs a CUDA device")
    data = prepare_data(DataSpec(opts.data, opts.vectors, opts.val_data, opts.images_root, opts.split,
                                 opts.val_fraction, opts.seed, opts.space_name))
    preprocess = preprocess_for(opts.backbone, opts.image_size, opts.resize)
    tags = f"{int(data.vocab.seen.sum())} seen, {int((~data.vocab.seen).sum())} unseen tags"
    config = make_config(opts.backbone, opts.k, data.word_space, preprocess, opts.name,
                         description=f"SDL (K={opts.k}) trained on {Path(opts.data).name}: {tags}")
    torch.manual_seed(opts.seed)
    model = build_sdl_model(config, opts.pretrained).to(ctx.device)
    summary = {"options": dataclasses.asdict(opts), "model": json.loads(config.to_json()), "data": data.summary(),
               "world_size": ctx.world, "device": str(ctx.device), "amp": amp}
    if ctx.main:
        log.info("data: %s", data.summary())
    folder.write_json("config.json", summary)
    barrier(ctx)  # the run folder exists before anyone goes on
    run = _HeadOnlyRun(opts, ctx, data, model) if opts.head_only else _FullRun(opts, ctx, data, model, amp)
    return run.train(folder, config.to_json())


class _Run:
    """The epoch loop shared by both modes; subclasses say how to step and how to score."""

    def __init__(self, opts: FitOptions, ctx: Dist, data: PreparedData, model: SDLModel) -> None:
        self.opts, self.ctx, self.data, self.model = opts, ctx, data, model
        self.seen_vectors = torch.from_numpy(data.vocab.vectors[data.seen_index])
        self.all_vectors = torch.from_numpy(data.vocab.vectors)
        self.stepper: Stepper

    def make_stepper(self, module: nn.Module, amp: bool) -> Stepper:
        """The optimiser for ``module`` over the whole run (OneCycle spans every epoch)."""
        opts = self.opts
        return Stepper(module, self.forward, self.seen_vectors, opts.lr, opts.weight_decay,
                       int(opts.epochs) * self.steps_per_epoch(), opts.lam, amp, self.ctx.device,
                       opts.clip_grad, opts.ema)

    def steps_per_epoch(self) -> int:
        """Batches in an epoch, capped by ``--steps-per-epoch``."""
        n = self.batches_per_epoch()
        return min(n, self.opts.steps_per_epoch) if self.opts.steps_per_epoch else n

    def batches_per_epoch(self) -> int:
        """Batches in one pass over the training images."""
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Principal vectors (B, K, D) of a training batch."""
        raise NotImplementedError

    def epoch_batches(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, targets over the seen tags) batches, in an order fixed by the seed and epoch."""
        raise NotImplementedError

    def validation_scores(self, model: SDLModel) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (M, N) of the validation images against every tag, and their targets."""
        raise NotImplementedError

    def trained_state(self) -> dict:
        """The weights that train (what ``state.pt`` keeps to resume)."""
        return self.model.state_dict()

    def load_trained_state(self, state: dict) -> None:
        self.model.load_state_dict(state)

    @contextlib.contextmanager
    def exported(self) -> Iterator[SDLModel]:
        """The network to validate and save: the EMA copy when EMA is on."""
        yield self.stepper.eval_module  # type: ignore[misc]

    def train(self, folder: RunFolder, config_json: str) -> FitResult:
        """Every epoch from the first (or the one after ``state.pt``'s) to ``--epochs``."""
        opts, ctx = self.opts, self.ctx
        history: list[dict] = []
        best_value, start = -math.inf, 0
        if opts.resume:
            history, best_value, start = self._resume(folder, config_json)
        result = FitResult(Path(opts.out), self.model, self.data.vocab, history)
        for epoch in range(start, int(opts.epochs)):
            row = self._train_epoch(epoch)
            sync_buffers(self.model, ctx)
            with self.exported() as eval_model:
                if ctx.main and self.data.val is not None:
                    row.update(self._validate(eval_model, epoch))
                history.append(row)
                folder.write_log(history)
                value = row.get(f"val_{opts.best_metric}")
                if value is not None and value > best_value:
                    best_value = value
                    result.best = folder.save_model(BEST_FILE, eval_model, self.data.vocab)
                checkpoint_now = epoch + 1 == opts.epochs or (epoch + 1) % int(opts.save_every) == 0
                if checkpoint_now:
                    result.last = folder.save_model(LAST_FILE, eval_model, self.data.vocab)
            if checkpoint_now:
                folder.save_state({"epoch": epoch + 1, "model": self.trained_state(),
                                   "stepper": self.stepper.state_dict(), "history": history,
                                   "best_value": best_value, "config": config_json, "tags": self.data.vocab.tags})
            barrier(ctx)
        result.best = result.best or folder.existing(BEST_FILE)
        result.last = result.last or folder.existing(LAST_FILE)
        with self.exported() as final:
            result.model = copy.deepcopy(final).eval()
        return result

    def _resume(self, folder: RunFolder, config_json: str) -> tuple[list[dict], float, int]:
        """Weights and optimiser from ``state.pt``; the history, best value and epochs done."""
        state = folder.resume_state(config_json, self.data.vocab.tags)
        self.load_trained_state(state["model"])
        self.stepper.load_state_dict(state["stepper"])
        start = int(state["epoch"])
        if self.ctx.main:
            log.info("resuming after epoch %d of %d", start, self.opts.epochs)
        return list(state["history"]), float(state["best_value"]), start

    def _validate(self, model: SDLModel, epoch: int) -> dict:
        """The epoch's ``val_*`` log values; the full table goes to the log."""
        scores, targets = self.validation_scores(model)
        row, results = validation_row(scores, targets, self.data.vocab.seen)
        log.info("epoch %d validation:\n%s", epoch + 1, format_table(results))
        return row

    def _train_epoch(self, epoch: int) -> dict:
        """Train one epoch; its log row (loss, images, speed) summed over every rank."""
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
        loss_sum, used, skipped, images = all_sum([loss_sum, used, skipped, images], ctx)
        return {"epoch": epoch + 1, "step": self.stepper.steps_done, "lr": self.stepper.lr,
                "train_loss": loss_sum / used if used else None, "train_images": int(images),
                "skipped_images": int(skipped), "seconds": round(seconds, 3),
                "images_per_s": round(images / seconds, 2) if seconds > 0 else None}


class _FullRun(_Run):
    """Fine-tune backbone and head on augmented images (DDP under torchrun)."""

    def __init__(self, opts: FitOptions, ctx: Dist, data: PreparedData, model: SDLModel, amp: bool) -> None:
        super().__init__(opts, ctx, data, model)
        transform = train_transform(model.config.preprocess, opts.crop_scale, opts.randaugment, opts.cutout,
                                    opts.flip, opts.cutout_box)
        self.train_set = ImageTagDataset(data.train, transform, model.config.preprocess.size, columns=data.seen_index)
        self.sampler = train_sampler(self.train_set, ctx, opts.seed)
        self.loader = torch.utils.data.DataLoader(self.train_set, batch_size=opts.batch_size, sampler=self.sampler,
                                                  num_workers=opts.workers, pin_memory=ctx.device.type == "cuda",
                                                  persistent_workers=False, generator=torch.Generator())
        self.wrapped = wrap_ddp(model, ctx)
        self.stepper = self.make_stepper(model, amp)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.wrapped.train()
        return self.wrapped(inputs)

    def batches_per_epoch(self) -> int:
        return len(self.loader)

    def epoch_batches(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        start_epoch(self.sampler, self.opts.seed, epoch, self.loader.generator, self.ctx.rank)
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
                       batch_size=max(8, min(64, int(opts.batch_size))), progress=opts.progress, workers=opts.workers)
        feats, ok = cached_features(paths=data.train.paths, **extract)
        self.features = feats[ok]
        self.targets = torch.from_numpy(data.train.targets[:, data.seen_index])[ok]
        self.val_features = self.val_targets = None
        if data.val is not None:
            vf, vok = cached_features(paths=data.val.paths, **extract)
            self.val_features, self.val_targets = vf[vok], torch.from_numpy(data.val.targets)[vok]
        self.generator = torch.Generator().manual_seed(opts.seed)
        self.stepper = self.make_stepper(model.head, False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return head_vectors(self.model, inputs)  # inputs: pooled backbone features

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.features) / int(self.opts.batch_size))

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
        scores, _ = score_tags(vectors.float(), self.all_vectors.to(self.ctx.device))
        return scores.cpu(), self.val_targets.bool()

    def trained_state(self) -> dict:
        return self.model.head.state_dict()

    def load_trained_state(self, state: dict) -> None:
        self.model.head.load_state_dict(state)

    @contextlib.contextmanager
    def exported(self) -> Iterator[SDLModel]:
        """The network with the EMA head swapped in (and the live head restored after)."""
        with ema_weights(self.model.head, self.stepper.ema):
            yield self.model

"""Evaluating a checkpoint: ZSL and GZSL mAP and P/R/F1@3,5 on a labelled dataset.

The checkpoint's vocabulary (with its seen/unseen flags) is ranked on every image,
with the model's own preprocessing; the dataset's labels are matched by tag name.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from sdl_core.checkpoint import load_checkpoint
from sdl_core.model import SDLModel
from sdl_core.scoring import score_tags

from .annotations import read_annotations, zs_split_files
from .datasets import EvalTransform, ImageTagDataset
from .distributed import resolve_device
from .errors import DataError
from .metrics import SettingResult, evaluate_zsl_gzsl, format_table, results_to_dict
from .splits import read_split

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """ZSL/GZSL results of a checkpoint, the random baseline if asked, and the tags it could not rank."""

    results: dict[str, SettingResult]
    random: dict[str, SettingResult] | None
    images: int
    ignored_tags: list[str]

    def to_dict(self) -> dict:
        """The JSON results file's content."""
        out = {"results": results_to_dict(self.results), "images": self.images, "ignored_tags": self.ignored_tags}
        if self.random is not None:
            out["random_baseline"] = results_to_dict(self.random)
        return out


@torch.inference_mode()
def score_loader(model: SDLModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], tag_vectors: torch.Tensor,
                 device: torch.device, progress: bool = False, total: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (M, N) of every image against every tag, and the targets, from (pixels, targets) batches."""
    model.eval()
    tag_vectors = tag_vectors.to(device)
    scores, targets = [], []
    for pixels, target in tqdm(batches, total=total, desc="scoring", unit="batch", disable=not progress, leave=False):
        vectors = model.encode(pixels.to(device)).vectors
        scores.append(score_tags(vectors.float(), tag_vectors, model.config.reduction)[0].cpu())
        targets.append(target.bool())
    if not scores:
        return torch.zeros(0, tag_vectors.shape[0]), torch.zeros(0, tag_vectors.shape[0], dtype=torch.bool)
    return torch.cat(scores), torch.cat(targets)


def validation_row(scores: torch.Tensor, targets: torch.Tensor, seen: np.ndarray) -> tuple[dict, dict]:
    """Flattened ``val_<setting>_<metric>`` values for the training log, and the full results."""
    results = evaluate_zsl_gzsl(scores, targets, seen)
    row = {f"val_{setting}_{metric}": value for setting, values in results_to_dict(results).items()
           for metric, value in values.items() if metric not in ("images", "labels")}
    return row, results


def random_baseline(targets: torch.Tensor, seen: np.ndarray, draws: int = 10, seed: int = 0
                    ) -> dict[str, SettingResult]:
    """The same metrics for uniformly random scores, averaged over ``draws`` seeded draws."""
    generator = torch.Generator().manual_seed(seed)
    runs = [evaluate_zsl_gzsl(torch.rand(targets.shape, generator=generator, dtype=torch.float64), targets, seen)
            for _ in range(draws)]
    out = {}
    for name in runs[0]:
        first = runs[0][name]
        maps = [r[name].map for r in runs]
        mean_map = float(np.nanmean(maps)) if np.isfinite(maps).any() else float("nan")
        at_k = {}
        for k, top in first.at_k.items():
            vals = [(r[name].at_k[k].precision, r[name].at_k[k].recall, r[name].at_k[k].f1) for r in runs]
            p, rc, f = (float(np.mean(v)) for v in zip(*vals))
            at_k[k] = type(top)(p, rc, f)
        out[name] = SettingResult(mean_map, at_k, first.images, first.labels)
    return out


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, images_root: str | Path | None = None,
                        split: str | None = None, batch_size: int = 32, device: str = "cpu", workers: int = 0,
                        with_random: bool = False, progress: bool = False) -> Evaluation:
    """Score every image of ``data`` with the checkpoint and compute the protocol's metrics."""
    model, vocab = load_checkpoint(checkpoint)
    data_path = Path(data)
    if data_path.is_dir() and zs_split_files(data_path) is not None:
        _, val_json = zs_split_files(data_path)  # type: ignore[misc]
        if val_json is None:
            raise DataError(f"{data_path}: a zs_split folder without a val_*_*.json to evaluate on")
        data_path = val_json
    if not data_path.exists():
        raise DataError(f"{data_path}: no such file or folder")
    annotations = read_annotations(data_path, images_root)
    labelled = annotations.targets.any(axis=0)
    ignored = [t for t, used in zip(annotations.tags, labelled) if used and t not in vocab]
    if ignored:
        log.warning("%d labelled tags are not in the checkpoint's vocabulary and are ignored: %s", len(ignored),
                    ignored[:10])
    annotations = annotations.with_tags(vocab.tags).existing()
    if len(annotations) == 0:
        raise DataError(f"{data}: no images to evaluate")
    seen = vocab.seen
    if split:
        chosen = read_split(split, vocab.tags)
        unseen = set(chosen.unseen)
        seen = np.array([t not in unseen for t in vocab.tags])
    target_device = resolve_device(device)
    model = model.to(target_device)
    dataset = ImageTagDataset(annotations, EvalTransform(model.config.preprocess), model.config.preprocess.size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    scores, targets = score_loader(model, loader, torch.from_numpy(vocab.vectors), target_device, progress,
                                   len(loader))
    results = evaluate_zsl_gzsl(scores, targets, seen)
    rand = random_baseline(targets, seen) if with_random else None
    return Evaluation(results, rand, len(annotations), ignored)


def report(evaluation: Evaluation) -> str:
    """The table printed by ``python -m train evaluate``."""
    text = format_table(evaluation.results)
    if evaluation.random is not None:
        text += "\nrandom scores (mean of 10 draws):\n" + format_table(evaluation.random)
    return text


def write_json(evaluation: Evaluation, path: str | Path, extra: dict | None = None) -> Path:
    """The results (after ``extra``, e.g. which checkpoint and data) as a JSON file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**(extra or {}), **evaluation.to_dict()}, indent=2) + "\n")
    return path

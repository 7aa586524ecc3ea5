"""Images to tensors for training and evaluation: the transforms and the dataset."""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from PIL import Image

from sdl_core.config import PreprocessConfig
from sdl_core.errors import ImageError
from sdl_core.images import load_image, to_tensor

from .annotations import TaggedImages

log = logging.getLogger(__name__)


class EvalTransform:
    """The model's own preprocessing (exactly what the Tagger does at inference)."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_tensor([img], self.cfg)[0]


def train_transform(cfg: PreprocessConfig, crop_scale: float = 0.5, randaugment: int = 9,
                    cutout: float = 0.0, flip: bool = True, cutout_box: float = 0.0
                    ) -> Callable[[Image.Image], torch.Tensor]:
    """Random resized crop (``crop_scale`` = 1 means a plain resize), flip, the authors'
    Cutout (a random-colour box of ``cutout_box`` x the side; 0 = off), RandAugment
    (magnitude ``randaugment``; 0 = off) and random erasing with probability ``cutout``."""
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms

    interpolation = transforms.InterpolationMode(cfg.interpolation)
    steps: list = []
    if crop_scale < 1:
        steps.append(transforms.RandomResizedCrop(cfg.size, scale=(crop_scale, 1.0), interpolation=interpolation))
    else:
        steps.append(transforms.Resize((cfg.size, cfg.size), interpolation=interpolation))
    if flip:
        steps.append(transforms.RandomHorizontalFlip())
    if cutout_box > 0:
        from .augment import CutoutBox
        steps.append(CutoutBox(cutout_box))
    if randaugment > 0:
        hparams = {"img_mean": (124, 116, 104), "interpolation": getattr(Image.Resampling, cfg.interpolation.upper())}
        steps.append(rand_augment_transform(f"rand-m{randaugment}-n2-mstd0.5", hparams))
    steps += [transforms.ToTensor(), transforms.Normalize(cfg.mean, cfg.std)]
    if cutout > 0:
        steps.append(RandomErasing(probability=cutout, mode="const", device="cpu"))
    return transforms.Compose(steps)


class ImageTagDataset(torch.utils.data.Dataset):
    """(pixels, targets) pairs. An image that fails to load gives blank pixels and no
    positives, so the loss leaves it out and counts it, instead of stopping a long run."""

    def __init__(self, data: TaggedImages, transform: Callable[[Image.Image], torch.Tensor], size: int,
                 columns: np.ndarray | None = None) -> None:
        self.paths = data.paths
        self.targets = torch.from_numpy(data.targets if columns is None else data.targets[:, columns])
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return self.transform(load_image(self.paths[i])), self.targets[i]
        except ImageError as exc:
            log.warning("skipping unreadable image: %s", exc)
            return torch.zeros(3, self.size, self.size), torch.zeros_like(self.targets[i])

"""The authors' Cutout: one box of random colour over part of the image, before RandAugment.

Unlike random erasing (a box of random size and aspect, filled after normalisation),
the authors' Cutout paints a box of a fixed share of the image's width and height,
centred anywhere (clipped at the borders), in one random colour, on every image.
Randomness comes from torch, which DataLoader seeds per worker.
"""
from __future__ import annotations

import torch
from PIL import Image, ImageDraw


class CutoutBox:
    """Paint a ``fraction`` x width by ``fraction`` x height box of one random colour."""

    def __init__(self, fraction: float = 0.5) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"the Cutout box is a share of the side in (0, 1], got {fraction}")
        self.fraction = fraction

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        half_w, half_h = int(self.fraction * width + 0.5) // 2, int(self.fraction * height + 0.5) // 2
        cx, cy = (int(torch.randint(0, side, ()).item()) for side in (width, height))
        box = [max(cx - half_w, 0), max(cy - half_h, 0), min(cx + half_w, width), min(cy + half_h, height)]
        colour = tuple(int(c) for c in torch.randint(0, 256, (3,)).tolist())
        out = img.copy()
        ImageDraw.Draw(out).rectangle(box, fill=colour)
        return out

    def __repr__(self) -> str:
        return f"CutoutBox(fraction={self.fraction})"

"""Colour evidence: the tags a photo's pixels prove (blue, green, monochrome, dark).

People tag photos with colours ("blue" on a sky, "green" on grass, "monochrome" on a
black-and-white shot) far more often than an ImageNet classifier can tell, and a word
space only knows a colour word by the company it keeps. So the default model measures
colour directly and carries it in the principal vectors, keeping the one contract
``score = reduce_k <A_k, w_t>``:

* the word space gets one extra dimension per colour channel (:class:`sdl_core.evidence.EvidenceSpace`):
  a colour word's vector is that channel's axis, every other tag's vector is its base
  word vector with zeros there (its score is exactly what it was without colour);
* each principal vector gets the image's colour evidence in those dimensions, so a
  colour word scores its evidence, search ranks photos by it, and the per-cell evidence
  gives the colour word a real heat map.

Evidence is a share of pixels (hue bins of HSV; black, white and grey only when they
dominate), mapped to the scale of the word-space scores by :func:`evidence_scores`.
Colour words stay *unseen*: no ImageNet class covers them (the issue's rule).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .tags import normalize_tag

#: One evidence channel each, in the order of the extra dimensions.
CHANNELS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown",
            "black", "white", "gray", "monochrome", "dark")

#: Words that read a channel (normalised tags). Everything else is a plain word.
CHANNEL_OF_WORD = {**{c: c for c in CHANNELS}, "grey": "gray", "violet": "purple",
                   "black and white": "monochrome", "blackandwhite": "monochrome", "bw": "monochrome",
                   "b&w": "monochrome", "b w": "monochrome", "greyscale": "monochrome", "grayscale": "monochrome"}

#: Hue bins in degrees, [start, end) (red wraps around 0).
HUES = {"red": (345.0, 15.0), "orange": (15.0, 40.0), "yellow": (40.0, 70.0), "green": (70.0, 165.0),
        "blue": (165.0, 255.0), "purple": (255.0, 290.0), "pink": (290.0, 345.0)}

#: A pixel counts for a hue when saturated and lit enough to show it.
MIN_SATURATION, MIN_VALUE = 0.22, 0.2
#: Dark, low-saturation orange/red pixels are brown.
BROWN_MAX_VALUE = 0.55
#: Black, white and grey are tagged only when they fill more than this share.
ACHROMATIC_FLOOR = 0.5
#: Score of a colour that fills the whole image (the scale of the default's word scores).
FULL_SCORE = 0.5


def channel_of(tag: str) -> int | None:
    """The colour channel a tag reads, or None for a plain word ("orange" reads a colour)."""
    name = CHANNEL_OF_WORD.get(normalize_tag(tag))
    return None if name is None else CHANNELS.index(name)


def _hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in degrees, saturation and value of (B, 3, H, W) RGB in [0, 1]."""
    r, g, b = rgb.unbind(1)
    value, arg = rgb.max(dim=1)
    chroma = value - rgb.min(dim=1).values
    safe = chroma.clamp_min(1e-6)
    hue = torch.where(arg == 0, ((g - b) / safe) % 6, torch.where(arg == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-6), torch.zeros_like(value))
    return hue * 60.0, saturation, value


def _in_hue(hue: torch.Tensor, start: float, end: float) -> torch.Tensor:
    return (hue >= start) & (hue < end) if start < end else (hue >= start) | (hue < end)


def pixel_memberships(rgb: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) per-pixel membership of every channel (0/1; monochrome and dark are graded)."""
    hue, sat, val = _hsv(rgb.float().clamp(0, 1))
    chromatic = (sat >= MIN_SATURATION) & (val >= MIN_VALUE)
    brown = chromatic & (val < BROWN_MAX_VALUE) & _in_hue(hue, 345.0, 40.0)
    planes = {name: chromatic & _in_hue(hue, *bounds) & ~brown for name, bounds in HUES.items()}
    planes["brown"] = brown
    planes["black"] = val < MIN_VALUE
    planes["white"] = ~chromatic & (val >= 0.8)
    planes["gray"] = ~chromatic & (val >= MIN_VALUE) & (val < 0.8)
    out = [planes[name].float() for name in CHANNELS[:-2]]
    out.append(((0.12 - sat) / 0.08).clamp(0, 1))  # monochrome: how little colour a pixel has
    out.append(((0.35 - val) / 0.2).clamp(0, 1))  # dark
    return torch.stack(out, dim=1)


def evidence_scores(shares: torch.Tensor) -> torch.Tensor:
    """Map channel shares (..., C) in [0, 1] to scores: sqrt for hues (a fifth of the image
    in blue is already "blue"), a floor for black/white/grey, the image mean for monochrome
    and dark (a black-and-white photo is monochrome everywhere)."""
    hue_part = shares[..., :8].sqrt()
    floor = ((shares[..., 8:11] - ACHROMATIC_FLOOR) / (1 - ACHROMATIC_FLOOR)).clamp_min(0).sqrt()
    graded = ((shares[..., 11:] - 0.5) / 0.5).clamp_min(0)
    return FULL_SCORE * torch.cat([hue_part, floor, graded], dim=-1)


#: Pixels per grid cell side that colour is measured on: the photo is first averaged down to
#: this (8 x 8 = 64 samples a cell: shares move by < 0.01, and it costs ~1 ms instead of ~30).
SAMPLES_PER_CELL = 8


def colour_grid(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) channel shares per cell of a feature grid."""
    small = (size[0] * SAMPLES_PER_CELL, size[1] * SAMPLES_PER_CELL)
    if rgb.shape[-2] > small[0] and rgb.shape[-1] > small[1]:
        rgb = F.adaptive_avg_pool2d(rgb.float(), small)
    return F.adaptive_avg_pool2d(pixel_memberships(rgb), size)

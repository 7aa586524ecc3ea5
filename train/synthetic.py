"""A synthetic zero-shot dataset: shapes in named colours on a grey texture.

Seen colour words train the model; unseen ones (ruby, azure, violet, gold) are
shades close to a seen colour *and* words close to that colour's word in common word
spaces, which is exactly the situation zero-shot transfer relies on. Writes the plain
folder format (``tags.csv`` + images) for a train, a val and a test split, and
``unseen.txt``. Used by the tests, and to try the whole pipeline in a minute.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SEEN_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (40, 170, 50), "blue": (30, 60, 220), "yellow": (240, 225, 30),
    "orange": (250, 140, 20), "purple": (120, 40, 150), "pink": (250, 150, 190), "brown": (120, 70, 30),
}
UNSEEN_COLOURS: dict[str, tuple[int, int, int]] = {
    "ruby": (170, 10, 60), "azure": (40, 150, 255), "violet": (150, 90, 230), "gold": (212, 175, 55),
}
SPLITS = {"train": 0.6, "val": 0.15, "test": 0.25}


def draw_image(colours: list[tuple[int, int, int]], size: int, rng: np.random.Generator) -> Image.Image:
    """Grey noise texture with one filled shape per colour (circle, square or triangle)."""
    grey = rng.integers(90, 170)
    base = np.clip(grey + rng.normal(0, 18, size=(size, size, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(img)
    for colour in colours:
        side = int(size * rng.uniform(0.28, 0.45))
        x, y = (int(v) for v in rng.integers(0, size - side, size=2))
        fill = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in colour)
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse([x, y, x + side, y + side], fill=fill)
        elif shape == 1:
            draw.rectangle([x, y, x + side, y + side], fill=fill)
        else:
            draw.polygon([(x, y + side), (x + side, y + side), (x + side // 2, y)], fill=fill)
    return img


def _pick(rng: np.random.Generator, split: str) -> list[str]:
    """1-3 colour words; train images show seen colours only, val/test at least one unseen."""
    seen, unseen = list(SEEN_COLOURS), list(UNSEEN_COLOURS)
    n = int(rng.integers(1, 4))
    if split == "train":
        return [str(c) for c in rng.choice(seen, size=n, replace=False)]
    n_unseen = int(rng.integers(1, n + 1))
    words = list(rng.choice(unseen, size=n_unseen, replace=False)) + list(rng.choice(seen, size=n - n_unseen,
                                                                                       replace=False))
    return [str(w) for w in words]


def make_colour_dataset(out: str | Path, images: int = 200, size: int = 96, seed: int = 0) -> dict[str, Path]:
    """Write ``out/{train,val,test}/`` (JPEGs + tags.csv) and ``out/unseen.txt``; returns the paths."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    colours = {**SEEN_COLOURS, **UNSEEN_COLOURS}
    paths: dict[str, Path] = {}
    for split, share in SPLITS.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(max(2, int(round(images * share)))):
            words = _pick(rng, split)
            name = f"{split}_{i:05d}.jpg"
            draw_image([colours[w] for w in words], size, rng).save(folder / name, quality=92)
            rows.append((name, "|".join(words)))
        with (folder / "tags.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "tags"])
            writer.writerows(rows)
        paths[split] = folder
    paths["unseen"] = out / "unseen.txt"
    paths["unseen"].write_text("\n".join(UNSEEN_COLOURS) + "\n")
    return paths

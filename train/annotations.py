"""Reading annotations: image files and their tags, as multi-hot targets.

Two formats:
- **Plain folder**: images plus ``tags.csv`` with columns ``image,tags``; tags are
  separated by ``|`` or ``;`` (``beach|sunset;sea`` is three tags).
- **COCO JSON** (``images``, ``annotations``, ``categories``; categories in id order),
  alone or as a ``zs_split`` folder (``train_17_48.json`` + ``val_17_48.json``).
"""
from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sdl_core.tags import normalize_tag

from .errors import DataError

log = logging.getLogger(__name__)

TAGS_CSV = "tags.csv"
_TAG_SEPARATORS = re.compile(r"[|;]")
_ZS_TRAIN = re.compile(r"train_\d+_\d+\.json$")
_ZS_VAL = re.compile(r"val_\d+_\d+\.json$")


@dataclass
class TaggedImages:
    """Image files with multi-hot targets: ``targets[i, j]`` = image i has ``tags[j]``."""

    paths: list[Path]
    tags: list[str]
    targets: np.ndarray

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=bool).reshape(len(self.paths), len(self.tags))

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: Sequence[int] | np.ndarray) -> "TaggedImages":
        """The rows ``index``, in that order."""
        index = np.asarray(index, dtype=int)
        return TaggedImages([self.paths[i] for i in index], list(self.tags), self.targets[index])

    def with_tags(self, tags: Sequence[str]) -> "TaggedImages":
        """Columns in the order of ``tags``; a tag the data never mentions is all-negative."""
        where = {t: j for j, t in enumerate(self.tags)}
        out = np.zeros((len(self.paths), len(tags)), dtype=bool)
        for j, tag in enumerate(tags):
            if tag in where:
                out[:, j] = self.targets[:, where[tag]]
        return TaggedImages(list(self.paths), list(tags), out)

    def existing(self) -> "TaggedImages":
        """Drop rows whose file is missing (with a warning naming a few)."""
        keep = [i for i, p in enumerate(self.paths) if p.is_file()]
        missing = [self.paths[i].name for i in range(len(self.paths)) if i not in set(keep)]
        if missing:
            log.warning("skipping %d missing image files, e.g. %s", len(missing), ", ".join(missing[:5]))
        return self.subset(keep)


def read_tags_csv(path: str | Path) -> TaggedImages:
    """A folder with ``tags.csv`` (or the CSV itself): ``image,tags`` rows, tags split by | or ;."""
    path = Path(path)
    csv_path = path / TAGS_CSV if path.is_dir() else path
    if not csv_path.is_file():
        raise DataError(f"{path}: no {TAGS_CSV} here (a CSV with columns image,tags)")
    try:
        text = csv_path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise DataError(f"{csv_path.name}: empty file; expected a header 'image,tags' and one row per image")
    header = [h.strip().lower() for h in rows[0]]
    if "image" not in header or "tags" not in header:
        raise DataError(f"{csv_path.name}: the first line must name the columns 'image' and 'tags', got {rows[0]}")
    col_image, col_tags = header.index("image"), header.index("tags")
    per_image: dict[Path, dict[str, None]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(col_image, col_tags):
            raise DataError(f"{csv_path.name}, line {line_no}: expected columns image,tags, got {row}")
        name = row[col_image].strip()
        if not name:
            raise DataError(f"{csv_path.name}, line {line_no}: empty image name")
        file = Path(name) if Path(name).is_absolute() else csv_path.parent / name
        tags = per_image.setdefault(file, {})
        for tag in _TAG_SEPARATORS.split(row[col_tags]):
            tag = normalize_tag(tag)
            if tag:
                tags[tag] = None
    if not per_image:
        raise DataError(f"{csv_path.name}: no image rows")
    vocabulary = sorted({t for tags in per_image.values() for t in tags})
    column = {t: j for j, t in enumerate(vocabulary)}
    targets = np.zeros((len(per_image), len(vocabulary)), dtype=bool)
    for i, tags in enumerate(per_image.values()):
        targets[i, [column[t] for t in tags]] = True
    return TaggedImages(list(per_image), vocabulary, targets)


def read_json(path: Path) -> object:
    """A JSON file, or a one-line :class:`DataError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path.name}: not valid JSON ({exc})") from None


def read_coco(path: str | Path, images_root: str | Path | None = None) -> TaggedImages:
    """COCO-format annotations -> multi-hot over the categories, in category-id order."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DataError(f"{path.name}: a COCO file needs 'images', 'annotations' and 'categories'")
    try:
        categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        cat_column = {int(c["id"]): j for j, c in enumerate(categories)}
        tags = [normalize_tag(c["name"]) for c in categories]
        images = data["images"]
        row = {int(img["id"]): i for i, img in enumerate(images)}
        targets = np.zeros((len(images), len(categories)), dtype=bool)
        for ann in data["annotations"]:
            image_id, cat_id = int(ann["image_id"]), int(ann["category_id"])
            if image_id in row and cat_id in cat_column:
                targets[row[image_id], cat_column[cat_id]] = True
        root = Path(images_root) if images_root is not None else path.parent
        paths = [root / str(img["file_name"]) for img in images]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path.name}: malformed COCO entry ({exc!r})") from None
    if len(set(tags)) != len(tags):
        raise DataError(f"{path.name}: duplicate category names")
    return TaggedImages(paths, tags, targets)


def read_annotations(path: str | Path, images_root: str | Path | None = None) -> TaggedImages:
    """Any supported annotation source: a folder/CSV with tags.csv, or a COCO JSON file."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_coco(path, images_root)
    if path.is_dir() and (path / TAGS_CSV).is_file() or path.suffix.lower() == ".csv":
        return read_tags_csv(path)
    if path.is_dir():
        zs = zs_split_files(path)
        if zs is not None:
            return read_coco(zs[0], images_root)
    raise DataError(f"{path}: not a dataset (want a folder with {TAGS_CSV}, a COCO .json, "
                    "or a zs_split folder with train_*_*.json)")


def zs_split_files(folder: Path) -> tuple[Path, Path | None] | None:
    """(train json, val json) of a ``zs_split`` folder, or None if it is not one."""
    train = sorted(p for p in folder.glob("*.json") if _ZS_TRAIN.match(p.name))
    if not train:
        return None
    val = sorted(p for p in folder.glob("*.json") if _ZS_VAL.match(p.name))
    return train[0], (val[0] if val else None)


def is_zs_train_file(path: Path) -> bool:
    """A ``zs_split`` training file: ``train_<seen>_<unseen>.json``."""
    return bool(_ZS_TRAIN.match(path.name))

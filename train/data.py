"""Datasets for training and evaluation: files, multi-hot targets, seen/unseen splits,
tag vectors, and the image transforms.

Two input formats:
- **Plain folder**: images plus ``tags.csv`` with columns ``image,tags``; tags are
  separated by ``|`` or ``;`` (``beach|sunset;sea`` is three tags). Unseen tags come
  from ``--unseen`` (a text file, one tag per line, or a comma-separated list).
- **COCO JSON** (``images``, ``annotations``, ``categories``; categories in id order).
  The split is a ``split.json`` ``{"seen": [...], "unseen": [...]}``, the authors'
  ``cls_ids.pickle`` ``{"train": {...}, "test": {...}}`` (indices into the category
  list; a JSON file with the same keys works too), a text file of unseen tags, or,
  for a ``zs_split`` folder (``train_17_48.json`` + ``val_17_48.json``), the
  categories annotated in the training file.

Tag vectors come from a word space (``wordllama``, fastText ``.bin``/``.vec``), the
authors' NUS-WIDE folder, or a pickled table whose columns follow the category list
(the authors' COCO ``wordvec_array.pickle``); pickles go through the restricted loader.
"""
from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from sdl_core.config import PreprocessConfig, WordSpaceInfo
from sdl_core.errors import ImageError, SDLError
from sdl_core.images import load_image, to_tensor
from sdl_core.safe_pickle import safe_load_pickle
from sdl_core.tags import normalize_tag, parse_tags
from sdl_core.vocab import Vocabulary, read_tag_file
from sdl_core.wordvec import AUTHORS_FASTTEXT, load_word_space, unit_rows

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


# --- reading annotations ------------------------------------------------------------

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


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path.name}: not valid JSON ({exc})") from None


def read_coco(path: str | Path, images_root: str | Path | None = None) -> TaggedImages:
    """COCO-format annotations -> multi-hot over the categories, in category-id order."""
    path = Path(path)
    data = _read_json(path)
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


# --- splits -------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """Which tags train the model (seen) and which are held out (unseen)."""

    seen: tuple[str, ...]
    unseen: tuple[str, ...]


def _names_or_indices(values: object, tags: Sequence[str], what: str) -> list[str]:
    items = sorted(values) if isinstance(values, (set, frozenset)) else list(values)  # type: ignore[arg-type]
    if all(isinstance(v, (int, np.integer)) for v in items):
        bad = [int(v) for v in items if not 0 <= int(v) < len(tags)]
        if bad:
            raise DataError(f"{what}: indices {bad[:5]} are outside the {len(tags)} categories")
        return [tags[int(v)] for v in items]
    return [normalize_tag(str(v)) for v in items]


def split_from_object(obj: object, tags: Sequence[str], what: str) -> Split:
    """``{"seen", "unseen"}`` names, or ``{"train", "test"}`` (cls_ids-style) indices or names."""
    if isinstance(obj, dict):
        if "seen" in obj and "unseen" in obj:
            seen, unseen = obj["seen"], obj["unseen"]
        elif "train" in obj and "test" in obj:
            seen, unseen = obj["train"], obj["test"]
        else:
            raise DataError(f"{what}: a split needs the keys seen/unseen (or train/test), got {sorted(obj)[:5]}")
        split = Split(tuple(_names_or_indices(seen, tags, what)), tuple(_names_or_indices(unseen, tags, what)))
    else:
        raise DataError(f"{what}: a split must be a mapping with seen/unseen (or train/test)")
    both = set(split.seen) & set(split.unseen)
    if both:
        raise DataError(f"{what}: tags both seen and unseen: {sorted(both)[:5]}")
    if not split.seen:
        raise DataError(f"{what}: no seen tags: nothing to train on")
    return split


def read_split(spec: str | Path, tags: Sequence[str]) -> Split:
    """A split file (.json, the authors' .pickle, or a text list of unseen tags) or an
    inline comma-separated list of unseen tags."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".json":
        return split_from_object(_read_json(path), tags, path.name)
    if path.is_file() and path.suffix.lower() in (".pickle", ".pkl"):
        try:
            obj = safe_load_pickle(path)
        except SDLError as exc:
            raise DataError(str(exc)) from None
        return split_from_object(obj, tags, path.name)
    unseen = read_tag_file(path) if path.is_file() else parse_tags(str(spec))
    if not unseen:
        raise DataError(f"{spec!r}: no unseen tags given")
    unseen_set = set(unseen)
    return Split(tuple(t for t in tags if t not in unseen_set), tuple(unseen))


def split_by_annotation(train: TaggedImages, val: TaggedImages | None) -> Split:
    """The zs_split convention: seen = annotated in training, unseen = only in validation."""
    seen = [t for j, t in enumerate(train.tags) if train.targets[:, j].any()]
    unseen: list[str] = []
    if val is not None:
        seen_set = set(seen)
        unseen = [t for j, t in enumerate(val.tags) if val.targets[:, j].any() and t not in seen_set]
    return Split(tuple(seen), tuple(unseen))


# --- tag vectors --------------------------------------------------------------------

@dataclass
class TagVectors:
    """Unit vectors for tags, the space they live in, and (authors' folder) its own split."""

    vectors: dict[str, np.ndarray]
    info: WordSpaceInfo
    split: Split | None = None
    missing: list[str] = field(default_factory=list)


def tag_vectors(source: str | Path, tags: Sequence[str], space_name: str | None = None,
                extra: Sequence[str] = ()) -> TagVectors:
    """Vectors for ``tags`` (+ ``extra`` tags no image has) from a word space, the authors'
    folder, or a pickled table whose columns follow ``tags`` (the category list, in order)."""
    text = str(source)
    path = Path(text)
    tags_in = list(tags)
    tags = list(dict.fromkeys(tags_in + [t for t in extra if t not in set(tags_in)]))
    if text == "wordllama" or path.suffix.lower() in (".bin", ".vec"):
        space = load_word_space(text, name=space_name)
        vectors, found = space.embed(list(tags))
        return TagVectors({t: v for t, v, f in zip(tags, vectors, found) if f}, space.info,
                          missing=[t for t, f in zip(tags, found) if not f])
    if path.is_dir():
        try:
            vocab = Vocabulary.from_authors_folder(path)
        except SDLError as exc:
            raise DataError(str(exc)) from None
        info = WordSpaceInfo(space_name, vocab.dim) if space_name else AUTHORS_FASTTEXT
        if info.dim != vocab.dim:
            raise DataError(f"{path}: vectors are {vocab.dim}-d, not {info.dim}-d")
        vectors = {t: vocab.vectors[i] for i, t in enumerate(vocab.tags)}
        return TagVectors(vectors, info, Split(tuple(vocab.seen_tags), tuple(vocab.unseen_tags)),
                          missing=[t for t in tags if t not in vectors])
    if path.is_file() and path.suffix.lower() in (".pickle", ".pkl"):
        return _table_vectors(path, tags_in, space_name)  # columns follow the categories; extras have none
    raise DataError(f"tag vectors {text!r}: use 'wordllama', a fastText .bin/.vec, the authors' data folder, "
                    "or a .pickle table of word vectors")


def _table_vectors(path: Path, tags: Sequence[str], space_name: str | None) -> TagVectors:
    try:
        table = safe_load_pickle(path)
    except SDLError as exc:
        raise DataError(str(exc)) from None
    if isinstance(table, dict) and "wordvec_array" in table:
        table = table["wordvec_array"]
    array = np.asarray(table, dtype=np.float32).squeeze()
    n = len(tags)
    if array.ndim != 2 or n not in array.shape:
        raise DataError(f"{path.name}: a table of shape {array.shape} does not fit the {n} categories "
                        "(columns must follow the dataset's category order)")
    if array.shape[0] != n or (array.shape[1] == n and array.shape[0] > array.shape[1]):
        array = array.T  # the authors store D x N
    array = unit_rows(array)
    dim = array.shape[1]
    info = WordSpaceInfo(space_name, dim) if space_name else (
        AUTHORS_FASTTEXT if dim == AUTHORS_FASTTEXT.dim else WordSpaceInfo(f"table:{path.stem}", dim))
    return TagVectors({t: array[j] for j, t in enumerate(tags)}, info)


# --- putting it together -------------------------------------------------------------

@dataclass
class DataSpec:
    """Where the data is and how it is split (the ``fit``/``evaluate`` options)."""

    data: str
    vectors: str
    val_data: str | None = None
    images_root: str | None = None
    split: str | None = None
    val_fraction: float = 0.1
    seed: int = 0
    space_name: str | None = None


@dataclass
class PreparedData:
    """Train/val images with columns = ``vocab.tags`` (seen + unseen), and the vocabulary."""

    train: TaggedImages
    val: TaggedImages | None
    vocab: Vocabulary
    word_space: WordSpaceInfo

    @property
    def seen_index(self) -> np.ndarray:
        return np.flatnonzero(self.vocab.seen)

    def summary(self) -> dict:
        return {"train_images": len(self.train), "val_images": len(self.val) if self.val is not None else 0,
                "seen_tags": int(self.vocab.seen.sum()), "unseen_tags": int((~self.vocab.seen).sum()),
                "word_space": self.word_space.name, "dim": self.word_space.dim}


def prepare_data(spec: DataSpec) -> PreparedData:
    """Read annotations, decide the split, attach vectors, and hold out validation images."""
    if spec.data.lower().startswith("nus-wide:"):  # NUS-WIDE as distributed, with the paper's split
        from .nus_wide_prepare import prepare_nus_wide
        return prepare_nus_wide(spec)
    data_path = Path(spec.data)
    if not data_path.exists():
        raise DataError(f"{data_path}: no such file or folder")
    val_path: Path | None = Path(spec.val_data) if spec.val_data else None
    if data_path.is_dir() and zs_split_files(data_path) is not None:
        zs_train, zs_val = zs_split_files(data_path)  # type: ignore[misc]
        data_path, val_path = zs_train, val_path or zs_val
    train = read_annotations(data_path, spec.images_root)
    val = read_annotations(val_path, spec.images_root) if val_path is not None else None
    all_tags = list(dict.fromkeys(train.tags + (val.tags if val is not None else [])))
    split = read_split(spec.split, all_tags) if spec.split else None
    extra = [t for t in (split.seen + split.unseen if split else ()) if t not in set(all_tags)]
    vectors = tag_vectors(spec.vectors, all_tags, spec.space_name, extra)
    if split is None:
        split = _default_split(data_path, train, val, vectors, all_tags)
    vocab = _split_vocabulary(split, all_tags, vectors)
    train = train.with_tags(vocab.tags).existing()
    if val is not None:
        val = val.with_tags(vocab.tags).existing()
    elif spec.val_fraction > 0:
        train, val = hold_out(train, spec.val_fraction, spec.seed)
    if len(train) == 0:
        raise DataError(f"{spec.data}: no training images found")
    if not train.targets[:, vocab.seen].any():
        raise DataError(f"{spec.data}: no training image has a seen tag: nothing to learn from")
    return PreparedData(train, val if val is not None and len(val) else None, vocab, vectors.info)


def _default_split(data_path: Path, train: TaggedImages, val: TaggedImages | None, vectors: TagVectors,
                   all_tags: Sequence[str]) -> Split:
    """No --split: the authors' folder's own split, the zs_split convention, or all seen."""
    if vectors.split is not None:
        return vectors.split
    if data_path.suffix.lower() == ".json" and val is not None and _ZS_TRAIN.match(data_path.name):
        return split_by_annotation(train, val)
    log.warning("no unseen tags given (--unseen/--split): every tag is seen; ZSL metrics will be empty")
    return Split(tuple(all_tags), ())


def _split_vocabulary(split: Split, all_tags: Sequence[str], vectors: TagVectors) -> Vocabulary:
    """Seen and unseen tags (data order, then split-only tags) that have vectors; a tag
    without a vector is dropped loudly. Tags of the data in neither list are left out."""
    in_split = set(split.seen) | set(split.unseen)
    order = [t for t in all_tags if t in in_split]
    extra = [t for t in split.seen + split.unseen if t not in set(order)]
    if extra:
        log.info("%d split tags have no image in the data (kept as negatives): %s", len(extra), extra[:10])
    order += extra
    no_vector = [t for t in order if t not in vectors.vectors]
    if no_vector:
        log.warning("dropping %d tags without a word vector in %s: %s", len(no_vector), vectors.info.name,
                    no_vector[:10])
    order = [t for t in order if t in vectors.vectors]
    if not order:
        raise DataError("no tag of the data has a word vector")
    unseen = set(split.unseen)
    vocab = Vocabulary(order, np.stack([vectors.vectors[t] for t in order]), np.array([t not in unseen for t in order]))
    if not vocab.seen.any():
        raise DataError("no seen tag has a word vector: nothing to train on")
    return vocab


def hold_out(data: TaggedImages, fraction: float, seed: int) -> tuple[TaggedImages, TaggedImages]:
    """A seeded random validation split of ``fraction`` of the images (at least one image)."""
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, int(round(fraction * len(data)))) if len(data) > 1 else 0
    return data.subset(np.sort(order[n_val:])), data.subset(np.sort(order[:n_val]))


# --- images -> tensors ----------------------------------------------------------------

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

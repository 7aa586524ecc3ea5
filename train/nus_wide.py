r"""NUS-WIDE as distributed, read in place, with the paper's zero-shot split.

Layout under ROOT (what the NUS-WIDE site's archives unpack to)::

    ImageList/TrainImagelist.txt, TestImagelist.txt   one image per line, Windows paths: actor\0001_2124494179.jpg
    ImageList/Imagelist.txt                           every image (rows of AllTags1k.txt and AllLabels/)
    NUS_WID_Tags/TagList1k.txt                        the 1000 user tags, one per line (frequency order)
    NUS_WID_Tags/Train_Tags1k.dat, Test_Tags1k.dat    0/1 matrix: a row per listed image, a column per tag
    NUS_WID_Tags/AllTags1k.txt                        the same for Imagelist.txt
    ConceptsList/Concepts81.txt                       the 81 concepts
    Groundtruth/TrainTestLabels/Labels_<c>_Train.txt  one 0/1 per line of TrainImagelist.txt (…_Test.txt)
    Groundtruth/AllLabels/Labels_<c>.txt              one 0/1 per line of Imagelist.txt
    Flickr/<folder>/<file>.jpg                        the images (also images/ or ROOT; nested or flat)

The split (Fast0Tag, LESA, SDL): unseen = the 81 concepts; seen = the 1000 tags minus
those spelled like a concept. Compared with the authors' ``classes.pickle`` and
``unseen_classes.pickle`` (and the published TagList1k.txt), their cleaning is exactly
that and no more: 75 tags equal a concept and are dropped (6 concepts, e.g. computer,
are no tag), nothing is merged or respelled, and the 1006 tags are sorted
alphabetically. So the rules below are: normalise a word (trim, lower case), drop tags
that equal a concept, sort the union. Targets: seen columns are the user tags
(``*_Tags1k``), unseen columns the human ground truth (``Groundtruth``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from sdl_core.tags import normalize_tag

from .annotations import TaggedImages
from .errors import DataError
from .splits import Split

log = logging.getLogger(__name__)

PREFIX = "nus-wide:"
SPLITS = ("train", "test")
_LIST_FILE = {"train": "TrainImagelist.txt", "test": "TestImagelist.txt"}
_TAGS_FILE = {"train": "Train_Tags1k.dat", "test": "Test_Tags1k.dat"}
_LABEL_SUFFIX = {"train": "Train", "test": "Test"}
#: Folders that may hold the images, in the order they are tried.
IMAGE_FOLDERS = ("Flickr", "images", ".")
_LAYOUT_SAMPLE = 200


# --- the --data spec ------------------------------------------------------------------

@dataclass(frozen=True)
class NusWideSpec:
    """``nus-wide:ROOT`` or ``nus-wide:ROOT:train|test`` (default: what the command reads)."""

    root: Path
    split: str


def is_nus_wide(text: str | None) -> bool:
    return bool(text) and str(text).lower().startswith(PREFIX)


def parse_spec(text: str, default_split: str) -> NusWideSpec:
    body = str(text)[len(PREFIX):]
    split = default_split
    head, _, tail = body.rpartition(":")
    if head and tail.lower() in SPLITS:
        body, split = head, tail.lower()
    if not body:
        raise DataError(f"{text!r}: give the NUS-WIDE folder, e.g. nus-wide:/data/NUS-WIDE (or nus-wide:DIR:test)")
    root = Path(body).expanduser()
    if not root.is_dir():
        raise DataError(f"{text!r}: {root} is not a folder")
    return NusWideSpec(root, split)


# --- the split ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperSplit:
    """The 1006 tags in the authors' order, which are seen, and what the cleaning dropped."""

    tags: tuple[str, ...]
    seen: np.ndarray
    duplicates: tuple[str, ...]  # tags of TagList1k dropped because they equal a concept

    def as_split(self) -> Split:
        return Split(tuple(t for t, s in zip(self.tags, self.seen) if s),
                     tuple(t for t, s in zip(self.tags, self.seen) if not s))


def paper_split(tags_1k: Sequence[str], concepts: Sequence[str]) -> PaperSplit:
    """Seen = tags minus concept names, unseen = concepts, all sorted (the authors' classes.pickle)."""
    concept_set = set(concepts)
    seen = [t for t in tags_1k if t not in concept_set]
    duplicates = tuple(t for t in tags_1k if t in concept_set)
    order = tuple(sorted(set(seen) | concept_set))
    seen_set = set(seen)
    return PaperSplit(order, np.array([t in seen_set for t in order]), duplicates)


def compare_with_authors(split: PaperSplit, authors_tags: Sequence[str], authors_unseen: Sequence[str]) -> list[str]:
    """Differences from the authors' classes/unseen lists, one readable line each (empty = equal)."""
    ours, theirs = list(split.tags), [normalize_tag(t) for t in authors_tags]
    unseen_theirs = {normalize_tag(t) for t in authors_unseen}
    problems = []
    only_ours = [t for t in ours if t not in set(theirs)]
    only_theirs = [t for t in theirs if t not in set(ours)]
    if only_ours:
        problems.append(f"{len(only_ours)} NUS-WIDE tags are not in the authors' classes: {only_ours[:10]}")
    if only_theirs:
        problems.append(f"{len(only_theirs)} of the authors' classes are not NUS-WIDE tags here: {only_theirs[:10]}")
    flag = dict(zip(ours, split.seen))
    flipped = [t for t in theirs if t in flag and flag[t] == (t in unseen_theirs)]
    if flipped:
        problems.append(f"{len(flipped)} tags are seen here but unseen for the authors, or the reverse: {flipped[:10]}")
    common = set(ours) & set(theirs)
    a, b = [t for t in ours if t in common], [t for t in theirs if t in common]
    moved = [x for x, y in zip(a, b) if x != y]
    if moved:
        problems.append(f"the tag order differs from the authors' from {moved[0]!r} on ({len(moved)} positions)")
    return problems


# --- file formats -----------------------------------------------------------------------

def read_words(path: Path) -> list[str]:
    """One word per line (LF or CRLF, trailing blanks allowed), normalised; duplicates kept once."""
    words = [normalize_tag(w) for w in _read_lines(path)]
    seen: dict[str, None] = {}
    for w in words:
        if w in seen:
            log.warning("%s: %r is listed twice; kept once", path.name, w)
        seen[w] = None
    return list(seen)


def _read_lines(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing (is this the NUS-WIDE folder? see README, 'Reproduce the paper')") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_image_list(path: Path) -> list[str]:
    r"""Relative image paths with ``/`` separators (the lists use ``actor\0001_2124494179.jpg``)."""
    return [line.replace("\\", "/").lstrip("/") for line in _read_lines(path)]


def read_binary_matrix(path: Path, rows: int, columns: int) -> np.ndarray:
    """A whitespace-separated 0/1 matrix (tabs, a trailing tab, CRLF) of ``rows`` x ``columns``."""
    text = _read_text(path)
    try:
        values = np.fromstring(text, dtype=np.int8, sep=" ")
    except ValueError:
        try:
            values = np.fromstring(text, dtype=np.float32, sep=" ")
        except ValueError:
            raise DataError(f"{path.name}: not a matrix of numbers (0/1 separated by tabs or spaces)") from None
    if values.size != rows * columns:
        raise DataError(f"{path.name}: {values.size} values, but {rows} images x {columns} columns need "
                        f"{rows * columns}: the file does not belong to this image list or tag list")
    return values.reshape(rows, columns) > 0


def read_label_column(path: Path, rows: int) -> np.ndarray:
    """A ground-truth file: one 0/1 per line, one line per image of its list."""
    return read_binary_matrix(path, rows, 1)[:, 0]


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("ascii", errors="replace")
    except FileNotFoundError:
        raise DataError(f"{path}: missing (is this the NUS-WIDE folder?)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


# --- reading one split ------------------------------------------------------------------------

@dataclass
class NusWideData:
    """One split of NUS-WIDE: every listed image with its targets over the 1006 tags."""

    name: str
    root: Path
    images: TaggedImages  # all listed images; columns = split.tags
    split: PaperSplit
    image_dir: Path
    exists: np.ndarray  # per listed image: the file is there
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def seen(self) -> np.ndarray:
        return self.split.seen

    def usable(self, need: str = "any") -> TaggedImages:
        """Present images with a positive: ``seen`` (to train on) or ``any`` (to evaluate)."""
        columns = self.split.seen if need == "seen" else np.ones(len(self.split.tags), dtype=bool)
        labelled = self.images.targets[:, columns].any(axis=1)
        self.counts[f"no_{need}_label"] = int((self.exists & ~labelled).sum())
        return self.images.subset(np.flatnonzero(self.exists & labelled))


def read_nus_wide(root: str | Path, split: str = "test", images_root: str | Path | None = None) -> NusWideData:
    """Read one split (``train`` or ``test``) of the NUS-WIDE folder ``root``."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"NUS-WIDE split {split!r}: use one of {', '.join(SPLITS)}")
    tags_1k = read_words(_first(root, ["NUS_WID_Tags/TagList1k.txt", "TagList1k.txt"]))
    concept_file = _first(root, ["ConceptsList/Concepts81.txt", "Concepts81.txt"])
    concept_names = _read_lines(concept_file)
    concepts = [normalize_tag(c) for c in concept_names]
    if not tags_1k or not concepts:
        raise DataError(f"{root}: the tag list or the concept list is empty")
    names = read_image_list(_first(root, [f"ImageList/{_LIST_FILE[split]}", _LIST_FILE[split]]))
    if not names:
        raise DataError(f"{root}: {_LIST_FILE[split]} lists no image")
    tags, labels = _tags_and_labels(root, split, names, tags_1k, concept_names)
    ps = paper_split(tags_1k, concepts)
    column = {t: j for j, t in enumerate(ps.tags)}
    targets = np.zeros((len(names), len(ps.tags)), dtype=bool)
    seen_1k = [j for j, t in enumerate(tags_1k) if ps.seen[column[t]]]
    targets[:, [column[tags_1k[j]] for j in seen_1k]] = tags[:, seen_1k]
    targets[:, [column[c] for c in concepts]] = labels
    image_dir, nested = locate_images(root, names, images_root)
    paths = [image_dir / (n if nested else n.rsplit("/", 1)[-1]) for n in names]
    exists = np.array([p.is_file() for p in paths], dtype=bool)
    counts = {"listed": len(names), "missing": int((~exists).sum())}
    if counts["missing"]:
        log.warning("NUS-WIDE %s: %d of %d listed images are missing under %s (e.g. %s)", split, counts["missing"],
                    len(names), image_dir, ", ".join(names[i] for i in np.flatnonzero(~exists)[:3]))
    return NusWideData(split, root, TaggedImages(paths, list(ps.tags), targets), ps, image_dir, exists, counts)


def _first(root: Path, candidates: list[str]) -> Path:
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    raise DataError(f"{root}: no {candidates[0]} (is this the NUS-WIDE folder? it needs ImageList/, "
                    "NUS_WID_Tags/, ConceptsList/ and Groundtruth/)")


def _tags_and_labels(root: Path, split: str, names: list[str], tags_1k: list[str],
                     concepts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(images x 1000 user tags, images x 81 ground truth) from the per-split files, or from
    the all-image files (AllTags1k.txt, AllLabels/) matched by path through Imagelist.txt."""
    tag_file = root / "NUS_WID_Tags" / _TAGS_FILE[split]
    label_dir = root / "Groundtruth" / "TrainTestLabels"
    everything = _AllImages(root, names)
    if tag_file.is_file():
        tags = read_binary_matrix(tag_file, len(names), len(tags_1k))
    else:
        all_tags = _first(root, [f"NUS_WID_Tags/{_TAGS_FILE[split]}", "NUS_WID_Tags/AllTags1k.txt"])
        tags = read_binary_matrix(all_tags, everything.count, len(tags_1k))[everything.rows]
    labels = np.zeros((len(names), len(concepts)), dtype=bool)
    for j, concept in enumerate(concepts):
        per_split = label_dir / f"Labels_{concept}_{_LABEL_SUFFIX[split]}.txt"
        whole = root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt"
        if per_split.is_file():
            labels[:, j] = read_label_column(per_split, len(names))
        elif whole.is_file():
            labels[:, j] = read_label_column(whole, everything.count)[everything.rows]
        else:
            raise DataError(f"{root}: no ground truth for concept {concept!r} (want {per_split.relative_to(root)} "
                            f"or {whole.relative_to(root)})")
    return tags, labels


class _AllImages:
    """ImageList/Imagelist.txt, read when first needed: the row of each listed image in the
    all-image files (AllTags1k.txt, AllLabels/), matched by path."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root, self.names = root, names

    @cached_property
    def everything(self) -> list[str]:
        return read_image_list(_first(self.root, ["ImageList/Imagelist.txt"]))

    @property
    def count(self) -> int:
        return len(self.everything)

    @cached_property
    def rows(self) -> np.ndarray:
        row = {n.lower(): i for i, n in enumerate(self.everything)}
        absent = [n for n in self.names if n.lower() not in row]
        if absent:
            raise DataError(f"{len(absent)} listed images are not in ImageList/Imagelist.txt, e.g. {absent[:3]}")
        return np.array([row[n.lower()] for n in self.names], dtype=np.int64)


def locate_images(root: Path, names: Sequence[str], images_root: str | Path | None = None) -> tuple[Path, bool]:
    """The folder holding the images and whether they keep the list's subfolders: the
    candidate where most of a sample of the listed files exist (``images_root`` first)."""
    folders = [Path(images_root)] if images_root else [root / f for f in IMAGE_FOLDERS]
    step = max(1, len(names) // _LAYOUT_SAMPLE)
    sample = list(names[::step])
    best, best_hits = (folders[0], True), -1
    for folder in folders:
        for nested in (True, False):
            hits = sum((folder / (n if nested else n.rsplit("/", 1)[-1])).is_file() for n in sample)
            if hits > best_hits:
                best, best_hits = (folder, nested), hits
    if best_hits == 0:
        log.warning("none of %d sampled listed images was found under %s", len(sample),
                    " or ".join(str(f) for f in folders))
    return best

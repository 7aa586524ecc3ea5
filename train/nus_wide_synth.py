r"""A miniature NUS-WIDE tree in the distributed file formats (``python -m train synth-nus-wide``).

The real structure at small scale: a user-tag list (``TagList1k.txt``) in which some
concepts reappear as tags (the real list repeats 75 of the 81), concepts that are no
tag, generic tags with no visual meaning, images whose labels are all empty, listed
images that were never downloaded and images that are corrupt. Images are shapes in
named colours (as :mod:`train.synthetic`): seen colour words are user tags, unseen
ones are the concepts, so a model can learn something zero-shot.

``real_names``: a folder with the authors' ``classes.pickle`` / ``unseen_classes.pickle``;
the tag list then holds their 925 seen tags and all but six concepts, in a shuffled
order, so the reader's split can be checked against the authors' files. Labels are
random in that mode.

Formats written: image lists with Windows paths (``folder\NNNN_id.jpg``) and CRLF line
ends; tag matrices tab-separated with a trailing tab; one 0/1 per line in label files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdl_core.safe_pickle import safe_load_pickle

from .synthetic import SEEN_COLOURS, UNSEEN_COLOURS, draw_image

#: User tags with no visual meaning (the real list has ``bravo``, ``explore``, ``wow``...).
NOISE_TAGS = ("nature", "bravo", "explore", "photo")
#: Concepts that are user tags too (so the cleaning must drop them from the seen tags).
DUPLICATED = ("azure", "gold")
#: How many concepts are no user tag in real-names mode (computer, fire, ... in the real list).
CONCEPTS_NOT_TAGS = 6
SPLIT_SHARE = {"train": 0.6, "test": 0.4}


@dataclass
class SplitTruth:
    """What was written for one split, in the generator's own column order."""

    names: list[str]  # as listed (forward slashes)
    tags: np.ndarray  # images x len(tags_1k)
    labels: np.ndarray  # images x len(concepts)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)


@dataclass
class SynthNusWide:
    root: Path
    tags_1k: list[str]
    concepts: list[str]
    splits: dict[str, SplitTruth]


def _vocabulary(rng: np.random.Generator, real_names: Path | None) -> tuple[list[str], list[str]]:
    """(tag list in file order, concepts in file order)."""
    if real_names is None:
        tags = list(SEEN_COLOURS) + list(NOISE_TAGS) + list(DUPLICATED)
        return [str(t) for t in rng.permutation(tags)], sorted(UNSEEN_COLOURS)
    classes = safe_load_pickle(Path(real_names) / "classes.pickle")
    unseen = sorted(str(t) for t in safe_load_pickle(Path(real_names) / "unseen_classes.pickle"))
    seen = [str(classes[i]) for i in sorted(classes) if str(classes[i]) not in set(unseen)]
    repeated = [str(t) for t in rng.choice(unseen, size=len(unseen) - CONCEPTS_NOT_TAGS, replace=False)]
    return [str(t) for t in rng.permutation(seen + repeated)], unseen


def _untagged(index: int) -> bool:
    """Every seventh image has no user tag and no concept (its labels are all empty)."""
    return index % 7 == 6


def _image_words(rng: np.random.Generator, split: str, index: int) -> list[str]:
    """Colours shown: training images show seen colours; test images mostly an unseen one
    too, but every fifth (and every untagged) test image none."""
    seen, unseen = list(SEEN_COLOURS), sorted(UNSEEN_COLOURS)
    n = int(rng.integers(1, 3))
    words = [str(w) for w in rng.choice(seen, size=n, replace=False)]
    if split == "test" and index % 5 != 4 and not _untagged(index):
        words.append(str(rng.choice(unseen)))
    return words


def _rows(rng: np.random.Generator, index: int, words: list[str], tags_1k: list[str], concepts: list[str],
          real: bool) -> tuple[np.ndarray, np.ndarray]:
    """One image's user-tag row and ground-truth row."""
    if real:
        tags = np.zeros(len(tags_1k), dtype=bool)
        tags[rng.choice(len(tags_1k), size=int(rng.integers(1, 5)), replace=False)] = True
        labels = rng.random(len(concepts)) < 2.0 / len(concepts)
        return tags, labels
    # users tag a concept less reliably than the ground truth: only on even images
    tags = np.array([(t in words and (t not in DUPLICATED or index % 2 == 0))
                     or (t in NOISE_TAGS and rng.random() < 0.3) for t in tags_1k])
    return tags, np.array([c in words for c in concepts])


def make_nus_wide(out: str | Path, images: int = 40, size: int = 48, seed: int = 0, missing: int = 3,
                  corrupt: int = 2, labels: str = "split", real_names: str | Path | None = None) -> SynthNusWide:
    """Write the miniature tree under ``out``; ``labels``: ``split`` (per-split tag and label
    files, plus the all-image ones) or ``all`` (only AllTags1k.txt and Groundtruth/AllLabels/)."""
    if labels not in ("split", "all"):
        raise ValueError(f"labels must be 'split' or 'all', got {labels!r}")
    root, rng = Path(out), np.random.default_rng(seed)
    tags_1k, concepts = _vocabulary(rng, Path(real_names) if real_names else None)
    colours = {**SEEN_COLOURS, **UNSEEN_COLOURS}
    truth: dict[str, SplitTruth] = {}
    counter = 0
    for split, share in SPLIT_SHARE.items():
        n = max(4, int(round(images * share)))
        names, tag_rows, label_rows = [], [], []
        for i in range(n):
            counter += 1
            words = _image_words(rng, split, i)
            folder = words[0]
            names.append(f"{folder}/{counter:04d}_{int(rng.integers(10**9, 10**10))}.jpg")
            tag_row, label_row = _rows(rng, i, words, tags_1k, concepts, real_names is not None)
            if _untagged(i):
                tag_row, label_row = np.zeros_like(tag_row), np.zeros_like(label_row)
            tag_rows.append(tag_row)
            label_rows.append(label_row)
            path = root / "Flickr" / names[-1]
            path.parent.mkdir(parents=True, exist_ok=True)
            draw_image([colours[w] for w in words], size, rng).save(path, quality=90)
        truth[split] = SplitTruth(names, np.array(tag_rows), np.array(label_rows))
    _break_images(root, truth, missing, corrupt, rng)
    _write_metadata(root, tags_1k, concepts, truth, labels, rng)
    return SynthNusWide(root, tags_1k, concepts, truth)


def _break_images(root: Path, truth: dict[str, SplitTruth], missing: int, corrupt: int,
                  rng: np.random.Generator) -> None:
    """Delete ``missing`` listed images and garble ``corrupt`` others, spread over the splits."""
    everything = [(split, name) for split, t in truth.items() for name in t.names]
    chosen = rng.choice(len(everything), size=min(len(everything), missing + corrupt), replace=False)
    for n, index in enumerate(chosen):
        split, name = everything[int(index)]
        path = root / "Flickr" / name
        if n < missing:
            path.unlink()
            truth[split].missing.append(name)
        else:
            path.write_bytes(path.read_bytes()[:60] if n % 2 else b"<html>404 Not Found</html>")
            truth[split].corrupt.append(name)


def _write_metadata(root: Path, tags_1k: list[str], concepts: list[str], truth: dict[str, SplitTruth],
                    labels: str, rng: np.random.Generator) -> None:
    for folder in ("ImageList", "NUS_WID_Tags", "ConceptsList", "Groundtruth/TrainTestLabels",
                   "Groundtruth/AllLabels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "NUS_WID_Tags" / "TagList1k.txt").write_text("".join(t + "\n" for t in tags_1k))
    (root / "ConceptsList" / "Concepts81.txt").write_text("".join(c + "\r\n" for c in concepts))
    list_name = {"train": "TrainImagelist.txt", "test": "TestImagelist.txt"}
    for split, t in truth.items():
        _write_list(root / "ImageList" / list_name[split], t.names)
        if labels == "split":
            _write_matrix(root / "NUS_WID_Tags" / f"{split.title()}_Tags1k.dat", t.tags)
            for j, concept in enumerate(concepts):
                _write_column(root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{split.title()}.txt",
                              t.labels[:, j])
    names = [n for t in truth.values() for n in t.names]
    order = rng.permutation(len(names))  # Imagelist.txt is in its own order, not train then test
    tags = np.concatenate([t.tags for t in truth.values()])[order]
    gt = np.concatenate([t.labels for t in truth.values()])[order]
    _write_list(root / "ImageList" / "Imagelist.txt", [names[i] for i in order])
    _write_matrix(root / "NUS_WID_Tags" / "AllTags1k.txt", tags)
    for j, concept in enumerate(concepts):
        _write_column(root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt", gt[:, j])


def _write_list(path: Path, names: list[str]) -> None:
    path.write_bytes("".join(n.replace("/", "\\") + "\r\n" for n in names).encode())


def _write_matrix(path: Path, matrix: np.ndarray) -> None:
    path.write_text("".join("".join(f"{int(v)}\t" for v in row) + "\n" for row in matrix))


def _write_column(path: Path, column: np.ndarray) -> None:
    path.write_text("".join(f"{int(v)}\n" for v in column))

#!/usr/bin/env python3
"""How faithful is the bridge? Held-out fidelity of maps from WordLlama into the authors' word space.

    python tools/bridge_fidelity.py [--reference ../shared/reference/zs_sdl] [--methods shipped,ridge]
                                    [--folds 10] [--sizes] [--json]

Reads the authors' fastText vectors (NUS-WIDE: 1006 tags; COCO: 80 categories, the same
space) and prints, per method, on NUS-WIDE by k-fold hold-out (every tag's vector is
predicted by a map fitted without it):

* cos: mean cosine of the predicted to the true vector;
* top-1 / top-5: the true tag is the nearest / among the 5 nearest of all 1006 true
  vectors to the prediction;
* Spearman: rank correlation, per synthetic image, of all tags' scores
  ``max_k <A_k, w>`` under true vectors and under predicted ones (mean over images).
  "Realistic" principal vectors: K = 7 per image, each the normalised random
  (Dirichlet) mixture of a random tag's true vector and those of its 3 nearest
  neighbours (tags that go together in photos are near in this space: beach, sea,
  sand), plus isotropic noise of norm 0.5; 300 images, fixed seed.

COCO: each map is fitted on the NUS-WIDE tags that are not COCO category names and
predicts the 80 names (phrases whole, except in the shipped space, which embeds
them as the product does: table words exact, phrases word by word); retrieval among
the 80 true vectors, Spearman under principal vectors built the same way from the 80. ``--sizes`` adds the shipped map's fidelity when
fitted on fewer tags (why :data:`~sdl_core.bridge.MIN_BRIDGE_TAGS`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdl_core.bridge import MIN_BRIDGE_TAGS, BridgeConfig, BridgedSpace, WordBridge  # noqa: E402
from sdl_core.config import WordSpaceInfo  # noqa: E402
from sdl_core.safe_pickle import safe_load_pickle  # noqa: E402
from sdl_core.vocab import authors_word_vectors  # noqa: E402
from sdl_core.wordvec import TableSpace, WordLlamaSpace, load_word_space, unit_rows  # noqa: E402

#: The 80 COCO categories in their standard order (the order of the authors' COCO vectors).
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",)
#: The issue's reference point: a ridge map from WordLlama, held out (cos, top-1, top-5).
REFERENCE = {"cos": 0.47, "top1": 0.24, "top5": 0.65}

Predict = Callable[[Sequence[str]], np.ndarray]
Fit = Callable[[Sequence[str], np.ndarray, WordLlamaSpace], Predict]


def read_reference(folder: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """(NUS-WIDE tags, their unit vectors, COCO names, their unit vectors)."""
    classes = safe_load_pickle(folder / "NUS_WIDE" / "classes.pickle")
    tags = [str(classes[i]) for i in range(len(classes))]
    nus = authors_word_vectors(safe_load_pickle(folder / "NUS_WIDE" / "wordvec_array.pickle"), len(tags), "NUS-WIDE")
    names = list(COCO_NAMES)
    coco = authors_word_vectors(safe_load_pickle(folder / "COCO" / "wordvec_array.pickle"), len(names), "COCO")
    return tags, nus, names, coco


# --- methods: fit(tags, unit vectors, source) -> predict(words) -> vectors -----------------

def fit_ridge(lam: float, match_norm: bool) -> Fit:
    """Ridge (with intercepts) from the lower-case WordLlama vector; the issue's baseline."""
    def fit(tags: Sequence[str], vectors: np.ndarray, source: WordLlamaSpace) -> Predict:
        x = source.embed_texts(tags).astype(np.float64)
        mx, my = x.mean(0), vectors.mean(0)
        weights = np.linalg.solve((x - mx).T @ (x - mx) + lam * np.eye(x.shape[1]), (x - mx).T @ (vectors - my))
        norm = float(np.linalg.norm(vectors - my, axis=1).mean())

        def predict(words: Sequence[str]) -> np.ndarray:
            centred = (source.embed_texts(words) - mx) @ weights
            return my + (norm * unit_rows(centred) if match_norm else centred)
        return predict
    return fit


def fit_procrustes(tags: Sequence[str], vectors: np.ndarray, source: WordLlamaSpace) -> Predict:
    """Orthogonal map (256 -> 300, orthonormal rows) between the centred spaces, best-scaled."""
    x = source.embed_texts(tags).astype(np.float64)
    mx, my = x.mean(0), vectors.mean(0)
    u, _, vt = np.linalg.svd((x - mx).T @ (vectors - my), full_matrices=False)
    rotation = u @ vt
    mapped = (x - mx) @ rotation
    scale = float((mapped * (vectors - my)).sum() / (mapped * mapped).sum())
    return lambda words: my + scale * (source.embed_texts(words) - mx) @ rotation


def fit_attention(tau: float) -> Fit:
    """Softmax attention over the table: a weighted mean of the table vectors of the
    words most similar in WordLlama."""
    def fit(tags: Sequence[str], vectors: np.ndarray, source: WordLlamaSpace) -> Predict:
        keys = source.embed_texts(tags)

        def predict(words: Sequence[str]) -> np.ndarray:
            logits = source.embed_texts(words) @ keys.T / tau
            weights = np.exp(logits - logits.max(1, keepdims=True))
            return (weights / weights.sum(1, keepdims=True)) @ vectors
        return predict
    return fit


def fit_bridge(config: BridgeConfig) -> Fit:
    def fit(tags: Sequence[str], vectors: np.ndarray, source: WordLlamaSpace) -> Predict:
        bridge = WordBridge.fit(tags, vectors, source, config)
        return lambda words: bridge.predict(words)[0]
    return fit


def fit_space(config: BridgeConfig) -> Fit:
    """The product's path: a BridgedSpace over the fitting tags (their table), words
    embedded as typed tags are (table singular/plural forms, phrases word by word)."""
    def fit(tags: Sequence[str], vectors: np.ndarray, source: WordLlamaSpace) -> Predict:
        table = TableSpace(WordSpaceInfo("table", vectors.shape[1]), tags, vectors)
        space = BridgedSpace(table, lambda: WordBridge.fit(tags, vectors, source, config))

        def predict(words: Sequence[str]) -> np.ndarray:
            embedded, found = space.embed(words)
            if not found.all():
                raise SystemExit(f"the bridged space embedded only {int(found.sum())} of {len(words)} words")
            return embedded
        return predict
    return fit


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    fit: Fit


METHODS = [
    Method("ridge", "ridge, WordLlama of the word (lam 1)", fit_ridge(1.0, match_norm=False)),
    Method("ridge-norm", "ridge + norm matching", fit_ridge(1.0, match_norm=True)),
    Method("procrustes", "orthogonal Procrustes", fit_procrustes),
    Method("attention", "softmax attention over the table (tau 0.05)", fit_attention(0.05)),
    Method("ridge-2view", "ridge, word + Capitalised, norm matching (lam 10)", fit_bridge(BridgeConfig(rbf=0.0))),
    Method("krr-word", "kernel ridge, word only, norm matching", fit_bridge(BridgeConfig(capitalised=False))),
    Method("krr-raw", "kernel ridge, word + Capitalised, no norm matching", fit_bridge(BridgeConfig(match_norm=False))),
    Method("krr", "kernel ridge, word + Capitalised, norm matching", fit_bridge(BridgeConfig())),
    Method("shipped", "**the shipped space: the above + the table's singular/plural, phrases per word**",
           fit_space(BridgeConfig())),
]


# --- measurement --------------------------------------------------------------------------

def principal_vectors(vectors: np.ndarray, images: int = 300, k: int = 7, mix: int = 4, noise: float = 0.5,
                      seed: int = 1) -> np.ndarray:
    """(images, k, D) "realistic" principal vectors (see the module doc)."""
    rng = np.random.default_rng(seed)
    n, d = vectors.shape
    neighbours = np.argsort(-(vectors @ vectors.T), axis=1)[:, :mix]
    seeds = rng.integers(0, n, (images, k))
    weights = rng.dirichlet(np.ones(mix), (images, k))
    mixed = np.einsum("ikm,ikmd->ikd", weights, vectors[neighbours[seeds]])
    mixed = unit_rows(mixed.reshape(-1, d)).reshape(images, k, d)
    jitter = rng.normal(size=mixed.shape)
    return mixed + noise * jitter / np.linalg.norm(jitter, axis=-1, keepdims=True)


def score_spearman(predicted: np.ndarray, true: np.ndarray, principal: np.ndarray) -> float:
    """Mean over images of the Spearman correlation of the tags' max-over-k scores
    (float scores: no ties, so ranks are an argsort of an argsort)."""
    scores = [np.einsum("ikd,nd->ikn", principal, unit_rows(v)).max(1) for v in (true, predicted)]
    a, b = (s.argsort(1).argsort(1).astype(np.float64) for s in scores)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    return float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean())


def fidelity(predicted: np.ndarray, true: np.ndarray, principal: np.ndarray,
             rows: np.ndarray | None = None) -> dict[str, float]:
    """Over ``rows`` (default: all) of ``true``, predicted in that order: cos, top-1 and
    top-5 (the true tag among all of ``true``), and Spearman of their scores."""
    rows = np.arange(len(true)) if rows is None else rows
    predicted = unit_rows(predicted)
    sims = predicted @ true.T
    own = sims[np.arange(len(rows)), rows]
    rank = (sims > own[:, None]).sum(1)
    return {"cos": float(own.mean()), "top1": float((rank < 1).mean()), "top5": float((rank < 5).mean()),
            "spearman": score_spearman(predicted, true[rows], principal)}


def held_out(method: Method, tags: list[str], vectors: np.ndarray, source: WordLlamaSpace, folds: int,
             seed: int = 0) -> np.ndarray:
    """Each tag's vector predicted by the map fitted on the other folds."""
    order = np.random.default_rng(seed).permutation(len(tags))
    out = np.zeros_like(vectors)
    for fold in range(folds):
        test = order[fold::folds]
        train = np.setdiff1d(np.arange(len(tags)), test)
        predict = method.fit([tags[i] for i in train], vectors[train], source)
        out[test] = predict([tags[i] for i in test])
    return out


def by_size(tags: list[str], vectors: np.ndarray, source: WordLlamaSpace, sizes: Sequence[int],
            principal: np.ndarray) -> list[dict]:
    """The shipped map fitted on ``size`` random tags, measured on all the others."""
    rows = []
    order = np.random.default_rng(2).permutation(len(tags))
    for size in sizes:
        train, test = order[:size], order[size:]
        predict = fit_space(BridgeConfig())([tags[i] for i in train], vectors[train], source)
        scores = fidelity(predict([tags[i] for i in test]), vectors, principal, rows=test)
        rows.append({"tags": size, **scores})
    return rows


def markdown(rows: list[dict], first: str) -> str:
    lines = [f"| {first} | NUS-WIDE cos | top-1 | top-5 | Spearman | COCO cos | top-1 | top-5 | Spearman |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row[s][m]:.3f}" if s in row else "" for s in ("nus", "coco")
                 for m in ("cos", "top1", "top5", "spearman")]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=ROOT.parent / "shared" / "reference" / "zs_sdl",
                        help="the folder with NUS_WIDE/ and COCO/ (the authors' data files)")
    parser.add_argument("--methods", default=",".join(m.name for m in METHODS),
                        help="comma-separated, of: " + ", ".join(m.name for m in METHODS))
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--sizes", action="store_true", help="also: the shipped map by table size")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # before WordLlama's import sets the root logger to INFO
    known = {m.name: m for m in METHODS}
    chosen = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(known)}")
    if not (args.reference / "NUS_WIDE").is_dir() or not (args.reference / "COCO").is_dir():
        parser.error(f"{args.reference}: no NUS_WIDE/ and COCO/ folders (the authors' data files)")
    tags, nus, names, coco = read_reference(args.reference)
    source = load_word_space("wordllama")
    nus_principal, coco_principal = principal_vectors(nus), principal_vectors(coco, mix=3, seed=2)
    fit_tags = [i for i, t in enumerate(tags) if t not in set(names)]
    rows = []
    for name in chosen:
        method = known[name]
        nus_pred = held_out(method, tags, nus, source, args.folds)
        coco_pred = method.fit([tags[i] for i in fit_tags], nus[fit_tags], source)(names)
        rows.append({"method": name, "label": method.label, "nus": fidelity(nus_pred, nus, nus_principal),
                     "coco": fidelity(coco_pred, coco, coco_principal)})
    sizes = by_size(tags, nus, source, (100, MIN_BRIDGE_TAGS, 400, 800), nus_principal) if args.sizes else []
    if args.json:
        print(json.dumps({"reference": REFERENCE, "folds": args.folds, "methods": rows, "sizes": sizes}, indent=2))
        return 0
    print(markdown(rows, "method"))
    print(f"\nreference (the issue): ridge from WordLlama, held out: cos {REFERENCE['cos']}, "
          f"top-1 {REFERENCE['top1']}, top-5 {REFERENCE['top5']}")
    if sizes:
        print("\n| tags fitted on | cos | top-1 | top-5 | Spearman |\n|---|---|---|---|---|")
        for row in sizes:
            print(f"| {row['tags']} | {row['cos']:.3f} | {row['top1']:.3f} | {row['top5']:.3f} | "
                  f"{row['spearman']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Any model on NUS-WIDE with the paper's protocol, in one command, with the paper's numbers beside.

``python -m train evaluate --checkpoint NAME_OR_PATH --data nus-wide:ROOT`` ranks the
1006 tags (925 seen, 81 unseen) on every present, readable test image with a label:
ZSL ranks the 81 concepts on images with a concept, GZSL all 1006 on images with any
label. Tags the model's vocabulary lacks are embedded in its word space; a tag with no
vector there ranks last (and is listed). Backbone outputs are cached per image, keyed by
the backbone's weights and preprocessing: a second run with another head (K, word space)
on the same backbone, or another tag set, does not run the backbone again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sdl_core.checkpoint import hash_tensors
from sdl_core.model import PrincipalVectorModel, SDLModel
from sdl_core.scoring import score_tags
from sdl_core.tagger import Tagger
from sdl_core.vocab import Vocabulary
from sdl_core.wordvec import WordSpace

from .backbones import head_vectors, pooled_features
from .errors import DataError
from .distributed import resolve_device
from .features import cached_rows, default_cache_dir
from .metrics import KS, SettingResult, evaluate_zsl_gzsl, results_to_dict
from .nus_wide import parse_spec, read_nus_wide
from .nus_wide_prepare import authors_differences

log = logging.getLogger(__name__)

#: SDL (K = 7) on NUS-WIDE, ICCV 2021 (fractions; the paper prints percent).
PAPER = {"zsl": {"mAP": 0.259, "F1@3": 0.305, "F1@5": 0.278},
         "gzsl": {"mAP": 0.121, "F1@3": 0.185, "F1@5": 0.210}}
PAPER_NAME = "SDL (K=7), Ben-Cohen et al., ICCV 2021"
_SCORE_CHUNK = 4096


@dataclass
class NusEvaluation:
    model: str
    data: str
    results: dict[str, SettingResult]
    images: dict[str, int]
    tags_without_vector: list[str] = field(default_factory=list)
    not_zero_shot: list[str] = field(default_factory=list)
    split_warnings: list[str] = field(default_factory=list)
    cache: str = ""

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data,
                "protocol": "NUS-WIDE test; 925 seen / 81 unseen tags; ZSL ranks the 81 on images with one, "
                            "GZSL all 1006 on images with any label",
                "images": self.images, "results": results_to_dict(self.results),
                "paper": {"name": PAPER_NAME, **PAPER}, "tags_without_vector": self.tags_without_vector,
                "unseen_tags_the_model_was_trained_on": self.not_zero_shot,
                "split_warnings": self.split_warnings, "features_cache": self.cache}


def load_model(name_or_path: str, word_space: str | None = None, authors_data: str | None = None,
               device: torch.device | str = "cpu") -> tuple[PrincipalVectorModel, Vocabulary, WordSpace, str]:
    """Whatever sdl_core loads: a registered name, one of our checkpoints, the authors' .pth."""
    tagger = Tagger.from_pretrained(name_or_path, data_dir=authors_data, word_space=word_space, device=str(device))
    return tagger.model, tagger.vocabulary, tagger.word_space, tagger.name


def tag_vectors_for(tags: list[str], vocab: Vocabulary, space: WordSpace) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) vectors for ``tags``: the model's own where its vocabulary has the tag, else
    embedded in its word space; and which tags have one."""
    vectors = np.zeros((len(tags), vocab.dim), dtype=np.float32)
    found = np.zeros(len(tags), dtype=bool)
    rest = []
    for i, tag in enumerate(tags):
        j = vocab.index(tag)
        if j is None:
            rest.append(i)
        else:
            vectors[i], found[i] = vocab.vectors[j], True
    if rest:
        embedded, ok = space.embed([tags[i] for i in rest])
        vectors[rest], found[rest] = embedded, ok
    return vectors, found


@dataclass
class _Encoder:
    """What is cached per image, how it is computed, and how it becomes principal vectors."""

    identity: str
    dim: int
    compute: Callable[[torch.Tensor], torch.Tensor]
    finish: Callable[[torch.Tensor], torch.Tensor]


def encoder_for(model: PrincipalVectorModel, amp: bool) -> _Encoder:
    """SDL models: pooled backbone features (keyed by the backbone's weights, so heads with
    another K or word space share them); other models: their principal vectors."""
    digest = hashlib.sha256()
    preprocess = json.loads(model.config.to_json())["preprocess"]
    if isinstance(model, SDLModel):
        hash_tensors(digest, model.backbone.state_dict())
        digest.update(json.dumps({"backbone": model.config.backbone, "preprocess": preprocess, "amp": amp},
                                 sort_keys=True).encode())
        return _Encoder(f"pooled-{model.config.backbone}-{digest.hexdigest()[:16]}", int(model.num_features),
                        lambda px: pooled_features(model, px), lambda rows: head_vectors(model, rows))
    hash_tensors(digest, model.state_dict())
    digest.update((model.config.to_json() + f"|amp={amp}").encode())
    k, d = model.config.k, model.config.d
    return _Encoder(f"vectors-{model.config.kind}-{digest.hexdigest()[:16]}", k * d,
                    lambda px: model.encode(px).vectors.flatten(1), lambda rows: rows.view(-1, k, d))


@torch.inference_mode()
def score_rows(model: PrincipalVectorModel, encoder: _Encoder, rows: torch.Tensor, tag_tensor: torch.Tensor,
               device: torch.device) -> torch.Tensor:
    """Scores (M, N) from cached rows, a chunk at a time on ``device``."""
    tag_tensor = tag_tensor.to(device)
    out = [score_tags(encoder.finish(rows[s:s + _SCORE_CHUNK].to(device)).float(), tag_tensor,
                      model.config.reduction)[0].cpu() for s in range(0, len(rows), _SCORE_CHUNK)]
    return torch.cat(out) if out else torch.zeros(0, len(tag_tensor))


def evaluate_nus_wide(model_spec: str, data: str, images_root: str | None = None, batch_size: int = 32,
                      device: str = "auto", workers: int | None = None, progress: bool = True,
                      cache_dir: str | None = None, amp: str = "auto", word_space: str | None = None,
                      authors_data: str | None = None) -> NusEvaluation:
    """The paper's ZSL and GZSL metrics of any model on a NUS-WIDE split (default: test)."""
    source = parse_spec(data, "test")
    nus = read_nus_wide(source.root, source.split, images_root)
    split_warnings = authors_differences(nus.split, authors_data) if authors_data else []
    images = nus.usable("any")
    target = resolve_device(device)
    use_amp = amp == "on" or (amp == "auto" and target.type == "cuda")
    if use_amp and target.type != "cuda":
        raise DataError("--amp on needs a CUDA device")
    model, vocab, space, name = load_model(model_spec, word_space, authors_data, target)
    model = model.eval().to(target)
    tags = list(nus.split.tags)
    vectors, found = tag_vectors_for(tags, vocab, space)
    missing_vec = [t for t, f in zip(tags, found) if not f]
    if missing_vec:
        log.warning("%d NUS-WIDE tags have no vector in %s and rank last: %s", len(missing_vec), space.info.name,
                    missing_vec[:10])
    trained_on = [t for t, s in zip(tags, nus.split.seen) if not s and vocab.index(t) is not None
                  and vocab.seen[vocab.index(t)]]
    if trained_on:
        log.warning("the model was trained on %d of the unseen concepts, so ZSL is not zero-shot for them: %s",
                    len(trained_on), trained_on[:10])
    encoder = encoder_for(model, use_amp)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    file = cache / f"nus-wide-{encoder.identity}.safetensors"
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if target.type == "cuda" else 0
    rows, ok = cached_rows(file, images.paths, encoder.compute, model.config.preprocess, encoder.dim, target,
                           batch_size, workers, progress, use_amp)
    scores = score_rows(model, encoder, rows[ok], torch.from_numpy(vectors), target).double()
    scores[:, torch.from_numpy(~found)] = -torch.inf
    targets = torch.from_numpy(images.targets)[ok]
    results = evaluate_zsl_gzsl(scores, targets, nus.split.seen)
    counts = {**{k: v for k, v in nus.counts.items() if k != "no_seen_label"},
              "unreadable": int((~ok).sum()), "evaluated": int(ok.sum()),
              "zsl_images": results["zsl"].images, "gzsl_images": results["gzsl"].images}
    return NusEvaluation(name, str(data), results, counts, missing_vec, trained_on, split_warnings, str(file))


def report_nus_wide(ev: NusEvaluation) -> str:
    """The printed table: our numbers and the paper's, in percent, and the image counts."""
    n = ev.images
    columns = ["mAP"] + [f"{m}@{k}" for k in KS for m in ("P", "R", "F1")]
    header = f"{'':<13}" + "".join(f"{c:>8}" for c in columns) + f"{'images':>9}{'labels':>8}"
    lines = [f"model {ev.model} on NUS-WIDE {ev.data}",
             f"images: {n['listed']:,} listed, {n['missing']:,} missing, {n['unreadable']:,} unreadable, "
             f"{n.get('no_any_label', 0):,} without any label; {n['evaluated']:,} evaluated",
             header, "-" * len(header)]
    for setting, res in ev.results.items():
        values = res.to_dict()
        cells = "".join(_percent(values.get(c)) for c in columns)
        lines.append(f"{setting.upper():<13}{cells}{res.images:>9,}{res.labels:>8}")
        paper = "".join(_percent(PAPER[setting].get(c)) for c in columns)
        lines.append(f"{'  paper':<13}{paper}")
    lines.append(f"paper: {PAPER_NAME} (it reports mAP and F1 only)")
    if ev.tags_without_vector:
        lines.append(f"{len(ev.tags_without_vector)} tags have no vector in the model's word space and rank last")
    if ev.not_zero_shot:
        lines.append(f"warning: the model was trained on {len(ev.not_zero_shot)} of the unseen concepts")
    lines += [f"warning: {w}" for w in ev.split_warnings]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return f"{'-' if value is None else f'{100 * value:.1f}':>8}"


def write_nus_json(ev: NusEvaluation, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ev.to_dict(), indent=2) + "\n")
    return path

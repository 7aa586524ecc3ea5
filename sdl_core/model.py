"""Principal-vector models. An image gives K vectors in a word space (B, K, D).

:class:`PrincipalVectorModel` is the contract (encode, tag-specific attention,
per-vector attention); :class:`SDLModel` is the paper's network: a timm backbone, global
average pooling and a bias-free ``Linear(C, K*D)`` read D-major (column k of the
authors' ``view(B, D, K)`` is principal vector k).

Because pooling and a bias-free linear map commute, applying the head at every
position of the last feature map gives local principal vectors whose spatial mean is
exactly the global ones: an exact attention map per principal vector and tag.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from .config import ModelConfig
from .errors import CheckpointError
from .files import load_torch_weights


@dataclass
class Encoded:
    """What one forward pass yields: principal vectors, and what the maps need."""

    vectors: torch.Tensor  # (B, K, D)
    local: torch.Tensor | None = None  # model-specific; see each model's attention methods


class PrincipalVectorModel(nn.Module, ABC):
    """Anything that maps images to K principal vectors in a word space."""

    config: ModelConfig
    #: Set on an inference copy only (:mod:`sdl_core.optimize`): runs the trunk's
    #: ``forward_features`` elsewhere (ONNX Runtime) with the same result.
    external_features: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def trunk(self) -> nn.Module | None:
        """The timm network whose ``forward_features`` is the heavy part, or None."""
        return None

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The trunk's last feature map (B, C, h, w)."""
        run = self.external_features
        return run(pixels) if run is not None else self.trunk.forward_features(pixels)

    @abstractmethod
    def encode(self, pixels: torch.Tensor, with_maps: bool = False) -> Encoded:
        """Principal vectors for a batch of preprocessed images (B, 3, S, S)."""

    def tag_maps(self, encoded: Encoded, tag_vectors: torch.Tensor) -> torch.Tensor:
        """Attention of each principal vector for each tag: (B, K, N, h, w).

        Every model here keeps per-cell principal vectors (B, K, D, h, w) in
        ``encoded.local``; a tag's map is their product with its word vector."""
        if encoded.local is None:
            raise ValueError("encode(..., with_maps=True) is needed for attention maps")
        return torch.einsum("bkdhw,nd->bknhw", encoded.local, tag_vectors.to(encoded.local.dtype))

    @abstractmethod
    def principal_maps(self, encoded: Encoded) -> torch.Tensor:
        """Where each principal vector looks, whatever the tag: (B, K, h, w)."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encode(pixels).vectors


class SDLModel(PrincipalVectorModel):
    """The SDL network: timm backbone -> feature map -> GAP -> Linear(C, K*D, bias=False)."""

    def __init__(self, config: ModelConfig, pretrained_backbone: str | Path | None = None) -> None:
        super().__init__()
        if config.kind != "sdl":
            raise ValueError(f"SDLModel needs a config of kind 'sdl', got {config.kind!r}")
        self.config = config
        try:
            self.backbone = timm.create_model(config.backbone, pretrained=False, num_classes=0, global_pool="")
        except RuntimeError as exc:
            raise CheckpointError(f"unknown timm backbone {config.backbone!r}: {exc}") from None
        if pretrained_backbone is not None:
            load_backbone_weights(self.backbone, pretrained_backbone)
        self.num_features = int(self.backbone.num_features)
        self.head = nn.Linear(self.num_features, config.k * config.d, bias=False)

    @property
    def trunk(self) -> nn.Module:
        return self.backbone

    @property
    def k(self) -> int:
        return self.config.k

    @property
    def d(self) -> int:
        return self.config.d

    def read_d_major(self, flat: torch.Tensor) -> torch.Tensor:
        """(B, K*D, ...) read as (B, D, K, ...) -> (B, K, D, ...)."""
        shape = flat.shape
        return flat.reshape(shape[0], self.d, self.k, *shape[2:]).transpose(1, 2)

    def encode(self, pixels: torch.Tensor, with_maps: bool = False) -> Encoded:
        features = self.features(pixels)  # (B, C, h, w)
        pooled = features.mean(dim=(2, 3))
        vectors = self.read_d_major(self.head(pooled))
        if not with_maps:
            return Encoded(vectors=vectors)
        weight = self.head.weight.view(self.head.out_features, self.num_features, 1, 1)
        local = self.read_d_major(nn.functional.conv2d(features, weight))  # (B, K, D, h, w)
        return Encoded(vectors=vectors, local=local)

    def principal_maps(self, encoded: Encoded) -> torch.Tensor:
        """Local vectors projected on their own global direction (mean = ||A_k||)."""
        if encoded.local is None:
            raise ValueError("encode(..., with_maps=True) is needed for attention maps")
        direction = nn.functional.normalize(encoded.vectors, dim=-1)
        return torch.einsum("bkdhw,bkd->bkhw", encoded.local, direction)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ImageNet weights into a headless timm backbone; classifier keys are skipped,
    any other mismatch is an error."""
    state = load_torch_weights(path, f"{path}: cannot load backbone weights")
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own or not _is_classifier_key(k)}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{path}: backbone weights do not match {type(backbone).__name__}: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    backbone.load_state_dict(state, strict=False)


def _is_classifier_key(key: str) -> bool:
    return key.split(".")[0] in {"fc", "classifier", "head", "last_linear"} or key.startswith("head.")

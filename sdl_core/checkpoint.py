"""Self-describing checkpoints, and the importer for the authors' released model.

Our format is one ``.safetensors`` file: tensors ``model.*`` (the network),
``vocab.vectors`` and ``vocab.seen``; metadata ``format``, ``config`` (JSON of
:class:`ModelConfig`) and ``vocab_tags`` (JSON list). Loading needs nothing but the
file, never unpickles, and is strict.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize

from .config import ModelConfig, PreprocessConfig
from .errors import CheckpointError, SDLError, VocabularyError
from .storage import write_bytes_atomically
from .vocab import Vocabulary
from .wordvec import AUTHORS_FASTTEXT

if TYPE_CHECKING:  # timm loads when a model is built: reading a checkpoint's or an index's file needs no timm
    from .model import PrincipalVectorModel, SDLModel

log = logging.getLogger(__name__)

FORMAT = "sdl-tagger"
FORMAT_VERSION = "1"


def save_checkpoint(model: PrincipalVectorModel, vocab: Vocabulary, path: str | Path) -> Path:
    """Write model weights, config and vocabulary into one safetensors file."""
    path = Path(path)
    if vocab.dim != model.config.d:
        raise CheckpointError(f"vocabulary vectors are {vocab.dim}-d but the model's word space is {model.config.d}-d")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors["vocab.vectors"] = torch.from_numpy(vocab.vectors.copy())
    tensors["vocab.seen"] = torch.from_numpy(vocab.seen.astype(np.uint8))
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "config": model.config.to_json(), "vocab_tags": json.dumps(vocab.tags, ensure_ascii=False)}
    # all or nothing: a full or read-only disk gives a StorageError and never half a checkpoint
    return write_bytes_atomically(path, serialize(tensors, metadata=metadata), "checkpoint")


def read_tagged_safetensors(path: Path, fmt: str, error: type[SDLError], what: str, noun: str,
                            hint: str = "") -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and tensors of a safetensors file whose metadata says ``format: fmt``.

    Shared by checkpoints and search indexes: one place turns a foreign, corrupt or
    truncated file into one readable ``error`` line (never a partial read); ``hint``
    follows the message for a corrupt file.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != fmt:
                raise error(f"{path.name}: not {what} (no 'format: {fmt}' metadata)")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except SDLError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise error(f"{path.name}: not a readable {noun} (corrupt, truncated or another format): {exc}{hint}") from None
    return meta, tensors


def hash_tensors(digest: "hashlib._Hash", state: dict[str, torch.Tensor]) -> None:
    """Feed every tensor (name, dtype, shape, bytes; in name order) to ``digest``: equal
    digests mean equal weights (search indexes and cached ONNX graphs are keyed by it)."""
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], Vocabulary]:
    """Config, model state dict and vocabulary from one of our checkpoint files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    meta, tensors = read_tagged_safetensors(path, FORMAT, CheckpointError, what="an SDL tagger checkpoint",
                                            noun="safetensors checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path.name}: checkpoint format version {meta.get('format_version')!r}; "
                              f"this version of sdl_core reads {FORMAT_VERSION!r}")
    try:
        config = ModelConfig.from_json(meta["config"])
        tags = json.loads(meta["vocab_tags"])
        vocab = Vocabulary(tags, tensors.pop("vocab.vectors").numpy(), tensors.pop("vocab.seen").numpy().astype(bool))
    except (KeyError, TypeError, ValueError, RecursionError) as exc:  # RecursionError: deeply nested JSON
        raise CheckpointError(f"{path.name}: checkpoint metadata is incomplete or invalid "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None
    except VocabularyError as exc:
        raise CheckpointError(f"{path.name}: its vocabulary is invalid: {exc}") from None
    if vocab.dim != config.d:
        raise CheckpointError(f"{path.name}: vocabulary is {vocab.dim}-d but the config says D={config.d}")
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return config, state, vocab


def _instantiate(config: ModelConfig) -> PrincipalVectorModel:
    """The (randomly initialised) model a config describes; a config it cannot build is a CheckpointError."""
    try:
        if config.kind == "sdl":
            from .model import SDLModel
            return SDLModel(config)
        if config.kind == "conse":
            from .conse import ConSEModel  # the offline default's family
            return ConSEModel(config)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"cannot build the {config.kind} model its config describes ({exc})") from None
    raise CheckpointError(f"unknown model kind {config.kind!r}")


def build_model(config: ModelConfig, state: dict[str, torch.Tensor] | None = None) -> PrincipalVectorModel:
    """Instantiate the model a config describes and load ``state`` strictly.

    With a ``state``, the model is first built on the meta device (shapes, no memory) and
    the state checked against it: a file whose config declares a huge K, D or class count
    is refused before anything is allocated."""
    what = f"{config.kind} model '{config.backbone}' (K={config.k}, D={config.d})"
    if state is not None:
        with torch.device("meta"):
            check_state_fits(_instantiate(config), state, what)
    model = _instantiate(config)
    if state is not None:
        load_state_strict(model, state, what=what)
    return model.eval()


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with a message that names what went wrong."""
    check_state_fits(model, state, what)
    model.load_state_dict(state, strict=True)


def check_state_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Every key of ``model`` in ``state`` with the same shape, and nothing else."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} with another shape (e.g. {wrong[:2]})")
        raise CheckpointError(f"weights do not fit the {what}: " + "; ".join(parts))


def load_checkpoint(path: str | Path) -> tuple[PrincipalVectorModel, Vocabulary]:
    config, state, vocab = read_checkpoint(path)
    try:
        return build_model(config, state), vocab
    except CheckpointError as exc:
        raise CheckpointError(f"{Path(path).name}: {exc}") from None


# --- the authors' released model -------------------------------------------------

#: The authors' NUS-WIDE model: TResNet-M, squash-resize to 224 with Pillow's default
#: (bicubic) filter, pixels / 255 and no mean/std.
OFFICIAL_PREPROCESS = PreprocessConfig(size=224, resize="squash", interpolation="bicubic")


def _one_line(exc: Exception) -> str:
    """The informative line of torch's long multi-line load errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "WeightsUnpickler error" in line:
            return line.split(" Please use")[0][:300]  # not torch's advice to allow-list the code
    return (lines[0] if lines else type(exc).__name__)[:300]


def official_key_to_timm(key: str) -> str:
    """Rename one key of the authors' TResNet state dict to timm's ``tresnet_m``.

    The authors wrap conv+norm as ``Sequential(conv, InPlaceABN)`` (``convN.0`` /
    ``convN.1``), anti-aliased ones once more (``convN.0.0`` / ``convN.0.1``), and
    downsample paths as ``downsample.1.0`` / ``downsample.1.1``; timm names them
    ``.conv`` and ``.bn`` and keeps the body under ``body.``.
    """
    parts = key.split(".")
    out: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        out.append(part)
        i += 1
        wraps_conv = re.fullmatch(r"conv\d+", part) is not None
        if part == "downsample" and i < len(parts):
            out.append(parts[i])  # position of the conv block inside the downsample path
            i += 1
            wraps_conv = True
        if wraps_conv and i + 1 < len(parts):
            if parts[i] == "0" and parts[i + 1].isdigit():
                i += 1  # the anti-alias wrapper: convN.0.<0|1>
            out.append("conv" if parts[i] == "0" else "bn")
            i += 1
    return "body." + ".".join(out)


def official_state_to_ours(state: dict[str, torch.Tensor], k: int, d: int) -> dict[str, torch.Tensor]:
    """Map the authors' state dict onto :class:`SDLModel` with a tresnet_m backbone."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "embedding.weight":
            if tuple(value.shape[:1]) != (k * d,):
                raise CheckpointError(f"embedding.weight has {value.shape[0]} rows, expected K*D = {k * d}")
            out["head.weight"] = value
            continue
        new = official_key_to_timm(key)
        if new.endswith(".bn.weight"):
            value = value.abs() + 1e-5  # InPlaceABN stores signed weights; BatchNorm wants |w| + eps
        out["backbone." + new] = value
    return out


def import_official(checkpoint: str | Path, data_dir: str | Path, out: str | Path | None = None,
                    k: int | None = None) -> tuple[SDLModel, Vocabulary]:
    """Convert ``NUS_mtresnet_224.pth`` + the authors' data folder into our model.

    The .pth is read with ``weights_only=True``: a file that tries to run code is refused.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such file")
    try:
        raw = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"{checkpoint.name}: refused or unreadable with weights_only=True "
                              f"(not a plain PyTorch checkpoint, or it tries to run code): {_one_line(exc)}") from None
    state = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(state, dict) or "embedding.weight" not in state:
        raise CheckpointError(f"{checkpoint.name}: expected the authors' dict with 'model' holding "
                              "'embedding.weight' (the SDL head)")
    not_tensors = [str(key) for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{checkpoint.name}: model.{not_tensors[0]} is not a tensor "
                              f"({len(not_tensors)} such entries): not the authors' checkpoint")
    vocab = Vocabulary.from_authors_folder(data_dir)
    num_classes = raw.get("num_classes")
    if num_classes is not None and not isinstance(num_classes, int):
        raise CheckpointError(f"{checkpoint.name}: num_classes is {str(num_classes)[:50]!r}, not a number")
    if num_classes is not None and num_classes != len(vocab):
        raise CheckpointError(f"{checkpoint.name} was trained on {num_classes} classes, "
                              f"but {data_dir} has {len(vocab)}")
    d = vocab.dim
    rows = int(state["embedding.weight"].shape[0])
    if k is None:
        if rows % d:
            raise CheckpointError(f"embedding.weight has {rows} rows, not a multiple of D={d}")
        k = rows // d
    config = ModelConfig(kind="sdl", backbone="tresnet_m", k=k, word_space=AUTHORS_FASTTEXT,
                         preprocess=OFFICIAL_PREPROCESS, reduction="max", name="sdl_tresnet_m.nus_wide",
                         description="The authors' SDL model (ICCV 2021), NUS-WIDE 925 seen / 81 unseen, K=7")
    from .model import SDLModel
    model = SDLModel(config)
    ours = official_state_to_ours(state, k, d)
    for key in model.state_dict():  # BatchNorm's step counter has no InPlaceABN counterpart
        if key.endswith("num_batches_tracked") and key not in ours:
            ours[key] = torch.tensor(0, dtype=torch.long)
    load_state_strict(model, ours, what="tresnet_m SDL model")
    model.eval()
    if out is not None:
        save_checkpoint(model, vocab, out)
    return model, vocab

"""Our self-describing checkpoint format (the authors' format is :mod:`sdl_core.official`).

Our format is one ``.safetensors`` file: tensors ``model.*`` (the network),
``vocab.vectors`` and ``vocab.seen``; metadata ``format``, ``config`` (JSON of
:class:`ModelConfig`) and ``vocab_tags`` (JSON list); optionally ``vocab_trained_names`` and
``vocab_evidence_classes`` (JSON; see :class:`Vocabulary`). Loading needs nothing but the
file, never unpickles, and is strict.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize

from .config import ModelConfig
from .errors import CheckpointError, SDLError, VocabularyError
from .files import write_bytes
from .vocab import Vocabulary

if TYPE_CHECKING:  # timm loads when a model is built: reading a checkpoint's or an index's file needs no timm
    from .model import PrincipalVectorModel

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
    if vocab.trained_names:  # optional parts of a vocabulary (the default model's)
        metadata["vocab_trained_names"] = json.dumps(sorted(vocab.trained_names), ensure_ascii=False)
    if vocab.evidence_classes:
        metadata["vocab_evidence_classes"] = json.dumps(vocab.evidence_classes, ensure_ascii=False)
    # all or nothing: a full or read-only disk gives a StorageError and never half a checkpoint
    return write_bytes(path, serialize(tensors, metadata=metadata), "checkpoint")


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
        vocab = Vocabulary(tags, tensors.pop("vocab.vectors").numpy(), tensors.pop("vocab.seen").numpy().astype(bool),
                           frozenset(json.loads(meta.get("vocab_trained_names", "[]"))),
                           dict(json.loads(meta.get("vocab_evidence_classes", "{}"))))
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

"""Writing and reading files safely: the two rules every file the library touches follows.

- A file is written under a temporary name beside its target and renamed over it only
  once it is complete (one atomic ``os.replace``): a crash or Ctrl-C never leaves half a
  checkpoint, index or graph under the real name.
- A PyTorch file is only read with ``torch.load(weights_only=True)``: a file that tries
  to run code is refused, and every way torch fails becomes one readable error line.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

from .errors import CheckpointError, SDLError


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; it replaces ``path`` when the block
    ends without error and is deleted otherwise. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_bytes(path: Path, error: type[SDLError]) -> bytes:
    """The file's bytes; a missing or unreadable file raises ``error`` naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The informative line of torch's long multi-line load errors (not its advice to
    allow-list the code a file wants to run)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:  # torch words it "Unsupported global" or "unsupported GLOBAL" by version
        if "unsupported global" in line.lower() or "WeightsUnpickler error" in line:
            return line.split(" Please use")[0][:limit]
    first = lines[0] if lines else type(exc).__name__
    return first.split(". ")[0][:limit]  # e.g. miniz's "...central directory. This is an internal error..."


def load_torch_weights(path: str | Path, message: str, error: type[SDLError] = CheckpointError) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure (a bad file, a file
    that tries to run code) raises ``error`` with ``"{message}: {the reason}"``."""
    import torch
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise error(f"{message}: {one_line(exc)}") from None

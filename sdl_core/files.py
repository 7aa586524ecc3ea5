"""Writing and reading files safely: the rules every file the library touches follows.

- A file is written under a temporary name beside its target and renamed over it only
  once it is complete (one atomic ``os.replace``): a crash, Ctrl-C, a full or a read-only
  disk never leaves half a checkpoint, index or graph under the real name, and the file
  already there stays whole. A disk error becomes one :class:`StorageError` line that
  says what happened (disk full, read-only, no permission).
- Writers that report disk errors in their own way (safetensors, ``torch.save``)
  serialise in memory and go through :func:`write_bytes`, so the error is the disk's.
- Two processes never write one file at once where it matters (:func:`exclusive`).
- A PyTorch file is only read with ``torch.load(weights_only=True)``: a file that tries
  to run code is refused, and every way torch fails becomes one readable error line.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

from .errors import CheckpointError, SDLError, StorageError


_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def os_error_reason(exc: OSError) -> str:
    """A short, plain reason for a failed write."""
    return _REASONS.get(exc.errno or 0) or exc.strerror or type(exc).__name__


@contextlib.contextmanager
def atomic_write(path: str | Path, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; it replaces ``path`` when the block
    ends without error and is deleted otherwise. The folder is created if needed. An
    ``OSError`` (creating the folder, writing in the block, renaming) becomes a
    ``StorageError`` naming ``what`` and the reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        keep = " (the existing file is unchanged)" if path.is_file() else ""
        raise StorageError(f"cannot write the {what} {path}: {os_error_reason(exc)}{keep}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, what: str = "file") -> Path:
    """Write ``data`` to ``path`` whole (flushed to disk) or not at all; see :func:`atomic_write`."""
    with atomic_write(path, what) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


@contextlib.contextmanager
def exclusive(path: str | Path, what: str, error: type[SDLError] = StorageError) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` (a hidden ``.NAME.lock`` beside it) or fail at
    once with ``error``: a second writer gets a clear message instead of racing the first."""
    from filelock import FileLock, Timeout

    path = Path(path)
    lock = FileLock(str(path.with_name(f".{path.name}.lock")), timeout=0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise error(f"another process is writing the {what} {path} right now; "
                    "wait for it to finish, then run this again") from None
    except OSError as exc:
        raise error(f"cannot write the {what} {path}: {os_error_reason(exc)}") from None
    try:
        yield
    finally:
        lock.release()


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

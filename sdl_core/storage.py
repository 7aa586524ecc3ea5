"""Writing files so that a full or read-only disk never leaves half a file behind, and
two processes never write the same file at once.

Files are serialised in memory first, written to a hidden temporary file beside the
target, flushed to disk and renamed over it: the old file stays whole until the new
one is complete, and a failed write removes its temporary file. Disk errors become a
:class:`StorageError` that says what happened (disk full, read-only, no permission).
"""
from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import Iterator

from .errors import SDLError, StorageError

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


def write_bytes_atomically(path: str | Path, data: bytes, what: str = "file") -> Path:
    """Write ``data`` to ``path`` all at once or not at all (an existing file is kept on failure)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        keep = " (the existing file is unchanged)" if path.is_file() else ""
        raise StorageError(f"cannot write the {what} {path}: {os_error_reason(exc)}{keep}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


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

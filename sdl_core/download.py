"""Fetching a file over HTTP(S) with a checksum, for users with a network.

Nothing in the library downloads on its own: this runs only when a user asks (e.g.
``python -m sdl_core download-official DIR``). A file is written under a temporary name
and renamed only after its SHA-256 is checked, so a broken download never looks finished.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import SDLError
from .files import atomic_write

log = logging.getLogger(__name__)


class DownloadError(SDLError):
    """A download failed or its checksum did not match."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    name: str
    sha256: str | None  # None: not published; validated after download instead


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: RemoteFile, folder: Path, timeout: float = 60.0) -> Path:
    """Download ``remote`` into ``folder`` (skipped when a verified copy is there)."""
    target = Path(folder) / remote.name
    if target.is_file() and (remote.sha256 is None or sha256_of(target) == remote.sha256):
        log.info("%s: already there", target)
        return target
    with atomic_write(target) as part:
        try:
            with urllib.request.urlopen(remote.url, timeout=timeout) as response, part.open("wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DownloadError(f"cannot download {remote.name} from {remote.url}: {_reason(exc)}. Without a "
                                f"network, download it elsewhere and put it at {target}") from None
        actual = sha256_of(part)
        if remote.sha256 is not None and actual != remote.sha256:
            raise DownloadError(f"{remote.name}: checksum mismatch (got {actual}, expected {remote.sha256}); "
                                "the file was deleted")
    log.info("%s: sha256 %s", target, actual)
    return target


def _reason(exc: BaseException) -> object:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return getattr(exc, "reason", exc)

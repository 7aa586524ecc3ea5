"""Fetching the authors' released NUS-WIDE model and data files (for users with a network).

Nothing in the library downloads on its own: this runs only when a user asks
(``python -m sdl_core download-official DIR``). Files land under a ``.part`` name
and are renamed only after their SHA-256 is checked, so a broken download never
looks finished. The authors published no checksum for their ``.pth``: we print
its SHA-256 and then validate it structurally by importing it strictly.
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

log = logging.getLogger(__name__)


class DownloadError(SDLError):
    """A download failed or its checksum did not match."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    name: str
    sha256: str | None  # None: not published; validated after download instead


_REPO_DATA = "https://raw.githubusercontent.com/Alibaba-MIIL/ZS_SDL/main/data/NUS_WIDE/"
#: The authors' NUS-WIDE vocabulary files (checksums of the published files).
OFFICIAL_DATA = (
    RemoteFile(_REPO_DATA + "classes.pickle", "classes.pickle",
               "a8abc64a04f3810afe6357a9a8fa104aec78f590727a607c7557e33c13af6087"),
    RemoteFile(_REPO_DATA + "unseen_classes.pickle", "unseen_classes.pickle",
               "d2790e216a90629a07f5caf1534233a0dac7260f98b3d143b232b1648762e153"),
    RemoteFile(_REPO_DATA + "wordvec_array.pickle", "wordvec_array.pickle",
               "6f8d90a5b6e68ba58bfe81c23bf0c4ad8919628660fac1f7de7d34eb8d085e5a"),
)
#: The authors' model (their README's link without its expired signature).
OFFICIAL_MODEL = RemoteFile("https://miil-public-eu.oss-eu-central-1.aliyuncs.com/model-zoo/ZSL/NUS_mtresnet_224.pth",
                            "NUS_mtresnet_224.pth", None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: RemoteFile, folder: Path, timeout: float = 60.0) -> Path:
    """Download ``remote`` into ``folder`` (skipped when a verified copy is there)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.name
    if target.is_file() and (remote.sha256 is None or sha256_of(target) == remote.sha256):
        log.info("%s: already there", target)
        return target
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as response, part.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", exc)
        raise DownloadError(f"cannot download {remote.name} from {remote.url}: {reason}. Without a network, "
                            f"download it elsewhere and put it at {target}") from None
    actual = sha256_of(part)
    if remote.sha256 is not None and actual != remote.sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{remote.name}: checksum mismatch (got {actual}, expected {remote.sha256}); "
                            "the file was deleted")
    part.replace(target)
    log.info("%s: sha256 %s", target, actual)
    return target


def download_official(folder: str | Path, timeout: float = 60.0) -> tuple[Path, Path]:
    """Fetch the authors' data files and model into ``folder``; returns (model, data_dir)."""
    folder = Path(folder)
    for remote in OFFICIAL_DATA:
        fetch(remote, folder, timeout)
    return fetch(OFFICIAL_MODEL, folder, timeout), folder

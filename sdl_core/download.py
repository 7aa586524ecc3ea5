"""Fetching one published file: mirror and offline settings, checks, progress, clear errors.

Nothing in the library downloads unless a user names something to fetch (a pretrained
model, ``download-official``). The transfer itself is ``pooch``'s (requests underneath):
it streams into a temporary file beside the target, checks the SHA-256 where one is
published, and renames the file into place only then, so an interrupted or refused
download never leaves a file under the real name. What this module adds is the
project's settings and its errors:

- ``SDL_TAGGER_MIRROR``: a base URL (or a local folder) every file is fetched from
  instead, under its own file name: ``{mirror}/NUS_mtresnet_224.pth``.
- ``SDL_TAGGER_OFFLINE=1``: never touch the network.
- ``SDL_TAGGER_TIMEOUT``: seconds to wait for a server to connect or to send the next
  bytes (default 60), so a server that accepts and never answers fails instead of hanging.

A server that answers with a web page (an error or login page served with status 200)
is refused by its first byte: none of the binary files fetched here starts with ``<``.
What is fetched, and from where, is the caller's: the authors' files are listed in
:mod:`sdl_core.official`, the pretrained names in :mod:`sdl_core.pretrained`.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .cache import cache_os_error
from .errors import DownloadError, OfflineError

log = logging.getLogger(__name__)

ENV_MIRROR = "SDL_TAGGER_MIRROR"
ENV_OFFLINE = "SDL_TAGGER_OFFLINE"
ENV_TIMEOUT = "SDL_TAGGER_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
#: Bytes per read while streaming (pooch's default of 1 KiB means a flush per KiB).
CHUNK_BYTES = 1 << 20
_TRUE = ("1", "true", "yes", "on")
#: OS errors that mean the cache folder cannot take the file (full, read-only).
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR)


@dataclass(frozen=True)
class RemoteFile:
    """A published file: where it is, its name on disk, its SHA-256 where the publisher
    gave one (None: checked another way after download), and its size in bytes where known
    (shown before a download; approximate where the file has no published checksum)."""

    url: str
    name: str
    sha256: str | None
    size: int | None = None


def offline() -> bool:
    """Whether ``SDL_TAGGER_OFFLINE`` forbids the network."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in _TRUE


def timeout_s() -> float:
    """``SDL_TAGGER_TIMEOUT`` in seconds (default 60)."""
    text = os.environ.get(ENV_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DownloadError(f"{ENV_TIMEOUT}={text!r} is not a positive number of seconds")
    return value


def source_url(remote: RemoteFile) -> str:
    """Where ``remote`` is fetched from: the mirror's copy when ``SDL_TAGGER_MIRROR`` is set."""
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if not mirror:
        return remote.url
    return f"{mirror.rstrip('/')}/{remote.name}"


def _local_path(url: str) -> Path | None:
    """The file a ``file://`` URL or a plain path names; None for a network URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https", "ftp", "sftp"):
        return None
    return Path(url)


def _refuse_web_page(path: Path, remote: RemoteFile, url: str) -> None:
    """A web page or an XML error document served in place of a binary file."""
    with path.open("rb") as fh:
        head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        snippet = head[:40].decode("utf-8", "replace").split("\n")[0]
        raise DownloadError(f"{url} sent a web page or error document instead of {remote.name} "
                            f"(it starts with {snippet!r}); check the URL or {ENV_MIRROR}")


class _Downloader:
    """A pooch downloader: HTTP(S) through pooch with a timeout and a named progress bar,
    or a copy from a local mirror folder; then the web-page check."""

    def __init__(self, remote: RemoteFile, timeout: float, progress: bool) -> None:
        self.remote = remote
        self.timeout = timeout
        self.progress = progress

    def __call__(self, url: str, output_file: str, pooch_obj: object) -> None:
        local = _local_path(url)
        if local is not None:
            try:
                shutil.copyfile(local, output_file)
            except FileNotFoundError:
                raise DownloadError(f"{local}: no such file in the mirror folder ({ENV_MIRROR})") from None
        else:
            self._http(url, output_file, pooch_obj)
        _refuse_web_page(Path(output_file), self.remote, url)

    def _http(self, url: str, output_file: str, pooch_obj: object) -> None:
        import pooch
        from tqdm import tqdm
        bar = tqdm(desc=self.remote.name, total=self.remote.size or 1, unit="B", unit_scale=True,
                   unit_divisor=1024, leave=False, disable=not self.progress)
        try:
            pooch.HTTPDownloader(progressbar=bar if self.progress else False, timeout=self.timeout,
                                 chunk_size=CHUNK_BYTES)(url, output_file, pooch_obj)
        finally:
            bar.close()


def fetch_file(remote: RemoteFile, folder: str | Path, progress: bool = True) -> Path:
    """``remote`` as a checked file in ``folder`` (downloaded unless a verified copy is there).

    Raises OfflineError when it must be downloaded under ``SDL_TAGGER_OFFLINE``,
    DownloadError for anything the server or the network did wrong, CacheError when the
    folder cannot be written; in every case no file is left under the target's name.
    """
    import pooch

    folder = Path(folder)
    url = source_url(remote)
    known = f"sha256:{remote.sha256}" if remote.sha256 else None
    target = folder / remote.name
    if target.is_file() and (known is None or sha256_of(target) == remote.sha256):
        return target
    if offline():
        raise OfflineError(f"{remote.name} must be downloaded from {url}, but {ENV_OFFLINE} is set")
    pooch.get_logger().setLevel(logging.WARNING)  # pooch's documented switch for its own chatter
    log.info("downloading %s from %s", remote.name, url)
    try:
        pooch.retrieve(url, known_hash=known, fname=remote.name, path=folder,
                       downloader=_Downloader(remote, timeout_s(), progress))
    except Exception as exc:  # noqa: BLE001 - requests, pooch and the OS raise many types; one line each
        raise _translate(exc, remote, url, folder) from None
    return target


def _translate(exc: Exception, remote: RemoteFile, url: str, folder: Path) -> Exception:
    """One user-facing line for whatever the download raised."""
    import requests

    if isinstance(exc, DownloadError):
        return exc
    host = urlparse(url).netloc or url
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        why = f"HTTP {exc.response.status_code} {exc.response.reason or ''}".strip()
    elif isinstance(exc, requests.Timeout):
        why = f"no answer from {host} within {timeout_s():g} s ({ENV_TIMEOUT})"
    elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
        why = "the connection broke off before the whole file arrived"
    elif isinstance(exc, requests.ConnectionError):
        why = f"cannot connect to {host}"
    elif isinstance(exc, ValueError):
        return DownloadError(f"{remote.name} from {url}: checksum mismatch (expected sha256 {remote.sha256}); "
                             "the file was deleted")
    elif isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS):
        return cache_os_error(exc, folder)
    else:
        why = f"{type(exc).__name__}: {exc}"
    return DownloadError(f"cannot download {remote.name} from {url}: {why}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: RemoteFile, folder: str | Path, progress: bool = False) -> Path:
    """:func:`fetch_file` into a folder of the user's (``download-official``): its errors say
    where to put a copy fetched elsewhere."""
    try:
        return fetch_file(remote, folder, progress=progress)
    except DownloadError as exc:
        raise type(exc)(f"{exc}. Without a network, download it elsewhere and put it at "
                        f"{Path(folder) / remote.name}") from None

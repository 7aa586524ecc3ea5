"""Pretrained models by name: downloaded once, checked, converted to our format, cached.

Like timm's and open_clip's pretrained tables: a name (with short aliases) stands for
published files and a way to turn them into one of our ``.safetensors`` checkpoints.
:func:`ensure_pretrained` does that on first use and returns the cached checkpoint;
after that it returns the cached file without touching the network.

Safety of the cache:
- downloads and the conversion happen in a private staging folder beside the result,
  and only the finished checkpoint is renamed into place: an interrupted, refused or
  failed download leaves nothing under the real name (a staging folder left by a killed
  process is removed by the next download of that model);
- a file lock per model makes a second process wait for the first one's download and
  then use its result, instead of both writing the same files.

Settings (see :mod:`sdl_core.fetch` and :mod:`sdl_core.cache`): ``SDL_TAGGER_CACHE``,
``SDL_TAGGER_MIRROR``, ``SDL_TAGGER_OFFLINE``, ``SDL_TAGGER_TIMEOUT``. Nothing here
imports torch until a model is converted: the demo asks which models are cached, and
how big their downloads are, before any model loads.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cache import PRETRAINED, cache_dir, cache_os_error
from .errors import DownloadError, ModelNotFoundError, OfflineError, SDLError, StorageError
from .download import ENV_MIRROR, ENV_OFFLINE, RemoteFile, fetch_file, offline
from .official import OFFICIAL_DATA, OFFICIAL_MODEL

log = logging.getLogger(__name__)

#: Our checkpoints' suffix; a cached model is ``<cache>/pretrained/<name>.safetensors``.
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class PretrainedModel:
    """Published files and how they become our checkpoint.

    ``convert(folder, out)`` reads the downloaded files (all in ``folder``, under their
    own names) and writes our checkpoint to ``out``; it raises SDLError for files that
    are not what they should be. ``manual`` tells a user without a network what to do.
    """

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    convert: Callable[[Path, Path], None]
    manual: str
    aliases: tuple[str, ...] = field(default=())

    @property
    def download_bytes(self) -> int:
        """The size of the first download (approximate where a size is not published)."""
        return sum(f.size or 0 for f in self.files)


def _convert_official(folder: Path, out: Path) -> None:
    from .official import import_official  # torch and timm load only to convert
    import_official(folder / OFFICIAL_MODEL.name, folder, out)


_OFFICIAL_FILES = ", ".join(f.name for f in (OFFICIAL_MODEL, *OFFICIAL_DATA))

_TABLE = (
    PretrainedModel(
        name="sdl_tresnet_m.nus_wide",
        description="The authors' SDL model (ICCV 2021): TResNet-M, K=7, NUS-WIDE 925 seen / 81 unseen tags",
        files=(*OFFICIAL_DATA, OFFICIAL_MODEL),  # the small, checksummed files first: fail before 135 MB
        convert=_convert_official,
        manual=(f"fetch {_OFFICIAL_FILES} on a machine with a network (python -m sdl_core download-official DIR), "
                "then run `python -m sdl_core import-official DIR/NUS_mtresnet_224.pth DIR model.safetensors` "
                "and pass --model model.safetensors"),
        aliases=("sdl_nus_wide",),
    ),
)
_BY_NAME = {m.name: m for m in _TABLE}
_ALIASES = {alias: m.name for m in _TABLE for alias in m.aliases}


def list_pretrained() -> list[str]:
    """Canonical names of the pretrained models (aliases not repeated)."""
    return sorted(_BY_NAME)


def resolve_pretrained(name: str) -> PretrainedModel | None:
    """The table entry a name or alias stands for; None for any other name."""
    if not isinstance(name, str):
        return None
    return _BY_NAME.get(_ALIASES.get(name, name))


def get_pretrained(name: str) -> PretrainedModel:
    entry = resolve_pretrained(name)
    if entry is None:
        raise ModelNotFoundError(f"no pretrained model named {name!r}; known: {', '.join(list_pretrained())}")
    return entry


def cached_path(name: str) -> Path:
    """Where the converted checkpoint of ``name`` is (or will be) cached."""
    return cache_dir(PRETRAINED) / f"{get_pretrained(name).name}{SUFFIX}"


def is_cached(name: str) -> bool:
    """Whether ``name`` loads without a download."""
    return cached_path(name).is_file()


def ensure_pretrained(name: str, progress: bool = True) -> Path:
    """The cached checkpoint of a pretrained model, downloading and converting it on first use.

    Raises OfflineError (not cached, ``SDL_TAGGER_OFFLINE`` set), DownloadError (the
    network or the server failed, or a file was not the published one), CacheError (the
    cache folder cannot be written), ModelNotFoundError (no such name).
    """
    entry = get_pretrained(name)
    final = cached_path(entry.name)
    if final.is_file():  # no lock needed to read a finished file: it only ever appears whole
        return final
    if offline():
        raise OfflineError(f"{entry.name} is not in the cache ({final}) and {ENV_OFFLINE} is set, so it cannot be "
                           f"downloaded. Unset {ENV_OFFLINE}, set {ENV_MIRROR} to a reachable copy, or {entry.manual}")
    from filelock import FileLock, Timeout

    folder = final.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f".{entry.name}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("another process is downloading %s; waiting for it", entry.name)
            lock.acquire()
    except OSError as exc:
        raise cache_os_error(exc, folder) from None
    try:
        if final.is_file():  # the other process finished it while we waited
            return final
        _download_and_convert(entry, final, progress)
    finally:
        lock.release()
    return final


def _download_and_convert(entry: PretrainedModel, final: Path, progress: bool) -> None:
    """Fetch every file into a staging folder, convert there, move only the result into place."""
    staging = final.parent / f".{entry.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # what a killed process left (we hold the lock)
    log.info("downloading %s (about %.0f MB) into %s", entry.name, entry.download_bytes / 1e6, final.parent)
    try:
        staging.mkdir()
        for remote in entry.files:
            fetch_file(remote, staging, progress=progress)
        converted = staging / f"{entry.name}{SUFFIX}"
        try:
            entry.convert(staging, converted)
        except (DownloadError, StorageError):  # the network's or the disk's fault, not the files'
            raise
        except SDLError as exc:
            raise DownloadError(f"{entry.name}: the downloaded files are not the published model ({exc}); "
                                "nothing was cached") from None
        converted.replace(final)
    except OSError as exc:
        raise cache_os_error(exc, final.parent) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("cached %s at %s", entry.name, final)


def describe(name: str) -> str:
    """One line for menus: the model, and whether using it means a download (and of what size)."""
    entry = get_pretrained(name)
    if is_cached(entry.name):
        return f"{entry.name} (cached)"
    return f"{entry.name} (download {entry.download_bytes / 1e6:.0f} MB on first use)"


def checkpoint_for(name: str, progress: bool = True) -> Path | None:
    """The local checkpoint a pretrained name (or alias) or an ``hf-hub:`` name stands for,
    fetched on first use; None for any other name (a path, a registered model).

    This is the resolver the model factory calls before it loads a checkpoint file."""
    from . import hub
    if hub.is_hub_name(name):
        return hub.hub_checkpoint(name, progress)
    if resolve_pretrained(name) is not None:
        return ensure_pretrained(name, progress)
    return None

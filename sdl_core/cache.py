"""The one cache root for everything the library writes: downloads, ONNX graphs, features.

``SDL_TAGGER_CACHE`` names it; otherwise it is the platform's user cache folder
(``platformdirs``: ``~/.cache/sdl-tagger`` on Linux, or under ``$XDG_CACHE_HOME``;
``~/Library/Caches/sdl-tagger`` on macOS; ``%LOCALAPPDATA%\\sdl-tagger\\Cache`` on
Windows). Each kind of file has its own sub-folder (:data:`PRETRAINED`, :data:`ONNX`,
:data:`FEATURES`), so one setting moves all of them, e.g. onto a persistent volume.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import CacheError

ENV_CACHE = "SDL_TAGGER_CACHE"
APP_NAME = "sdl-tagger"

#: Sub-folders of the root, one per kind of cached file.
PRETRAINED = "pretrained"
ONNX = "onnx"
FEATURES = "features"


def cache_root() -> Path:
    """``$SDL_TAGGER_CACHE``, else the platform's user cache folder for sdl-tagger."""
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs  # small, but only needed when no folder is given
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def cache_dir(kind: str) -> Path:
    """The sub-folder for one kind of cached file (not created here)."""
    return cache_root() / kind


def cache_os_error(exc: OSError, folder: Path) -> CacheError:
    """A user-facing error for a cache folder that cannot be written (read-only, full, ...)."""
    from .files import os_error_reason
    return CacheError(f"cannot write to the cache folder {folder} ({os_error_reason(exc)}); set {ENV_CACHE} "
                      "to a writable folder with space. Nothing half-written was kept")

"""Keeping the server's temporary files bounded.

Gradio keeps every upload and every output file (heat maps, JSON downloads) in its
cache folder (``GRADIO_TEMP_DIR``, else ``/tmp/gradio``). The app asks Gradio to
delete the ones it created once they are ``max_age`` seconds old (``delete_cache``).
One kind escapes that: an upload whose client disconnects half-way stays as a
``tmpXXXX`` file at the top of the folder, never handed to the app and so never
deleted. :func:`sweep_stray_uploads` removes those once they are as old; a running
upload keeps writing to its file, so it is never old.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: Uploads and results older than this are deleted (seconds): a result's JSON can be
#: downloaded for this long, and the cache holds at most this much traffic.
CACHE_MAX_AGE_S = 900
#: Gradio names in-flight uploads like this (NamedTemporaryFile's default prefix).
STRAY_PREFIX = "tmp"


def sweep_every(max_age_s: int) -> int:
    """How often to look for old files: a quarter of the age, at least every 5 s."""
    return max(5, int(max_age_s) // 4)


def sweep_stray_uploads(folder: Path, max_age_s: float, now: float | None = None) -> int:
    """Delete abandoned upload files at the top of ``folder`` older than ``max_age_s``;
    returns the bytes freed."""
    now = time.time() if now is None else now
    freed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for path in entries:
        if not path.name.startswith(STRAY_PREFIX):
            continue
        try:
            stat = path.lstat()
            if path.is_file() and not path.is_symlink() and now - stat.st_mtime > max_age_s:
                path.unlink()
                freed += stat.st_size
        except OSError:
            continue  # finished or removed meanwhile
    if freed:
        log.info("removed %d bytes of abandoned uploads from %s", freed, folder)
    return freed


def start_sweeper(folder: Path, max_age_s: float) -> threading.Event:
    """Sweep ``folder`` in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(sweep_every(int(max_age_s))):
            sweep_stray_uploads(folder, max_age_s)

    threading.Thread(target=run, name="sdl-cache-sweeper", daemon=True).start()
    return stop

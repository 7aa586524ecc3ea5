"""Keeping the server's resident memory flat under many concurrent visitors.

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and
returns freed memory to the system only from the top of an arena. A Gradio server runs
requests on a pool of worker threads, each allocating and freeing images and arrays, so
its resident size creeps up with fragmented arenas long after the objects are gone.
Capping the arenas (what ``MALLOC_ARENA_MAX`` does, set here at run time through
``mallopt``) and trimming free memory back to the system after each sweep keep it close
to what is really in use. Elsewhere than glibc both calls are skipped.
"""
from __future__ import annotations

import ctypes
import functools
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

#: mallopt's parameter number for the arena cap (glibc's malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8
#: Arenas the server may use; an explicit MALLOC_ARENA_MAX in the environment wins.
ARENAS = 2


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """glibc, looked up once (``find_library`` runs ``ldconfig``); None elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (call before the server starts its threads).
    True when the cap was set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    libc = _libc()
    if libc is None:
        return False
    done = bool(libc.mallopt(M_ARENA_MAX, int(arenas)))
    log.debug("malloc arenas capped at %d: %s", arenas, done)
    return done


def trim_free_memory() -> bool:
    """Give free heap memory back to the system (glibc's ``malloc_trim``). True if any was."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def start_trimmer(every_s: float = 30.0) -> threading.Event:
    """Trim free memory every ``every_s`` seconds in a daemon thread until the event is set."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            trim_free_memory()

    if _libc() is not None:
        threading.Thread(target=run, name="sdl-malloc-trim", daemon=True).start()
    return stop

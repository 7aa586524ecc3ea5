"""Small real file systems for the full-disk and read-only tests: a size-limited tmpfs
mounted for one test (needs root on Linux; elsewhere the test skips with the reason),
filled up or remounted read-only."""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` for the duration of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        proc = subprocess.CompletedProcess([], 1, "", str(exc))
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()[:120] or 'mount failed'}): "
                    "the real full/read-only disk tests need root on Linux; the simulated ones still ran")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder`` until at most ``leave`` bytes are free."""
    with open(folder / "filler.bin", "wb") as handle:
        chunk = b"\0" * 65536
        try:
            while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave + len(chunk):
                handle.write(chunk)
                handle.flush()
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
                if os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize <= leave:
                    break
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def read_only(folder: Path) -> None:
    """Remount the tmpfs on ``folder`` read-only."""
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True, timeout=30)


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files left anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith((".tmp", ".part")) or ".tmp" in p.name)

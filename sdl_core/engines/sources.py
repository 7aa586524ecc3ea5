"""What a job reads: a folder's photos, or the photos a list file names.

A list file holds one photo per line: a path (relative to the list file's folder) or a URI
that pyarrow's filesystems read (``file://``, ``s3://``, ``gs://``, ``hdfs://``); blank lines
and lines starting with ``#`` are skipped. A worker copies a URI's photo into a scratch
folder under its own name, so it is read, checked and named exactly as a local file is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ImageError
from ..files import one_line, read_bytes
from ..images import MAX_IMAGE_BYTES
from . import EngineError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Item:
    """One photo of a job. ``key`` names it in the results (as the local CLI names it);
    ``location`` is what a worker reads (an absolute path or a URI); ``size`` and ``mtime_ns``
    (-1 for a URI or a missing file) tell a finished result from one of an older version."""

    key: str
    location: str
    size: int = -1
    mtime_ns: int = -1


def is_uri(text: str) -> bool:
    return bool(_URI.match(text))


def read_list_file(path: Path) -> list[str]:
    """The photos a list file names, each once, in the order listed."""
    raw = read_bytes(path, EngineError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EngineError(f"{path}: not UTF-8 text: a list file names one photo (path or URI) per line") from None
    lines = (line.strip() for line in text.splitlines())
    names = list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))
    if not names:
        raise EngineError(f"{path}: no photos listed (one path or URI per line)")
    return names


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return -1, -1  # the worker reports it as the local CLI does ("no such file")
    return int(st.st_size), int(st.st_mtime_ns)


def tag_items(source: str) -> list[Item]:
    """The photos of ``tag --engine ray SOURCE``: a folder's (recursive, hidden files skipped,
    named as the local ``tag`` names them), a list file's, or one photo."""
    from ..search import IMAGE_SUFFIXES, scan_folder
    path = Path(source)
    if path.is_dir():
        found = scan_folder(path)
        if not found:
            raise EngineError(f"{source}: no photos in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return [Item(str(path / e.path), str((path / e.path).absolute()), e.size, e.mtime_ns) for e in found]
    if not path.is_file():
        raise EngineError(f"{source}: no such folder or list file")
    if path.suffix.lower() in IMAGE_SUFFIXES:  # one photo, as the local `tag` takes it
        return [Item(source, str(path.absolute()), *_stat(path))]
    base = path.absolute().parent
    items = []
    for name in read_list_file(path):
        if is_uri(name):
            items.append(Item(name, name))
        else:
            items.append(Item(name, str(base / name), *_stat(base / name)))
    return items


def index_source(source: str) -> tuple[Path, list | None]:
    """``index SOURCE``: (the index's root folder, its photos) for a list file of local photos,
    or (the folder, None) for a folder, whose photos the index update scans itself."""
    from ..search import SearchIndexError, entries_for_files
    path = Path(source)
    if path.is_dir():
        return path, None
    if not path.is_file():
        raise SearchIndexError(f"{path}: no such folder or list file")
    names = read_list_file(path)
    uris = [name for name in names if is_uri(name)]
    if uris:
        raise EngineError(f"{path}: {uris[0]} is a URI, but an index holds local photos (tag URIs with "
                          "`tag --engine ray`)")
    base = path.absolute().parent
    return entries_for_files([base / name for name in names])


def fetch(uri: str, folder: Path) -> Path:
    """Copy the photo at ``uri`` into ``folder`` under its own name; an unreadable one is an ImageError."""
    from pyarrow import ArrowException, fs
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type != fs.FileType.File:
            raise ImageError(f"{uri}: no such file")
        if info.size > MAX_IMAGE_BYTES:
            raise ImageError(f"{uri}: file is {info.size / 2**20:.1f} MiB, above the "
                             f"{MAX_IMAGE_BYTES // 2**20} MiB limit")
        with filesystem.open_input_stream(path) as stream:
            data = stream.read()
    except (OSError, ValueError, ArrowException) as exc:
        raise ImageError(f"{uri}: cannot read ({one_line(exc)})") from None
    target = folder / (PurePosixPath(path).name or "image")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target

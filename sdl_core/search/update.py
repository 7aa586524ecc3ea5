"""Building and updating an index: scan a folder, encode only new or changed photos.

An index belongs to one model: updating it with another model (other weights, other
config or word space) is a :class:`SearchIndexError` that says so; ``rebuild=True``
(``index --rebuild``) starts a fresh index instead.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from ..factory import resolve
from .ann import ApproxIndex, min_photos
from .calibrate import calibrate
from .index import (FileEntry, ModelIdentity, SearchIndex, SearchIndexError, as_stored, in_memory, model_identity,
                    weights_fingerprint)

if TYPE_CHECKING:  # the Tagger pulls in timm: only index building needs it
    from ..tagger import Tagger

log = logging.getLogger(__name__)

#: File name endings treated as photos when a folder is scanned (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass
class UpdateReport:
    """What one ``index`` run did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def encoded(self) -> int:
        return len(self.added) + len(self.updated)


def scan_folder(folder: str | Path) -> list[FileEntry]:
    """Photos under ``folder`` (recursive, hidden files and folders skipped), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SearchIndexError(f"{folder}: no such folder")
    out: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            full = Path(dirpath) / name
            try:
                st = full.stat()
            except OSError:
                continue  # vanished or a broken link
            rel = full.relative_to(folder).as_posix()
            out.append(FileEntry(rel, int(st.st_size), int(st.st_mtime_ns)))
    return sorted(out, key=lambda e: e.path)


def entries_for_files(paths: Sequence[str | Path]) -> tuple[Path, list[FileEntry]]:
    """Root (their common folder) and entries for an explicit list of files (uploads)."""
    if not paths:
        raise SearchIndexError("no photos given")
    full = [Path(p).resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in full]))
    entries = []
    for p in full:
        try:
            st = p.stat()
        except OSError as exc:
            raise SearchIndexError(f"{p.name}: cannot read ({exc.strerror or exc})") from None
        entries.append(FileEntry(p.relative_to(root).as_posix(), int(st.st_size), int(st.st_mtime_ns)))
    return root, sorted(set(entries), key=lambda e: e.path)


ProgressFn = Callable[[int, int], None]
#: Encodes the photos to (re)index: (root, todo, report, progress) -> (entries that loaded, their vectors).
EncodeFn = Callable[[Path, list[FileEntry], UpdateReport, "ProgressFn | None"],
                    tuple[list[FileEntry], list[torch.Tensor]]]


def update_index(root: str | Path, tagger: "Tagger", index: SearchIndex | None = None, *,
                 files: Sequence[FileEntry] | None = None, batch_size: int = 16, source: str | None = None,
                 data_dir: str | None = None, word_space_source: str | None = None,
                 progress: ProgressFn | None = None, encode: EncodeFn | None = None
                 ) -> tuple[SearchIndex, UpdateReport]:
    """Index ``root`` (or ``files`` under it), reusing every vector of ``index`` whose
    file has the same size and mtime: only new or changed photos go through the model.

    Unreadable files are reported in the result, not raised. Ctrl-C stops early and
    returns what is done (``report.interrupted``), so the caller can save it.
    ``progress(done, total)`` is called after each batch. ``encode(root, todo, report, progress)``
    replaces the in-process encoding step (the Ray engine: :mod:`sdl_core.engines.ray_job`). From
    :func:`.ann.min_photos` photos on, the result has an approximate part: ``index``'s, updated
    in place (it moves to the result), or a new one.
    """
    root = Path(root).resolve()
    identity = model_identity(tagger, source, data_dir)
    if index is not None:
        check_compatible(index, identity, root)
    current = scan_folder(root) if files is None else list(files)
    old = {e.path: i for i, e in enumerate(index.entries)} if index is not None else {}
    report = UpdateReport()
    keep_rows: list[int] = []
    keep_entries: list[FileEntry] = []
    todo: list[FileEntry] = []
    for entry in current:
        i = old.get(entry.path)
        if i is not None and index is not None and index.entries[i] == entry:
            keep_rows.append(i)
            keep_entries.append(entry)
        else:
            todo.append(entry)
    seen_now = {e.path for e in current}
    report.removed = [p for p in old if p not in seen_now]
    report.unchanged = len(keep_rows)
    if encode is None:
        new_entries, new_vectors = _encode_entries(root, todo, tagger, max(1, batch_size), report, progress)
    else:
        new_entries, new_vectors = encode(root, todo, report, progress)
    for entry in new_entries:
        (report.updated if entry.path in old else report.added).append(entry.path)
    cfg = tagger.config
    kept = index.vectors[keep_rows] if index is not None and keep_rows else torch.zeros(0, cfg.k, cfg.d).half()
    vectors = _joined([kept] + new_vectors)
    entries = keep_entries + new_entries
    next_id = index.next_id if index is not None else 0
    kept_ids = index.ids[keep_rows] if index is not None else np.zeros(0, np.int64)
    ids = np.concatenate([kept_ids, np.arange(next_id, next_id + len(new_entries), dtype=np.int64)])
    order = sorted(range(len(entries)), key=lambda j: entries[j].path)
    result = SearchIndex(root, identity, [entries[j] for j in order], vectors[order].contiguous(),
                         tagger.vocabulary, word_space_source or (index.word_space_source if index else None),
                         list(report.failed), ids[order], next_id + len(new_entries))
    result.ann = _approximate_part(index, result, keep_rows, int(next_id))
    result.vectors = in_memory(result.vectors, result.ann is not None)
    log.info("indexed %s: %d added, %d updated, %d removed, %d unchanged, %d unreadable", root, len(report.added),
             len(report.updated), len(report.removed), report.unchanged, len(report.failed))
    return result, report


def _joined(blocks: list[torch.Tensor]) -> torch.Tensor:
    """One (N, K, D) tensor as stored: float16, or float32 when any block needs it."""
    stored = [as_stored(b) for b in blocks]
    dtype = torch.float32 if any(b.dtype == torch.float32 for b in stored) else torch.float16
    return torch.cat([b.to(dtype) for b in stored])


def _approximate_part(old: SearchIndex | None, new: SearchIndex, keep_rows: list[int],
                      first_new_id: int) -> ApproxIndex | None:
    """The approximate part a large index needs: the old one updated (photos that left or
    changed out, new ones in), or built afresh; None below the size that needs one."""
    if len(new) < min_photos():
        return None
    assert new.ids is not None
    if old is None or old.ann is None:
        ann = ApproxIndex.build(new.vectors, new.ids, new.reduction)
    else:
        assert old.ids is not None
        gone = np.delete(old.ids, keep_rows)
        ann = old.ann.updated(new.vectors, new.ids, new.reduction, gone, np.flatnonzero(new.ids >= first_new_id))
    if old is None or ann is not old.ann:  # built afresh: check it against exact search
        calibrate(ann, new.vectors, new.ids, new.vocabulary.vectors)
    return ann


def _encode_entries(root: Path, todo: list[FileEntry], tagger: "Tagger", batch_size: int, report: UpdateReport,
                    progress: ProgressFn | None) -> tuple[list[FileEntry], list[torch.Tensor]]:
    """Load and encode photos in batches; a bad photo is recorded and skipped."""
    done_entries: list[FileEntry] = []
    done_vectors: list[torch.Tensor] = []
    done = 0
    paths = [root / Path(*entry.path.split("/")) for entry in todo]
    try:
        for loaded, encoded in tagger.encode_files(paths, batch_size):
            for entry, (_, error) in zip(todo[done:done + len(loaded)], loaded):
                if error is None:
                    done_entries.append(entry)
                else:
                    report.failed.append((entry.path, str(error)))
            if encoded is not None:
                done_vectors.append(as_stored(encoded.vectors))  # as saved: in memory == on disk
            done += len(loaded)
            if progress is not None:
                progress(done, len(todo))
    except KeyboardInterrupt:
        report.interrupted = True
        log.warning("interrupted after %d of %d photos", done, len(todo))
    return done_entries, done_vectors


def check_compatible(index: SearchIndex, identity: ModelIdentity, root: Path | None = None) -> None:
    """An index is only updated by the model (weights and config) and folder that built it."""
    if index.identity.fingerprint != identity.fingerprint:
        raise SearchIndexError(f"the index was built with {index.identity.describe()}, not with "
                               f"{identity.describe()} (other weights or config): its vectors cannot be mixed. "
                               "Use --rebuild to replace it, or --out for a separate index.")
    if root is not None and index.root.resolve() != Path(root).resolve():
        raise SearchIndexError(f"the index belongs to folder {index.root}, not {root}. "
                               "Use --rebuild to replace it, or --out for a separate index.")




def model_source(name: str) -> tuple[str, bool]:
    """(what an index records, whether it is a file) for a model name or path: a
    checkpoint's absolute path, or a registered name (see :func:`sdl_core.factory.resolve`)."""
    source = resolve(name)
    return source.value, source.is_file


def verify_model(index: SearchIndex, name: str) -> None:
    """Refuse a search that names another model than the index's, without building it."""
    source, is_path = model_source(name)
    if is_path and Path(source).suffix == ".safetensors":
        from ..checkpoint import read_checkpoint
        config, state, _ = read_checkpoint(source)
        fingerprint = weights_fingerprint(config, state)
        if fingerprint != index.identity.fingerprint:
            raise SearchIndexError(f"the index was built with {index.identity.describe()}, not with {name}")
    elif source != index.identity.source:
        raise SearchIndexError(f"the index was built with {index.identity.source or index.identity.name!r}, "
                               f"not with {name!r}")

"""Tags as photo keywords: their words, their place in the hierarchy, and merging with the
keywords a photo already has. Pure functions; :mod:`sdl_core.xmp` writes them with exiv2.

Flat words go to ``dc:subject``; paths to Lightroom's ``lr:hierarchicalSubject``
(``SDL|seen|dog``) and digiKam's ``digiKam:TagsList`` (``SDL/unseen/sky``). Unseen (zero-shot)
tags sit under ``SDL|unseen``, seen ones under ``SDL|seen``, so a tool can filter either.

Merging: the user's keywords stay. A re-run replaces only what this tool wrote before: the
paths under the root, and the flat words that are leaves of those paths (a word that is also
the leaf of one of the user's own paths stays). A flat-only keyword of the user that equals
one of our tags cannot be told from ours: a re-run that no longer finds that tag removes it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .errors import XmpError
from .tags import normalize_tag

if TYPE_CHECKING:  # the tagger's module imports torch: keywords do not need it
    from .tagger import TagResult

#: Root of the keyword hierarchy this tool owns; and its two branches.
ROOT = "SDL"
SEEN, UNSEEN = "seen", "unseen"
#: Hierarchy separators: Lightroom's (lr:hierarchicalSubject) and digiKam's (TagsList).
LR_SEP, DIGIKAM_SEP = "|", "/"
#: Sidecar names. ``append``: photo.jpg.xmp (digiKam's default, darktable, Immich's first
#: choice); ``replace``: photo.xmp (Lightroom and Capture One for raw files, digiKam's
#: "compatible with commercial programs" option, Immich).
APPEND, REPLACE = "append", "replace"
SIDECAR_NAMES = (APPEND, REPLACE)
#: Where keywords went (``xmp.XmpWritten.kind``); NOTHING: no tags and no other XMP, so no sidecar.
SIDECAR, COPY, IN_PLACE, NOTHING = "sidecar", "copy", "in place", "nothing"
#: Copies with embedded keywords go to a sibling folder: photos/ -> photos-tagged/.
COPY_FOLDER_SUFFIX = "-tagged"

_PATH_SEPARATORS = re.compile(r"[|/]")


@dataclass(frozen=True)
class Keywords:
    """The three keyword properties: flat words, Lightroom paths, digiKam paths."""

    subject: tuple[str, ...] = ()
    hierarchical: tuple[str, ...] = ()
    tags_list: tuple[str, ...] = ()


def keyword(tag: str) -> str:
    """A tag as a keyword: the project's tag normalisation, with ``|`` and ``/`` (the
    hierarchy separators of Lightroom and digiKam) written as ``-``."""
    return _PATH_SEPARATORS.sub("-", normalize_tag(tag)).strip()


def check_root(root: str) -> str:
    """The root of our hierarchy: one non-empty word, no separator, no surrounding spaces."""
    if not root.strip() or root != root.strip() or _PATH_SEPARATORS.search(root):
        raise XmpError(f"keyword root {root!r} must be a non-empty word without '|' or '/'")
    return root


def sdl_keywords(tags: Iterable[TagResult], root: str = ROOT) -> Keywords:
    """Our keywords for ranked tags: each tag flat, and under ``root|seen`` or ``root|unseen``."""
    check_root(root)
    branches: dict[str, str] = {}
    for t in tags:
        word = keyword(t.tag)
        if word and word not in branches:
            branches[word] = SEEN if t.seen else UNSEEN
    return Keywords(tuple(branches),
                    tuple(LR_SEP.join((root, b, w)) for w, b in branches.items()),
                    tuple(DIGIKAM_SEP.join((root, b, w)) for w, b in branches.items()))


def _is_ours(path: str, sep: str, root: str) -> bool:
    return path == root or path.startswith(root + sep)


def _leaves(paths: Iterable[str], sep: str, root: str, ours: bool) -> set[str]:
    return {p.rsplit(sep, 1)[-1] for p in paths if _is_ours(p, sep, root) == ours}


def merge_keywords(existing: Keywords, ours: Keywords, root: str = ROOT) -> Keywords:
    """``existing`` without what we wrote before under ``root``, plus ``ours``.

    Flat words we wrote before are the leaves of our old paths (and the root and branch
    names, which Lightroom adds to the flat list when it saves): they go, unless a path of
    the user's own ends in the same word. A new flat word already there in any case stays once.
    """
    previous = _leaves(existing.hierarchical, LR_SEP, root, True) | _leaves(existing.tags_list, DIGIKAM_SEP, root,
                                                                             True)
    if previous:
        previous |= {root, SEEN, UNSEEN}
    previous -= _leaves(existing.hierarchical, LR_SEP, root, False) | _leaves(existing.tags_list, DIGIKAM_SEP,
                                                                               root, False)
    subject = [w for w in existing.subject if w not in previous]
    return Keywords(append_new(subject, ours.subject),
                    append_new([p for p in existing.hierarchical if not _is_ours(p, LR_SEP, root)], ours.hierarchical),
                    append_new([p for p in existing.tags_list if not _is_ours(p, DIGIKAM_SEP, root)], ours.tags_list))


def append_new(kept: list[str], new: Iterable[str]) -> tuple[str, ...]:
    """``kept`` then each new value not already there (compared case-insensitively)."""
    out = list(kept)
    seen = {v.casefold() for v in out}
    for value in new:
        if value.casefold() not in seen:
            out.append(value)
            seen.add(value.casefold())
    return tuple(out)


def sidecar_path(photo: str | Path, naming: str = APPEND) -> Path:
    """``photo.jpg.xmp`` (``append``) or ``photo.xmp`` (``replace``)."""
    photo = Path(photo)
    if naming == APPEND:
        return photo.with_name(photo.name + ".xmp")
    if naming == REPLACE:
        return photo.with_suffix(".xmp")
    raise XmpError(f"unknown sidecar naming {naming!r}: use one of {', '.join(SIDECAR_NAMES)}")


def default_copy_path(photo: str | Path) -> Path:
    """Where ``embed=True`` puts the copy: ``photos/a.jpg`` -> ``photos-tagged/a.jpg``."""
    folder = Path(photo).resolve().parent
    if folder.parent == folder:
        raise XmpError(f"{photo}: give a path for the copy (the photo is at the top of the file system)")
    return folder.with_name(folder.name + COPY_FOLDER_SUFFIX) / Path(photo).name

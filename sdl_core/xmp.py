"""Tags as XMP keywords, where photo tools read them (digiKam, darktable, Lightroom, Immich,
the photo search of an operating system); which keywords and how they merge:
:mod:`sdl_core.keywords`.

exiv2 (python-exiv2, the ``exiv2`` wheel) reads, escapes and writes the XMP; nothing here
writes XML. By default a sidecar beside the photo (the photo is never touched); ``embed=True``
writes into a copy, ``embed=True, in_place=True`` into the photo itself, keeping all its other
metadata. Every file is written under a temporary name beside its target and renamed over it
only once complete.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import exiv2

from .errors import XmpError
from .files import atomic_write
from .keywords import (APPEND, COPY, IN_PLACE, NOTHING, ROOT, SIDECAR, Keywords, append_new, default_copy_path,
                       merge_keywords, sdl_keywords, sidecar_path)

if TYPE_CHECKING:  # the tagger's module imports torch: writing keywords does not need it
    from .tagger import TagResult

log = logging.getLogger(__name__)

SUBJECT = "Xmp.dc.subject"
HIERARCHICAL = "Xmp.lr.hierarchicalSubject"
TAGS_LIST = "Xmp.digiKam.TagsList"
IPTC_KEYWORDS = "Iptc.Application2.Keywords"

exiv2.XmpParser.initialize()  # once, before any thread uses exiv2's XMP toolkit


@dataclass(frozen=True)
class XmpWritten:
    """Where one photo's keywords went. ``kind``: sidecar, copy or in place."""

    photo: Path
    target: Path
    kind: str
    keywords: tuple[str, ...]
    notes: tuple[str, ...] = ()


class _LogCatcher(logging.Filter):
    """Holds back exiv2's log lines of the current thread while a file is read: they are the
    only sign python-exiv2 gives that an XMP packet could not be decoded."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    @contextlib.contextmanager
    def catch(self) -> Iterator[list[str]]:
        self._local.lines = lines = []
        try:
            yield lines
        finally:
            self._local.lines = None

    def filter(self, record: logging.LogRecord) -> bool:
        lines = getattr(self._local, "lines", None)
        if lines is None:
            return True
        lines.append(record.getMessage())
        return False


_CATCHER = _LogCatcher()
logging.getLogger("exiv2").addFilter(_CATCHER)


def _open(path: Path, name: str) -> "exiv2.Image":
    """Open a file and read its metadata. Malformed XMP is an XmpError: writing would drop it."""
    try:
        image = exiv2.ImageFactory.open(str(path))
        with _CATCHER.catch() as lines:
            image.readMetadata()
    except exiv2.Exiv2Error as exc:
        raise XmpError(f"{name}: cannot read its metadata ({exc.message}); left as it is") from None
    for line in lines:
        log.debug("exiv2: %s: %s", name, line)
    if lines and image.xmpPacket().strip() and not image.xmpData().count():
        raise XmpError(f"{name}: its XMP is malformed ({'; '.join(lines)[:200]}); left as it is")
    return image


def _cannot_embed(photo: Path) -> str | None:
    """Why the photo's format cannot hold XMP that exiv2 writes, or None when it can."""
    reason = f"exiv2 cannot embed XMP in {photo.suffix.lstrip('.').upper() or 'these'} files"
    try:
        image = exiv2.ImageFactory.open(str(photo))
    except exiv2.Exiv2Error:
        return reason
    return None if image.checkMode(exiv2.MetadataId.mdXmp) == exiv2.AccessMode.ReadWrite else reason


def _values(xmp: "exiv2.XmpData", key: str) -> tuple[str, ...]:
    found = xmp.findKey(exiv2.XmpKey(key))
    if found == xmp.end():
        return ()
    value = found.value()
    if isinstance(value, exiv2.XmpArrayValue):
        return tuple(value.toString(i) for i in range(value.count()))
    return (value.toString(),)


def _keywords(image: "exiv2.Image") -> Keywords:
    xmp = image.xmpData()
    return Keywords(_values(xmp, SUBJECT), _values(xmp, HIERARCHICAL), _values(xmp, TAGS_LIST))


def _iptc_keywords(image: "exiv2.Image") -> tuple[str, ...]:
    words = []
    for datum in image.iptcData():
        if datum.key() == IPTC_KEYWORDS:
            with contextlib.suppress(UnicodeDecodeError, exiv2.Exiv2Error):
                words.append(datum.toString())
    return tuple(words)


def _store(xmp: "exiv2.XmpData", key: str, values: tuple[str, ...]) -> None:
    """Replace one array property, keeping its array type (Bag or Seq) when it exists."""
    xmp_key = exiv2.XmpKey(key)
    type_id = exiv2.XmpProperties.propertyType(xmp_key)
    found = xmp.findKey(xmp_key)
    if found != xmp.end():
        if isinstance(found.value(), exiv2.XmpArrayValue):
            type_id = found.typeId()
        del xmp[key]
    if not values:
        return
    value = exiv2.XmpArrayValue(type_id)
    for v in values:
        value.read(v)  # one item each: exiv2 escapes it when it writes the packet
    xmp.add(xmp_key, value)


def _store_keywords(image: "exiv2.Image", keywords: Keywords) -> None:
    xmp = image.xmpData()
    _store(xmp, SUBJECT, keywords.subject)
    _store(xmp, HIERARCHICAL, keywords.hierarchical)
    _store(xmp, TAGS_LIST, keywords.tags_list)


def read_keywords(path: str | Path) -> Keywords:
    """The keywords of a photo (embedded XMP) or of a sidecar."""
    path = Path(path)
    return _keywords(_open(path, path.name))


def _writable(path: Path) -> bool:
    """Writable, and not marked read-only (no write bit: refused even where root could write)."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def _check_writable(target: Path) -> None:
    folder = target.parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not _writable(folder):
        raise XmpError(f"cannot write {target.name}: the folder {folder} is read-only")
    if target.exists() and not _writable(target):
        raise XmpError(f"{target} is read-only; left as it is")


def _seed(photo: Path) -> tuple[Keywords, list[str]]:
    """The photo's own keywords (embedded XMP, IPTC), to start a new sidecar with: tools that
    read a sidecar show its keywords instead of the embedded ones."""
    if _cannot_embed(photo) is not None:
        return Keywords(), []
    try:
        image = _open(photo, photo.name)
    except XmpError as exc:
        return Keywords(), [f"{exc}; its keywords were not carried into the sidecar"]
    own = _keywords(image)
    return Keywords(append_new(list(own.subject), _iptc_keywords(image)), own.hierarchical, own.tags_list), []


class _NothingLeft(Exception):
    """A sidecar would hold no XMP at all (exiv2 writes no empty packet)."""


def _write_sidecar(photo: Path, side: Path, ours: Keywords, root: str) -> tuple[str, list[str]]:
    """Write (or update) a sidecar: (SIDECAR or NOTHING, notes)."""
    _check_writable(side)
    notes: list[str] = []
    try:
        with atomic_write(side) as tmp:
            if side.exists():
                shutil.copy2(side, tmp)
                image = _open(tmp, side.name)
                existing = _keywords(image)
                # exiv2 derives IPTC and EXIF from a sidecar's XMP and copies them back on writing:
                # that would restore the keywords we replace
                image.clearIptcData()
                image.clearExifData()
            else:
                existing, notes = _seed(photo)
                image = exiv2.ImageFactory.create(exiv2.ImageType.xmp, str(tmp))
            _store_keywords(image, merge_keywords(existing, ours, root))
            if not image.xmpData().count():
                raise _NothingLeft
            image.writeMetadata()
    except _NothingLeft:
        side.unlink(missing_ok=True)
        return NOTHING, notes
    return SIDECAR, notes


def _write_embedded(photo: Path, dest: Path, ours: Keywords, root: str) -> None:
    _check_writable(dest)
    with atomic_write(dest) as tmp:
        shutil.copy2(photo, tmp)
        image = _open(tmp, photo.name)
        _store_keywords(image, merge_keywords(_keywords(image), ours, root))
        image.writeMetadata()


def _copy_unchanged(photo: Path, dest: Path) -> None:
    _check_writable(dest)
    with atomic_write(dest) as tmp:
        shutil.copy2(photo, tmp)


def write_xmp(photo: str | Path, tags: Iterable[TagResult], *, embed: bool = False, in_place: bool = False,
              target: str | Path | None = None, sidecar_name: str = APPEND, root: str = ROOT) -> XmpWritten:
    """Write ranked tags as keywords for one photo, merged with the keywords already there.

    Default: the sidecar ``sidecar_path(photo, sidecar_name)`` (or ``target``). ``embed=True``:
    a copy of the photo at ``target`` (default :func:`default_copy_path`) with the keywords
    embedded; with ``in_place=True`` the photo itself. A format that cannot hold XMP gets a
    sidecar instead (beside the copy, or beside the photo), said in ``notes``. Raises
    XmpError (a read-only folder, malformed existing XMP: the file is left as it is).
    """
    photo = Path(photo)
    if in_place and not embed:
        raise XmpError("writing into the photo itself (in_place) needs embed=True")
    if not photo.is_file():
        raise XmpError(f"{photo}: no such photo")
    ours = sdl_keywords(tags, root)
    sidecar_path(photo, sidecar_name)  # an unknown naming fails before anything is written
    try:
        if not embed:
            side = Path(target) if target is not None else sidecar_path(photo, sidecar_name)
            kind, notes = _write_sidecar(photo, side, ours, root)
            return XmpWritten(photo, side, kind, ours.subject, tuple(notes))
        return _embed(photo, _embed_destination(photo, in_place, target), ours, in_place, sidecar_name, root)
    except OSError as exc:
        raise XmpError(f"cannot write keywords for {photo.name}: {exc.strerror or exc}") from None
    except exiv2.Exiv2Error as exc:
        raise XmpError(f"cannot write keywords for {photo.name}: {exc.message}") from None


def _embed_destination(photo: Path, in_place: bool, target: str | Path | None) -> Path:
    if in_place:
        return photo.resolve()  # a link's target: the link stays a link
    dest = Path(target) if target is not None else default_copy_path(photo)
    if dest.resolve() == photo.resolve():
        raise XmpError(f"{dest}: the copy would replace the photo; use in_place=True to write into it")
    return dest


def _embed(photo: Path, dest: Path, ours: Keywords, in_place: bool, sidecar_name: str, root: str) -> XmpWritten:
    """Embed in ``dest``; a format exiv2 cannot embed in gets an unchanged copy and a sidecar."""
    reason = _cannot_embed(photo)
    if reason is None:
        _write_embedded(photo, dest, ours, root)
        return XmpWritten(photo, dest, IN_PLACE if in_place else COPY, ours.subject)
    if not in_place:
        _copy_unchanged(photo, dest)
    side = sidecar_path(dest, sidecar_name)
    kind, notes = _write_sidecar(photo, side, ours, root)
    return XmpWritten(photo, side, kind, ours.subject, (f"{photo.name}: {reason}; wrote a sidecar instead", *notes))

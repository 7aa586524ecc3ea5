"""The ``tag --write-xmp`` options of the command line: keywords where photo tools read them
(see :mod:`sdl_core.xmp`). All of the XMP wiring of the CLI is here, so it moves as one piece."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..errors import XmpError
from ..keywords import APPEND, COPY_FOLDER_SUFFIX, NOTHING, ROOT, SIDECAR_NAMES, check_root, sidecar_path

if TYPE_CHECKING:
    from ..tagger import TagResult

#: Help of the XMP options (the README quotes the same workflow).
XMP_HELP = ("write the tags as XMP keywords (dc:subject, lr:hierarchicalSubject, digiKam:TagsList under "
            "SDL|seen|... and SDL|unseen|...), merged with the keywords already there; a re-run replaces only "
            "the keywords this tool wrote. Default: a sidecar beside each photo; the photo is not touched")


def add_xmp_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("XMP keywords for photo tools (digiKam, darktable, Lightroom, Immich)")
    group.add_argument("--write-xmp", action="store_true", help=XMP_HELP)
    group.add_argument("--sidecar-name", choices=SIDECAR_NAMES, default=APPEND,
                       help="append: photo.jpg.xmp (digiKam, darktable, Immich; the default); "
                            "replace: photo.xmp (Lightroom/Capture One style, digiKam's 'compatible' option)")
    group.add_argument("--embed", action="store_true",
                       help="embed the keywords in copies of the photos (in --copy-to, default FOLDER-tagged/ "
                            "beside the folder), keeping all other metadata; formats exiv2 cannot embed in get a "
                            "sidecar")
    group.add_argument("--copy-to", metavar="DIR", help="with --embed: where the copies go (subfolders are mirrored)")
    group.add_argument("--in-place", action="store_true",
                       help="with --embed: write into the photos themselves (each is rewritten through a temporary "
                            "file; all other metadata is kept). Lightroom reads keywords of JPEG/TIFF only from here")
    group.add_argument("--xmp-root", default=ROOT, metavar="WORD",
                       help=f"root of the keyword hierarchy (default {ROOT})")


class XmpOutput:
    """Writes each tagged photo's keywords as the options say; knows where copies go and
    refuses to let two photos of one run share a sidecar (photo.jpg and photo.png with
    ``--sidecar-name replace``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.in_place and not args.embed:
            raise XmpError("--in-place writes into the photos themselves: it needs --embed")
        if args.copy_to and (args.in_place or not args.embed):
            raise XmpError("--copy-to is where --embed puts copies: it needs --embed and not --in-place")
        check_root(args.xmp_root)
        self.args = args
        self.copy_to = Path(args.copy_to).absolute() if args.copy_to else None
        self._sidecars: dict[Path, str] = {}

    def excluded(self) -> list[Path]:
        """Folders whose photos are not inputs: the copies this run writes."""
        return [self.copy_to] if self.copy_to is not None else []

    def _copy_path(self, photo: Path, base: Path) -> Path:
        if self.copy_to is None:
            return base.with_name(base.name + COPY_FOLDER_SUFFIX) / photo.relative_to(base)
        return self.copy_to / photo.relative_to(base)

    def write(self, photo: str, base: Path, tags: Iterable[TagResult]) -> dict:
        """Write one photo's keywords (``base``: the folder it was found under, mirrored in
        copies); a dict for the JSON output. Raises XmpError."""
        path = Path(photo).absolute()
        args = self.args
        target = self._copy_path(path, base) if args.embed and not args.in_place else None
        if not args.embed:
            sidecar = sidecar_path(path, args.sidecar_name)
            other = self._sidecars.setdefault(sidecar, str(photo))
            if other != str(photo):
                raise XmpError(f"{photo}: its sidecar {sidecar.name} is also the sidecar of {Path(other).name}; "
                               "use --sidecar-name append (photo.jpg.xmp)")
        from ..xmp import write_xmp  # exiv2 loads only when keywords are written
        written = write_xmp(path, tags, embed=args.embed, in_place=args.in_place, target=target,
                            sidecar_name=args.sidecar_name, root=args.xmp_root)
        return {"target": str(written.target), "kind": written.kind, "keywords": list(written.keywords),
                "notes": list(written.notes)}


def print_written(photo: str, record: dict, result) -> None:
    """The human line of one photo: where its keywords went, and which."""
    if record["kind"] == NOTHING:
        print(f"{photo}: no tags to write (and no sidecar: it would be empty)")
    else:
        print(f"{record['target']}: {', '.join(t.display for t in result.tags) or '(no tags)'}")

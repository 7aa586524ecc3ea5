"""ExifTool as the independent reader (and fixture writer) of XMP in the tests: the code under
test writes with exiv2, so a reader built on another code base checks what it wrote."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (Debian "
                                    "libimage-exiftool-perl; .ci/run installs it): it is the independent reader "
                                    "of the XMP under test")

FIELDS = ("XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList", "EXIF:Make", "EXIF:Model")


def read_xmp(path: Path) -> dict:
    """Subject, HierarchicalSubject, TagsList (always lists) and Make/Model, as ExifTool reads them."""
    out = subprocess.run([EXIFTOOL, "-j", "-charset", "filename=utf8", *(f"-{f}" for f in FIELDS), str(path)],
                         capture_output=True, text=True, timeout=60, check=True)
    data = json.loads(out.stdout)[0]
    for key in ("Subject", "HierarchicalSubject", "TagsList"):
        value = data.get(key, [])
        data[key] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return data


def write_keywords(path: Path, subject=(), hierarchical=(), tags_list=(), *extra: str) -> None:
    """Give a file (photo or new sidecar) keywords the way another tool would."""
    args = [f"-XMP-dc:Subject={w}" for w in subject] + [f"-XMP-lr:HierarchicalSubject={w}" for w in hierarchical]
    args += [f"-XMP-digiKam:TagsList={w}" for w in tags_list] + list(extra)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", *args, str(path)], capture_output=True, timeout=60,
                   check=True)

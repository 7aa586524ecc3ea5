"""XMP keywords (sdl_core.xmp): written with exiv2, read back with ExifTool."""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdl_core import files
from sdl_core.errors import StorageError, XmpError
from sdl_core.tagger import TagResult
from sdl_core.keywords import Keywords, merge_keywords, sdl_keywords, sidecar_path
from sdl_core.xmp import write_xmp
from tests.conftest import make_photo
from tests.exiftool import needs_exiftool, read_xmp, write_keywords

FORMATS = ("jpg", "png", "tif", "webp")
MAKE, MODEL = "TestMake", "Test Model 1"


def tags(*spec: str) -> list[TagResult]:
    """TagResults from words; a word in *stars* is unseen."""
    return [TagResult(w.strip("*"), 1.0 - i / 10, not w.startswith("*"), 0) for i, w in enumerate(spec)]


def save_photo(path: Path, seed: int = 0) -> Path:
    """A photo with EXIF Make/Model (that embedding must keep)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = MAKE, MODEL
    make_photo(64, 48, seed=seed).save(path, exif=exif.tobytes())
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def with_broken_xmp(jpeg: Path) -> Path:
    """Insert an APP1 XMP segment whose XML is cut off (an rdf:Description never closed)."""
    packet = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
              b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
              b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>mine</rdf:li>'
              b'</rdf:RDF></x:xmpmeta>')
    payload = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:])
    return jpeg


# -- the keywords themselves (no files) ---------------------------------------------------------
def test_sdl_keywords_mark_unseen_and_replace_separators():
    kw = sdl_keywords(tags("dog", "*sky*", "*ac/dc*", "a|b", "dog"))
    assert kw.subject == ("dog", "sky", "ac-dc", "a-b")
    assert kw.hierarchical == ("SDL|seen|dog", "SDL|unseen|sky", "SDL|unseen|ac-dc", "SDL|seen|a-b")
    assert kw.tags_list == ("SDL/seen/dog", "SDL/unseen/sky", "SDL/unseen/ac-dc", "SDL/seen/a-b")
    assert sdl_keywords(tags("dog"), root="Tagger").hierarchical == ("Tagger|seen|dog",)
    for bad in ("", "a|b", "a/b", " SDL"):
        with pytest.raises(XmpError, match="root"):
            sdl_keywords(tags("dog"), root=bad)


def test_merge_keeps_the_users_keywords_and_replaces_only_ours():
    user = Keywords(("family", "Dog", "anna"), ("People|anna",), ("People/anna",))
    first = merge_keywords(user, sdl_keywords(tags("dog", "*sky*", "anna")))
    assert first.subject == ("family", "Dog", "anna", "sky")  # 'dog' is there already (any case)
    assert first.hierarchical == ("People|anna", "SDL|seen|dog", "SDL|unseen|sky", "SDL|seen|anna")
    # Lightroom adds the parents of a keyword to the flat list when it saves
    lightroom = Keywords(first.subject + ("SDL", "unseen"), first.hierarchical, first.tags_list)
    second = merge_keywords(lightroom, sdl_keywords(tags("cat")))
    # 'anna' is a leaf of the user's own path: it stays; 'Dog' was the user's (another case): it stays
    assert second.subject == ("family", "Dog", "anna", "cat")
    assert second.hierarchical == ("People|anna", "SDL|seen|cat")
    assert second.tags_list == ("People/anna", "SDL/seen/cat")
    assert merge_keywords(second, sdl_keywords([])) == Keywords(("family", "Dog", "anna"), ("People|anna",),
                                                                ("People/anna",))


def test_sidecar_names(tmp_path):
    assert sidecar_path(tmp_path / "a.jpg") == tmp_path / "a.jpg.xmp"
    assert sidecar_path(tmp_path / "a.jpg", "replace") == tmp_path / "a.xmp"
    with pytest.raises(XmpError, match="naming"):
        sidecar_path(tmp_path / "a.jpg", "neither")


# -- files, read back by ExifTool ------------------------------------------------------------------
@needs_exiftool
@pytest.mark.parametrize("ext", FORMATS)
def test_sidecar_leaves_the_photo_untouched(tmp_path, ext):
    photo = save_photo(tmp_path / f"photo.{ext}")
    before = digest(photo)
    written = write_xmp(photo, tags("dog", "*sky*"))
    assert written.kind == "sidecar" and written.target == tmp_path / f"photo.{ext}.xmp"
    got = read_xmp(written.target)
    assert got["Subject"] == ["dog", "sky"]
    assert got["HierarchicalSubject"] == ["SDL|seen|dog", "SDL|unseen|sky"]
    assert got["TagsList"] == ["SDL/seen/dog", "SDL/unseen/sky"]
    assert digest(photo) == before and sorted(p.name for p in tmp_path.iterdir()) == [f"photo.{ext}",
                                                                                     f"photo.{ext}.xmp"]
    assert write_xmp(photo, tags("cat"), sidecar_name="replace").target == tmp_path / "photo.xmp"


@needs_exiftool
@pytest.mark.parametrize("ext", FORMATS)
def test_embed_in_a_copy_and_in_place_keeps_other_metadata(tmp_path, ext):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = save_photo(folder / f"photo.{ext}")
    before, pixels = digest(photo), np.asarray(Image.open(photo))
    copy = write_xmp(photo, tags("dog", "*sky*"), embed=True)
    assert copy.kind == "copy" and copy.target == tmp_path / "photos-tagged" / f"photo.{ext}"
    assert digest(photo) == before
    for written in (copy, write_xmp(photo, tags("dog", "*sky*"), embed=True, in_place=True)):
        got = read_xmp(written.target)
        assert got["Subject"] == ["dog", "sky"] and got["HierarchicalSubject"] == ["SDL|seen|dog", "SDL|unseen|sky"]
        assert (got["Make"], got["Model"]) == (MAKE, MODEL)
        assert np.array_equal(np.asarray(Image.open(written.target)), pixels)
    assert digest(photo) != before
    assert sorted(p.name for p in folder.iterdir()) == [f"photo.{ext}"]  # no temporary file left


@needs_exiftool
@pytest.mark.parametrize("mode", ["sidecar", "embed"])
def test_merge_with_existing_keywords_and_rerun(tmp_path, mode):
    photo = save_photo(tmp_path / "photo.jpg")
    holder = photo if mode == "embed" else sidecar_path(photo)
    write_keywords(holder, ["family", "anna"], ["People|anna"], ["People/anna"])
    kwargs = dict(embed=True, in_place=True) if mode == "embed" else {}
    write_xmp(photo, tags("dog", "*sky*", "anna"), **kwargs)
    got = read_xmp(holder)
    assert got["Subject"] == ["family", "anna", "dog", "sky"]
    assert got["HierarchicalSubject"] == ["People|anna", "SDL|seen|dog", "SDL|unseen|sky", "SDL|seen|anna"]
    assert got["TagsList"] == ["People/anna", "SDL/seen/dog", "SDL/unseen/sky", "SDL/seen/anna"]
    write_xmp(photo, tags("*boat*"), **kwargs)  # the re-run replaces only ours
    got = read_xmp(holder)
    assert got["Subject"] == ["family", "anna", "boat"]
    assert got["HierarchicalSubject"] == ["People|anna", "SDL|unseen|boat"]
    assert got["TagsList"] == ["People/anna", "SDL/unseen/boat"]


@needs_exiftool
@pytest.mark.parametrize("mode", ["sidecar", "embed"])
def test_a_rerun_without_tags_removes_ours(tmp_path, mode):
    photo = save_photo(tmp_path / "photo.jpg")
    kwargs = dict(embed=True, in_place=True) if mode == "embed" else {}
    holder = write_xmp(photo, tags("dog", "*sky*"), **kwargs).target
    assert read_xmp(holder)["Subject"] == ["dog", "sky"]
    written = write_xmp(photo, [], **kwargs)  # e.g. --min-score above every tag
    if mode == "sidecar":  # nothing left in it: exiv2 writes no empty packet, so the sidecar goes
        assert not holder.exists() and written.kind == "nothing"
        return
    got = read_xmp(holder)
    assert got["Subject"] == got["HierarchicalSubject"] == got["TagsList"] == [] and got["Make"] == MAKE


@needs_exiftool
def test_other_tools_sidecar_keeps_its_other_properties(tmp_path):
    photo = save_photo(tmp_path / "photo.jpg")
    side = sidecar_path(photo)
    side.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
                    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
                    'xmlns:darktable="http://darktable.sf.net/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
                    'darktable:xmp_version="5" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>\n')
    write_xmp(photo, tags("dog"))
    text = side.read_text()
    assert 'darktable:xmp_version="5"' in text and 'xmp:Rating="4"' in text
    assert read_xmp(side)["Subject"] == ["dog"]


@needs_exiftool
def test_new_sidecar_starts_with_the_photos_own_keywords(tmp_path):
    photo = save_photo(tmp_path / "photo.jpg")
    write_keywords(photo, ["family"], [], [], "-IPTC:Keywords=holiday")
    write_xmp(photo, tags("dog"))
    assert read_xmp(sidecar_path(photo))["Subject"] == ["family", "holiday", "dog"]


@needs_exiftool
def test_non_ascii_and_odd_characters_are_written_exactly(tmp_path):
    photo = save_photo(tmp_path / "été 日本.jpg")
    odd = ["café", "日本語", 'a<b>&"c\'', "x|y/z", "👩\u200d💻 coder", "type=\"bag\" x", "lang=\"x-default\" y"]
    write_xmp(photo, tags(*odd), embed=True, in_place=True)
    write_xmp(photo, tags(*odd))
    expected = ["café", "日本語", 'a<b>&"c\'', "x-y-z", "👩\u200d💻 coder", *odd[-2:]]
    for holder in (photo, sidecar_path(photo)):
        got = read_xmp(holder)
        assert got["Subject"] == expected
        assert got["HierarchicalSubject"] == [f"SDL|seen|{w}" for w in expected]


# -- bad input ---------------------------------------------------------------------------------------
@needs_exiftool
def test_formats_without_xmp_get_a_sidecar_and_a_note(tmp_path):
    for ext in ("gif", "bmp"):
        photo = tmp_path / f"photo.{ext}"
        make_photo(32, 32).save(photo)
        before = digest(photo)
        written = write_xmp(photo, tags("dog"), embed=True, in_place=True)
        assert written.kind == "sidecar" and written.target == tmp_path / f"photo.{ext}.xmp"
        assert f"exiv2 cannot embed XMP in {ext.upper()} files" in written.notes[0] and digest(photo) == before
        assert read_xmp(written.target)["Subject"] == ["dog"]
        copy = write_xmp(photo, tags("dog"), embed=True)  # the unchanged copy gets the sidecar
        assert copy.target == tmp_path.with_name(tmp_path.name + "-tagged") / f"photo.{ext}.xmp"
        assert digest(copy.target.with_suffix("")) == before


def test_malformed_xmp_is_left_intact_and_reported(tmp_path):
    photo = with_broken_xmp(save_photo(tmp_path / "photo.jpg"))
    before = digest(photo)
    for kwargs in (dict(embed=True, in_place=True), dict(embed=True)):
        with pytest.raises(XmpError, match="photo.jpg: its XMP is malformed.*left as it is"):
            write_xmp(photo, tags("dog"), **kwargs)
    assert digest(photo) == before and not (tmp_path.parent / (tmp_path.name + "-tagged") / "photo.jpg").exists()
    written = write_xmp(photo, tags("dog"))  # a sidecar is written; the note says the photo's keywords are missing
    assert "malformed" in written.notes[0] and digest(photo) == before
    side = written.target
    side.write_text(side.read_text().replace("</rdf:RDF>", ""))  # now the sidecar is broken too
    broken = side.read_bytes()
    with pytest.raises(XmpError, match="photo.jpg.xmp: its XMP is malformed"):
        write_xmp(photo, tags("cat"))
    assert side.read_bytes() == broken
    side.write_bytes(b"\x00not xmp at all")
    with pytest.raises(XmpError, match="photo.jpg.xmp: cannot read its metadata.*left as it is"):
        write_xmp(photo, tags("cat"))
    assert side.read_bytes() == b"\x00not xmp at all"


def test_read_only_folder_and_photo_are_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    photo = save_photo(folder / "photo.jpg")
    before = digest(photo)
    folder.chmod(0o555)
    try:
        with pytest.raises(XmpError, match="photo.jpg.xmp: the folder .*ro is read-only"):
            write_xmp(photo, tags("dog"))
        with pytest.raises(XmpError, match="read-only"):
            write_xmp(photo, tags("dog"), embed=True, in_place=True)
        assert os.listdir(folder) == ["photo.jpg"] and digest(photo) == before
    finally:
        folder.chmod(0o755)
    photo.chmod(0o444)
    with pytest.raises(XmpError, match="photo.jpg is read-only; left as it is"):
        write_xmp(photo, tags("dog"), embed=True, in_place=True)
    assert digest(photo) == before


def test_a_failed_write_leaves_no_half_written_file(tmp_path, monkeypatch):
    photo = save_photo(tmp_path / "photo.jpg")
    write_xmp(photo, tags("dog"))
    side, before = sidecar_path(photo), {p.name: digest(p) for p in tmp_path.iterdir()}

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "replace", disk_full)
    for kwargs in ({}, dict(embed=True, in_place=True)):
        with pytest.raises(StorageError, match="disk is full"):
            write_xmp(photo, tags("cat"), **kwargs)
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before and side.exists()


def test_misuse_is_a_clear_error(tmp_path):
    photo = save_photo(tmp_path / "photo.jpg")
    with pytest.raises(XmpError, match="needs embed"):
        write_xmp(photo, tags("dog"), in_place=True)
    with pytest.raises(XmpError, match="no such photo"):
        write_xmp(tmp_path / "missing.jpg", tags("dog"))
    with pytest.raises(XmpError, match="would replace the photo"):
        write_xmp(photo, tags("dog"), embed=True, target=photo)


@needs_exiftool
def test_in_place_through_a_link_writes_the_photo_and_keeps_the_link(tmp_path):
    photo = save_photo(tmp_path / "photo.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    assert write_xmp(link, tags("dog"), embed=True, in_place=True).target == photo
    assert link.is_symlink() and read_xmp(photo)["Subject"] == ["dog"]

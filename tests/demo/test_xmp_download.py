"""The XMP sidecar download, fetched through gradio_client and read back with ExifTool."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import handle_file

from demo.render import safe_file_name
from tests.core.test_xmp import save_photo
from tests.exiftool import needs_exiftool, read_xmp, write_keywords


@pytest.fixture(scope="module")
def toy(toy_server, toy_checkpoint):
    toy_server.app_default = str(toy_checkpoint.resolve())
    return toy_server


@needs_exiftool
def test_the_sidecar_download_holds_the_tags_and_the_photos_own_keywords(toy, tmp_path):
    photo = save_photo(tmp_path / "Mon été.jpg")
    write_keywords(photo, ["family"], ["People|anna"], [])
    result = toy.client.predict(handle_file(str(photo)), "boat, red car", False, 4, toy.app_default,
                                api_name="/tag")
    json_path, sidecar = Path(result[1]), Path(result[-1])
    assert sidecar.name == "Mon_t.jpg.xmp"  # the name digiKam and darktable look for beside Mon_t.jpg
    tags = json.loads(json_path.read_text())["tags"]
    got = read_xmp(sidecar)
    assert got["Subject"] == ["family"] + [t["tag"] for t in tags]
    assert got["HierarchicalSubject"] == ["People|anna"] + [f"SDL|{'seen' if t['seen'] else 'unseen'}|{t['tag']}"
                                                            for t in tags]
    assert got["TagsList"] == [f"SDL/{'seen' if t['seen'] else 'unseen'}/{t['tag']}" for t in tags]


def test_safe_file_name_keeps_a_clean_extension():
    assert safe_file_name("Mon été.JPG") == "Mon_t.JPG"
    assert safe_file_name("../../etc/passwd") == "passwd"
    assert safe_file_name("a.j<p>g") == "a.jpg" and safe_file_name(None) == "photo"

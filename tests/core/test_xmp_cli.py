"""The real command: ``python -m sdl_core tag FOLDER --write-xmp ...``, read back with ExifTool."""
from __future__ import annotations

import json

import pytest

from sdl_core.checkpoint import save_checkpoint
from tests.conftest import make_photo, make_sdl_model, make_vocab
from tests.core.test_cli import run_cli
from tests.core.test_xmp import MAKE, digest, save_photo
from tests.exiftool import needs_exiftool, read_xmp

pytestmark = needs_exiftool


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xmp-cli")
    return save_checkpoint(make_sdl_model(), make_vocab(), folder / "toy.safetensors")


def photos(root, exts=("jpg", "png", "tif", "webp")):
    """root/a.jpg, root/sub/b.png, ... (one per format, half in a subfolder)."""
    paths = []
    for i, ext in enumerate(exts):
        folder = root / "sub" if i % 2 else root
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(save_photo(folder / f"{'abcd'[i]}.{ext}", seed=i))
    return paths


def test_folder_sidecars_match_the_tags_and_a_rerun_replaces_them(tmp_path, toy):
    root = tmp_path / "photos"
    files = photos(root)
    before = {p: digest(p) for p in files}
    out = run_cli("tag", root, "--model", toy, "--write-xmp", "--top-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    assert sorted(r["image"] for r in results) == sorted(str(p) for p in files)
    for r in results:
        got = read_xmp(r["xmp"]["target"])
        assert r["xmp"]["target"] == r["image"] + ".xmp" and r["xmp"]["kind"] == "sidecar"
        assert got["Subject"] == [t["tag"] for t in r["tags"]] and len(got["Subject"]) == 3
        assert got["HierarchicalSubject"] == [f"SDL|{'seen' if t['seen'] else 'unseen'}|{t['tag']}"
                                              for t in r["tags"]]
    assert {p: digest(p) for p in files} == before  # the photos are not touched
    # a re-run with a score threshold replaces our keywords, and only those
    scores = sorted(t["score"] for r in results for t in r["tags"])
    cut = scores[len(scores) // 2]
    out = run_cli("tag", root, "--model", toy, "--write-xmp", "--min-score", cut, "--json")
    assert out.returncode == 0, out.stderr
    for r in json.loads(out.stdout)["results"]:
        assert all(t["score"] >= cut for t in r["tags"])
        subject = read_xmp(r["image"] + ".xmp")["Subject"] if r["tags"] else []
        assert subject == [t["tag"] for t in r["tags"]]


def test_embed_copies_and_in_place_keep_exif(tmp_path, toy):
    root = tmp_path / "photos"
    files = photos(root, ("jpg", "png"))
    before = {p: digest(p) for p in files}
    out = run_cli("tag", root, "--model", toy, "--write-xmp", "--embed", "--top-k", "2")
    assert out.returncode == 0, out.stderr
    copies = [tmp_path / "photos-tagged" / p.relative_to(root) for p in files]
    for copy in copies:
        got = read_xmp(copy)
        assert len(got["Subject"]) == 2 and got["Make"] == MAKE
        assert f"{copy}: " in out.stdout
    assert {p: digest(p) for p in files} == before
    out = run_cli("tag", files[0], "--model", toy, "--write-xmp", "--embed", "--in-place", "--top-k", "1")
    assert out.returncode == 0, out.stderr
    got = read_xmp(files[0])
    assert len(got["Subject"]) == 1 and got["Make"] == MAKE and digest(files[0]) != before[files[0]]


def test_bad_input_is_one_line_and_the_rest_goes_on(tmp_path, toy):
    root = tmp_path / "photos"
    root.mkdir()
    jpg, png = save_photo(root / "same.jpg"), save_photo(root / "same.png")
    make_photo(32, 32).save(root / "anim.gif")
    out = run_cli("tag", root, "--model", toy, "--write-xmp", "--sidecar-name", "replace", "--embed", "--in-place")
    assert out.returncode == 0, out.stderr
    assert "note: anim.gif: exiv2 cannot embed XMP in GIF files; wrote a sidecar instead" in out.stderr
    assert (root / "anim.xmp").exists() and read_xmp(jpg)["Subject"] and read_xmp(png)["Subject"]
    out = run_cli("tag", jpg, png, "--model", toy, "--write-xmp", "--sidecar-name", "replace")
    assert out.returncode == 1 and "same.xmp is also the sidecar of same.jpg" in out.stderr
    assert "Traceback" not in out.stderr
    root.chmod(0o555)
    try:
        out = run_cli("tag", jpg, "--model", toy, "--write-xmp")
    finally:
        root.chmod(0o755)
    assert out.returncode == 1 and out.stderr.strip() == f"error: cannot write same.jpg.xmp: the folder {root} " \
                                                          "is read-only"
    for args, message in ((["--in-place"], "needs --embed"), (["--embed", "--in-place", "--copy-to", tmp_path],
                                                              "--copy-to"), (["--xmp-root", "a|b"], "root")):
        out = run_cli("tag", jpg, "--model", toy, "--write-xmp", *args)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_cli("tag", empty, "--model", toy)
    assert out.returncode == 2 and "no photos in this folder" in out.stderr

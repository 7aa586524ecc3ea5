"""Bad and unusual images: each one is tagged, or refused with its own message.

The corpus is generated here (no binaries in the repository). Every case states its
expected outcome: ``refused`` is a regex the :class:`ImageError` message must match,
``None`` means the image must be tagged (``check`` then looks at the loaded RGB
pixels). The same corpus runs through ``load_image``, ``Tagger.tag`` and the CLI.
"""
from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image, features

from sdl_core.checkpoint import save_checkpoint
from sdl_core.errors import ImageError
from sdl_core.images import ALLOWED_FORMATS, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MAX_WORKING_SIDE, load_image
from sdl_core.tagger import Tagger
from tests.conftest import ROOT, make_sdl_model, make_vocab

RED, GREEN, BLUE, WHITE = (220, 20, 20), (20, 200, 40), (30, 40, 210), (255, 255, 255)
UNSUPPORTED = r"unsupported format"
NOT_IMAGE = r"not an image, or an unsupported format"
TRUNCATED = r"corrupt or truncated|[Tt]runcated"


# --- generators ---------------------------------------------------------------------
def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    bio = io.BytesIO()
    img.save(bio, fmt, **kw)
    return bio.getvalue()


def pattern(width: int = 64, height: int = 48) -> Image.Image:
    """An asymmetric smooth picture: red grows to the right, green downwards."""
    arr = np.empty((height, width, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, width).astype(np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, height).astype(np.uint8)[:, None]
    arr[..., 2] = 60
    return Image.fromarray(arr, "RGB")


def solid(color, size=(40, 30), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(solid(RED, (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    at = data.index(b"\x2c")  # image descriptor: its size too
    data[at + 5:at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(solid(RED, (8, 8)), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_bad_crc() -> bytes:
    data = bytearray(encode(pattern(), "PNG"))
    at = data.index(b"IDAT") + 20
    data[at] ^= 0xFF
    return bytes(data)


def jpeg_bad_exif() -> bytes:
    """A JPEG whose APP1 Exif segment is garbage: the image itself is fine."""
    jpeg = encode(solid(RED), "JPEG", quality=95)
    body = b"Exif\x00\x00" + b"II*\x00\xff\xff\xff\x7f" + bytes(range(200, 216))
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def palette_with_transparency() -> bytes:
    img = Image.new("P", (20, 10), 0)
    img.putpalette([*RED, *BLUE] + [0] * 762)
    img.paste(1, (10, 0, 20, 10))
    return encode(img, "PNG", transparency=1)  # right half (index 1) transparent


def alpha_image(mode: str) -> bytes:
    color = (90, 160) if mode == "LA" else (*BLUE, 255)  # LA: 90 at 160/255 opacity on white = 151
    clear = (90, 0) if mode == "LA" else (*BLUE, 0)
    img = Image.new(mode, (20, 10), color)
    img.paste(Image.new(mode, (10, 10), clear), (10, 0))
    return encode(img, "PNG")


def gray16() -> bytes:
    arr = np.linspace(0, 65535, 64)[None, :].repeat(32, 0).astype(np.uint16)
    return encode(Image.fromarray(arr), "PNG")


def animation(fmt: str) -> bytes:
    frames = [solid(c) for c in (RED, GREEN, BLUE)]
    kw = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kw)


def gif_transparent() -> bytes:
    img = Image.new("P", (20, 10), 0)
    img.putpalette([*RED, *BLUE] + [0] * 762)
    img.paste(1, (10, 0, 20, 10))
    return encode(img, "GIF", transparency=0)  # left half (index 0) transparent


def tiff_pages() -> bytes:
    return encode(solid(GREEN), "TIFF", save_all=True, append_images=[solid(RED), solid(BLUE)])


def float_tiff() -> bytes:
    return encode(Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32)[None, :].repeat(32, 0)), "TIFF")


#: EXIF orientation -> how the camera stored the upright picture (numpy, independent of Pillow).
STORED = {
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}


def exif_rotated(orientation: int) -> bytes:
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](np.asarray(pattern()))))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif)


def huge_jpeg() -> bytes:
    return encode(pattern(6000, 6000), "JPEG", quality=80)


def huge_png() -> bytes:
    return encode(pattern(6000, 4000), "PNG", compress_level=1)


# --- pixel checks -------------------------------------------------------------------
def mean_color(img: Image.Image, box=None) -> np.ndarray:
    return np.asarray(img.crop(box) if box else img, dtype=np.float64).reshape(-1, 3).mean(0)


def is_color(color, tol: float = 12.0, box=None) -> Callable[[Image.Image], None]:
    def check(img: Image.Image) -> None:
        got = mean_color(img, box)
        assert np.abs(got - np.array(color)).max() <= tol, f"mean colour {got.round(1)} != {color}"
    return check


def left_right(left, right) -> Callable[[Image.Image], None]:
    def check(img: Image.Image) -> None:
        w, h = img.size
        is_color(left, box=(0, 0, w // 2 - 1, h))(img)
        is_color(right, box=(w // 2 + 1, 0, w, h))(img)
    return check


def upright(img: Image.Image) -> None:
    ref = np.asarray(pattern(), dtype=np.float64)
    assert img.size == pattern().size, f"not rotated upright: size {img.size}"
    assert np.abs(np.asarray(img, dtype=np.float64) - ref).mean() < 4.0


def gradient_16(img: Image.Image) -> None:
    arr = np.asarray(img, dtype=np.float64)
    assert arr[:, 0].mean() < 10 and arr[:, -1].mean() > 245, "16-bit range not mapped to 0..255"
    assert np.all(np.diff(arr[0, :, 0]) >= 0), "gradient lost"


def size_is(size) -> Callable[[Image.Image], None]:
    def check(img: Image.Image) -> None:
        assert img.size == size
    return check


def downscaled(img: Image.Image) -> None:
    assert max(img.size) == MAX_WORKING_SIDE, img.size
    is_color((127, 127, 60), tol=8)(img)


# --- the corpus ---------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    suffix: str
    make: Callable[[], bytes] | None  # None: written specially (see write_case)
    refused: str | None = None  # regex of the message; None = must be tagged
    check: Callable[[Image.Image], None] | None = None


AVIF_OK = features.check("avif")
TEXT = b"name,colour\ncat,black\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9" height="9"/></svg>'
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
RANDOM = np.random.default_rng(7).bytes(4096)
_JPEG = encode(pattern(), "JPEG", quality=90)
_PNG = encode(pattern(), "PNG")

CASES: list[Case] = [
    # refused, each with its own message
    Case("zero_byte", ".jpg", lambda: b"", r"file is empty"),
    Case("random_bytes", ".jpg", lambda: RANDOM, NOT_IMAGE),
    Case("random_bytes_png", ".png", lambda: b"\x00" + RANDOM, NOT_IMAGE),
    Case("text_named_jpg", ".jpg", lambda: TEXT, NOT_IMAGE),
    Case("html_named_png", ".png", lambda: b"<html><script>alert(1)</script></html>", NOT_IMAGE),
    Case("truncated_jpeg", ".jpg", lambda: _JPEG[: len(_JPEG) // 2], TRUNCATED),
    Case("truncated_jpeg_header", ".jpg", lambda: _JPEG[:40], r"cannot read image|" + NOT_IMAGE),
    Case("truncated_png", ".png", lambda: _PNG[: len(_PNG) // 2], TRUNCATED),
    Case("truncated_png_header", ".png", lambda: _PNG[:30], NOT_IMAGE),
    Case("png_bad_crc", ".png", png_bad_crc, r"corrupt|broken|CRC"),
    Case("png_zero_width", ".png", lambda: png_declaring(0, 10), r"cannot read image|no pixels|" + NOT_IMAGE),
    Case("bomb_png_30000x30000", ".png", lambda: png_declaring(30000, 30000), r"too many pixels|above the limit"),
    Case("bomb_png_9000x9000", ".png", lambda: png_declaring(9000, 9000), r"9000x9000 is above the limit"),
    Case("bomb_gif_65535x65535", ".gif", lambda: gif_declaring(65535, 65535), r"too many pixels|above the limit"),
    Case("bomb_jpeg_60000x60000", ".jpg", lambda: jpeg_declaring(60000, 60000), r"too many pixels|above the limit"),
    Case("heic", ".heic", lambda: HEIC, r"unsupported format HEIC"),
    Case("svg", ".svg", lambda: SVG, r"unsupported format SVG"),
    Case("svg_with_prolog", ".svg", lambda: b'<?xml version="1.0"?>\n' + SVG, r"unsupported format SVG"),
    Case("pdf", ".pdf", lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", r"unsupported format PDF"),
    # EPS would make Pillow run Ghostscript: refused before any decoder runs
    Case("eps", ".eps", lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\nshowpage\n",
         r"unsupported format PostScript/EPS"),
    Case("too_big_file", ".jpg", None, r"above the 50 MiB limit"),
    # tagged
    Case("plain_jpeg", ".jpg", lambda: _JPEG, check=upright),
    Case("plain_png", ".png", lambda: _PNG, check=upright),
    Case("one_by_one", ".png", lambda: encode(solid(RED, (1, 1)), "PNG"), check=size_is((1, 1))),
    Case("tall_3x20000", ".png", lambda: encode(solid(GREEN, (3, 20000)), "PNG"), check=is_color(GREEN, 1)),
    Case("wide_20000x3", ".png", lambda: encode(solid(BLUE, (20000, 3)), "PNG"), check=is_color(BLUE, 1)),
    Case("cmyk_jpeg", ".jpg", lambda: encode(solid((0, 255, 255, 0), mode="CMYK"), "JPEG"), check=is_color((255, 0, 0))),
    Case("gray_jpeg", ".jpg", lambda: encode(solid(128, mode="L"), "JPEG"), check=is_color((128, 128, 128), 2)),
    Case("progressive_jpeg", ".jpg", lambda: encode(pattern(), "JPEG", quality=95, progressive=True), check=upright),
    Case("jpeg_corrupt_exif", ".jpg", jpeg_bad_exif, check=is_color(RED)),
    Case("png_16bit_gray", ".png", gray16, check=gradient_16),
    Case("png_1bit", ".png", lambda: encode(solid(1, mode="1"), "PNG"), check=is_color(WHITE, 0)),
    Case("png_palette_transparency", ".png", palette_with_transparency, check=left_right(RED, WHITE)),
    Case("png_la", ".png", lambda: alpha_image("LA"), check=left_right((151, 151, 151), WHITE)),
    Case("png_rgba", ".png", lambda: alpha_image("RGBA"), check=left_right(BLUE, WHITE)),
    Case("gif_animated", ".gif", lambda: animation("GIF"), check=is_color(RED, 16)),
    Case("gif_transparent", ".gif", gif_transparent, check=left_right(WHITE, BLUE)),
    Case("webp_animated", ".webp", lambda: animation("WEBP"), check=is_color(RED, 2)),
    Case("webp_rgba", ".webp", lambda: encode(Image.open(io.BytesIO(alpha_image("RGBA"))), "WEBP", lossless=True),
         check=left_right(BLUE, WHITE)),
    Case("tiff_multipage", ".tif", tiff_pages, check=is_color(GREEN, 1)),
    Case("tiff_float32", ".tif", float_tiff, check=gradient_16),
    Case("bmp", ".bmp", lambda: encode(solid(BLUE), "BMP"), check=is_color(BLUE, 0)),
    Case("bmp_palette", ".bmp", lambda: encode(solid(GREEN).convert("P"), "BMP"), check=is_color(GREEN, 16)),
    Case("ico", ".ico", lambda: encode(solid(RED, (32, 32)), "ICO"), check=is_color(RED, 0)),
    Case("ppm", ".ppm", lambda: encode(pattern(), "PPM"), check=upright),
    Case("tga", ".tga", lambda: encode(pattern(), "TGA"), check=upright),
    Case("avif", ".avif", lambda: encode(pattern(), "AVIF", quality=90),
         None if AVIF_OK else NOT_IMAGE, upright if AVIF_OK else None),
    *[Case(f"exif_orientation_{o}", ".jpg", lambda o=o: exif_rotated(o), check=upright) for o in STORED],
    Case("huge_jpeg_6000x6000", ".jpg", huge_jpeg, check=downscaled),
    Case("huge_png_6000x4000", ".png", huge_png, check=downscaled),
]
REFUSED = [c for c in CASES if c.refused]
TAGGED = [c for c in CASES if not c.refused]


def write_case(case: Case, folder: Path) -> Path:
    path = folder / f"{case.name}{case.suffix}"
    if case.make is None:  # one byte over the limit, sparse: costs no disk
        with open(path, "wb") as fh:
            fh.truncate(MAX_IMAGE_BYTES + 1)
    else:
        path.write_bytes(case.make())
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_images")
    return {case.name: write_case(case, folder) for case in CASES}


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger(make_sdl_model(), make_vocab())


def test_corpus_is_large_and_mixed():
    assert len(CASES) >= 40
    assert len(REFUSED) >= 15 and len(TAGGED) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


# --- load_image ---------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_load_image(case: Case, corpus):
    path = corpus[case.name]
    if case.refused:
        with pytest.raises(ImageError, match=case.refused) as info:
            load_image(path)
        assert path.name in str(info.value), "the message names the file"
        return
    img = load_image(path)
    assert img.mode == "RGB" and min(img.size) >= 1 and max(img.size) <= MAX_WORKING_SIDE
    if case.check:
        case.check(img)


@pytest.mark.parametrize("case", [c for c in CASES if c.make is not None], ids=lambda c: c.name)
def test_load_image_from_bytes_agrees(case: Case, corpus):
    """Uploads arrive as bytes: same outcome as from a file."""
    data = corpus[case.name].read_bytes()
    if case.refused:
        with pytest.raises(ImageError, match=case.refused):
            load_image(data)
    elif case.check:
        case.check(load_image(data))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "dir.jpg")


def test_bomb_refused_even_if_pillow_limit_disabled(monkeypatch):
    """Our own pixel limit holds when another library switches Pillow's off."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageError, match="above the limit"):
        load_image(png_declaring(30000, 30000))
    with pytest.raises(ImageError, match="above the limit"):
        load_image(png_declaring(8001, 8000))
    assert 8000 * 8000 == MAX_IMAGE_PIXELS  # the last accepted square


def test_only_allowed_decoders_run():
    """EPS, PDF and other parsers never see upload bytes."""
    assert "EPS" not in ALLOWED_FORMATS and "PDF" not in ALLOWED_FORMATS
    Image.init()
    assert set(ALLOWED_FORMATS) <= set(Image.OPEN) | {"AVIF"}


MEMORY_PROBE = textwrap.dedent("""
    import json, sys, time, types
    # Load sdl_core.images without the package __init__ (which pulls in timm): a
    # small, quiet process whose peak memory is easy to read.
    pkg = types.ModuleType("sdl_core")
    pkg.__path__ = [sys.argv[1]]
    sys.modules["sdl_core"] = pkg
    from sdl_core.images import load_image
    from sdl_core.errors import ImageError

    def status_mb(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    load_image(sys.argv[2])  # warm up the decoders
    out = {}
    for key, path in zip(("bomb", "jpeg", "png"), sys.argv[3:]):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak (VmHWM) to the current RSS
        before = status_mb("VmRSS")
        start = time.perf_counter()
        try:
            img = load_image(path)
            out[key + "_size"] = list(img.size)
            del img
        except ImageError as exc:
            out[key + "_error"] = str(exc)
        out[key + "_s"] = round(time.perf_counter() - start, 4)
        out[key + "_peak_mb"] = round(status_mb("VmHWM") - before, 1)
    print(json.dumps(out))
""")


def test_bomb_refused_fast_and_huge_images_bounded(corpus):
    """In a fresh process: the bomb is refused in milliseconds without growing memory;
    a huge valid JPEG decodes at reduced scale; a huge PNG is decoded once and downscaled
    without a second full-size copy."""
    args = [corpus[n] for n in ("plain_png", "bomb_png_30000x30000", "huge_jpeg_6000x6000", "huge_png_6000x4000")]
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(ROOT / "sdl_core"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    print("memory probe (peak RSS growth MB, seconds):", m)
    assert "too many pixels" in m["bomb_error"] and m["bomb_s"] < 0.5
    assert m["bomb_peak_mb"] < 10, "the bomb was decoded"  # 30000x30000 would need >= 900 MB
    assert m["jpeg_size"] == [MAX_WORKING_SIDE, MAX_WORKING_SIDE]
    full_jpeg_mb = 6000 * 6000 * 4 / 2**20  # Pillow keeps RGB as 4 bytes a pixel
    assert m["jpeg_peak_mb"] < 0.7 * full_jpeg_mb, "the huge JPEG was decoded at full size"
    assert m["png_size"] == [MAX_WORKING_SIDE, round(MAX_WORKING_SIDE * 4000 / 6000)]
    full_copy_mb = 6000 * 4000 * 4 / 2**20  # Pillow keeps RGB as 4 bytes a pixel
    assert m["png_peak_mb"] < 1.6 * full_copy_mb, "more than one full-size copy of the huge PNG"


# --- Tagger.tag -----------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_tagger_tag(case: Case, corpus, tagger):
    path = corpus[case.name]
    if case.refused:
        with pytest.raises(ImageError, match=case.refused):
            tagger.tag(path, top_k=3)
        return
    result = tagger.tag(path, top_k=3)
    assert len(result) == 3 and result.image == str(path)
    assert all(np.isfinite(t.score) for t in result)


def test_exif_rotation_reaches_the_model(tagger):
    """The model sees the upright picture: its principal vectors match the upright
    image's, not those of the pixels as stored."""
    up = tagger.encode([pattern()]).vectors
    for orientation in (3, 6, 8):
        data = exif_rotated(orientation)
        loaded = tagger.encode([load_image(data)]).vectors
        raw = tagger.encode([Image.open(io.BytesIO(data)).convert("RGB")]).vectors
        assert (loaded - up).abs().max() < 0.2 * (raw - up).abs().max(), orientation


def test_tag_files_keeps_going(corpus, tagger):
    names = ["plain_jpeg", "zero_byte", "cmyk_jpeg", "bomb_png_30000x30000", "gif_animated"]
    out = dict(tagger.tag_files([corpus[n] for n in names], top_k=2, batch_size=2))
    errors = {Path(p).stem for p, r in out.items() if isinstance(r, ImageError)}
    assert errors == {"zero_byte", "bomb_png_30000x30000"}
    assert len(out) == len(names)


# --- the CLI ------------------------------------------------------------------------
def test_cli_tags_good_and_reports_bad(corpus, tmp_path):
    """`python -m sdl_core tag --json` over the whole corpus: exit 1, each bad file in
    "errors" with its message, every other file tagged, no traceback."""
    ckpt = save_checkpoint(make_sdl_model(), make_vocab(), tmp_path / "toy.safetensors")
    files = [str(corpus[c.name]) for c in CASES]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sdl_core", "tag", *files, "--model", str(ckpt), "--json",
                           "--top-k", "3", "--batch-size", "8"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    print(f"CLI over {len(files)} files: {time.perf_counter() - start:.1f} s")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    errors = {Path(e["image"]).name: e["error"] for e in out["errors"]}
    tagged = {Path(r["image"]).name: r for r in out["results"]}
    assert set(errors) == {corpus[c.name].name for c in REFUSED}
    assert set(tagged) == {corpus[c.name].name for c in TAGGED}
    for case in REFUSED:
        assert re.search(case.refused, errors[corpus[case.name].name]), (case.name, errors[corpus[case.name].name])
    assert all(len(r["tags"]) == 3 for r in tagged.values())


def test_pil_input_is_not_modified_or_returned():
    src = pattern()
    before = np.asarray(src).copy()
    out = load_image(src)
    assert out is not src and np.array_equal(np.asarray(src), before)

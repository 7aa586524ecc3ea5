"""Fuzzing ``load_image``: 2,040 mutated files, 170 for each of the 12 allowed formats.

Each format starts from a few valid files (several modes, animation, multi-page, EXIF),
made here with Pillow. Hypothesis applies byte-level mutations (flips, "interesting"
integers written over header fields, inserted and deleted runs, truncation), half of
them in the first 64 bytes where the headers are. Every mutated file must come back as
an 8-bit RGB image within the working-size limit, or be refused with ``ImageError``:
never another exception, never a hang (the example deadline).
"""
from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from sdl_core.errors import ImageError
from sdl_core.images import ALLOWED_FORMATS, MAX_WORKING_SIDE, load_image
from tests.fuzzing import FUZZ

EXAMPLES_PER_FORMAT = 170
#: Pillow warns about the corrupt metadata of mutated files; the property is what is checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def _picture(mode: str, size: tuple[int, int] = (24, 16)) -> Image.Image:
    """A small asymmetric gradient in ``mode``."""
    width, height = size
    arr = np.zeros((height, width, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, width).astype(np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, height).astype(np.uint8)[:, None]
    arr[..., 2] = 90
    img = Image.fromarray(arr, "RGB")
    if mode == "I;16":
        return Image.fromarray((arr[..., 0].astype(np.uint16) * 257), "I;16")
    return img.convert(mode)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def _frames(fmt: str, **kw) -> bytes:
    frames = [_picture("RGB").rotate(angle) for angle in (0, 90, 180)]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)


def _with_exif(fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the loader transposes it
    return _save(_picture("RGB"), fmt, exif=exif)


SEEDS = {
    "JPEG": lambda: [_save(_picture("RGB"), "JPEG", quality=80), _save(_picture("L"), "JPEG"),
                     _save(_picture("CMYK"), "JPEG"), _save(_picture("RGB"), "JPEG", progressive=True),
                     _with_exif("JPEG")],
    "PNG": lambda: [_save(_picture("RGB"), "PNG"), _save(_picture("RGBA"), "PNG"), _save(_picture("P"), "PNG"),
                    _save(_picture("I;16"), "PNG"), _save(_picture("1"), "PNG"), _save(_picture("LA"), "PNG")],
    "GIF": lambda: [_save(_picture("P"), "GIF"), _frames("GIF", duration=50, loop=0),
                    _save(_picture("L"), "GIF", transparency=0)],
    "WEBP": lambda: [_save(_picture("RGB"), "WEBP"), _save(_picture("RGBA"), "WEBP", lossless=True),
                     _frames("WEBP", duration=50)],
    "AVIF": lambda: [_save(_picture("RGB"), "AVIF"), _save(_picture("RGBA"), "AVIF")],
    "BMP": lambda: [_save(_picture("RGB"), "BMP"), _save(_picture("P"), "BMP"), _save(_picture("1"), "BMP")],
    "DIB": lambda: [_save(_picture("RGB"), "DIB"), _save(_picture("L"), "DIB")],
    "TIFF": lambda: [_save(_picture("RGB"), "TIFF"), _save(_picture("RGB"), "TIFF", compression="tiff_lzw"),
                     _save(_picture("CMYK"), "TIFF"), _save(_picture("I;16"), "TIFF"),
                     _save(_picture("F"), "TIFF"), _frames("TIFF"), _with_exif("TIFF")],
    "ICO": lambda: [_save(_picture("RGBA", (32, 32)), "ICO"), _save(_picture("RGB", (48, 48)), "ICO",
                                                                   sizes=[(16, 16), (48, 48)])],
    "PPM": lambda: [_save(_picture("RGB"), "PPM"), _save(_picture("L"), "PPM"), _save(_picture("1"), "PPM"),
                    _save(_picture("I;16"), "PPM")],
    "TGA": lambda: [_save(_picture("RGB"), "TGA"), _save(_picture("RGBA"), "TGA", compression="tga_rle"),
                    _save(_picture("P"), "TGA"), _save(_picture("L"), "TGA")],
    "QOI": lambda: [_save(_picture("RGB"), "QOI"), _save(_picture("RGBA"), "QOI")],
}


@lru_cache(maxsize=None)
def seeds(fmt: str) -> tuple[bytes, ...]:
    return tuple(SEEDS[fmt]())


def test_every_allowed_format_has_good_seeds() -> None:
    """The seeds cover every allowed format, and each seed loads as its own format."""
    assert set(SEEDS) == set(ALLOWED_FORMATS)
    for fmt in ALLOWED_FORMATS:
        for data in seeds(fmt):
            assert Image.open(io.BytesIO(data)).format == fmt
            assert load_image(data).mode == "RGB"


_position = st.one_of(st.integers(0, 63), st.integers(0, 2**20))
_mutation = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(1, 255)),
    st.tuples(st.just("set"), _position, st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01])),
    st.tuples(st.just("int"), _position, st.sampled_from(INTERESTING), st.sampled_from([2, 4]),
              st.sampled_from(["little", "big"])),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _position, st.integers(1, 64)),
    st.tuples(st.just("repeat"), _position, st.integers(1, 256)),
    st.tuples(st.just("truncate"), _position),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    out = bytearray(data)
    for kind, position, *args in mutations:
        if not out:
            break
        at = position % len(out)
        if kind == "flip":
            out[at] ^= args[0]
        elif kind == "set":
            out[at] = args[0]
        elif kind == "int":
            value, width, order = args
            out[at:at + width] = (value % (1 << (8 * width))).to_bytes(width, order)
        elif kind == "insert":
            out[at:at] = args[0]
        elif kind == "delete":
            del out[at:at + args[0]]
        elif kind == "repeat":
            out[at:at] = out[at:at + args[0]]
        else:
            del out[at:]
    return bytes(out)


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
@settings(FUZZ, max_examples=EXAMPLES_PER_FORMAT)
@given(data=st.data())
def test_mutated_images_load_or_are_refused(fmt: str, data) -> None:
    seed = seeds(fmt)[data.draw(st.integers(0, len(seeds(fmt)) - 1), label="seed")]
    mutated = mutate(seed, data.draw(st.lists(_mutation, min_size=1, max_size=4), label="mutations"))
    try:
        img = load_image(mutated)
    except ImageError as exc:
        assert str(exc).startswith("image: "), exc  # the message names the file
        return
    assert img.mode == "RGB" and 1 <= min(img.size) and max(img.size) <= MAX_WORKING_SIDE
